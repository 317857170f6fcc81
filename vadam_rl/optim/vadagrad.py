"""VadaGrad: AdaGrad whose gradients are taken at weights drawn from a Gaussian posterior.

Khan et al., ICML 2018 (https://arxiv.org/abs/1806.04854), Section 5's RL experiment; the
reference is method ``vadagrad`` of https://github.com/emtiyaz/vadam,
``tensorflow_RL/ActorNetworkEpsilon.py`` (``vadagrad_update_prec`` / ``vadagrad_update_mean``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from vadam_rl.optim.gaussian import (
    Closure,
    DiagonalGaussianOptimizer,
    check_num_samples,
    check_range,
)
from vadam_rl.rng import Generators

__all__ = ["VadaGrad"]


class VadaGrad(DiagonalGaussianOptimizer):
    r"""Variational AdaGrad: the precision accumulates squared gradients and never decays.

    The reference RL code, with G the gradient of the *summed* loss at theta:

    .. code-block:: text

        prec = prec + (1-gamma_2) * G^2;   mu = mu - lr * G / sqrt(prec);   sigma = 1/sqrt(prec)

    (the precision is updated first; its initial value 1e4, lr 0.01, gamma_2 0.99). Written
    for the minibatch-*mean* loss g with N = ``train_set_size`` and s = prec/N (the same
    convention as ``Vadam``: precision = N*s), one ``step(closure)`` does

    .. code-block:: text

        sigma = 1/sqrt(N*s);  theta = mu + sigma * eps;  g = gradient at theta
        s     = s + (1-beta) * g*g            (s starts at init_precision / N)
        mu    = mu - lr * g / sqrt(s)

    which is the reference exactly when N = B^2 for its batch of B examples (G = B*g, so
    prec = B^2 s and G/sqrt(prec) = g/sqrt(s)): for the paper's DDPG, N = 4096, lr = 0.01,
    beta = 0.99, init_precision = 1e4. No prior and no precision floor, as in the reference.
    With ``num_samples`` > 1, g and g*g are averaged over the draws.

    Args:
        params: parameters or param-group dicts (per-group ``lr``, ``beta``,
            ``train_set_size``, ``init_precision``).
        train_set_size: N > 0. lr: >= 0. beta: gamma_2 in [0, 1).
        init_precision: initial precision N*s > 0. num_samples: MC draws per step, >= 1.
        generator: source of the noise (on the parameters' device); None: global RNG.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        train_set_size: float,
        lr: float = 0.01,
        beta: float = 0.99,
        init_precision: float = 1e4,
        num_samples: int = 1,
        *,
        generator: Generators = None,
    ) -> None:
        self.num_samples = check_num_samples(num_samples)
        defaults = dict(
            lr=lr, beta=beta, train_set_size=train_set_size, init_precision=init_precision
        )
        super().__init__(params, defaults, generator=generator)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_range("learning rate lr", group["lr"], 0.0)
        check_range("beta", group["beta"], 0.0, 1.0)
        check_range("train_set_size", group["train_set_size"], 0.0, low_open=True)
        check_range("init_precision", group["init_precision"], 0.0, low_open=True)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0
        s0 = group["init_precision"] / group["train_set_size"]
        state["grad_sq_sum"] = torch.full_like(p, s0, memory_format=torch.preserve_format)

    def _group_std(self, group: dict[str, Any], params: list[Tensor]) -> tuple[list[Tensor], float]:
        # sigma = 1/sqrt(N*s) = (1/sqrt(N)) * (1/sqrt(s))
        stds = torch._foreach_rsqrt([self.state[p]["grad_sq_sum"] for p in params])
        return stds, group["train_set_size"] ** -0.5

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """Draw theta, evaluate ``closure`` there, restore mu, update; returns the loss."""
        loss, per_group = self._gradients_at_samples(closure, self.num_samples)
        for group, found in zip(self.param_groups, per_group, strict=True):
            if not found.params:
                continue
            states = [self.state[p] for p in found.params]
            for state in states:
                state["step"] += 1
            sums = [state["grad_sq_sum"] for state in states]
            if found.grad_sqs is None:
                torch._foreach_addcmul_(sums, found.grads, found.grads, 1 - group["beta"])
            else:
                torch._foreach_add_(sums, found.grad_sqs, alpha=1 - group["beta"])
            denom = torch._foreach_sqrt(sums)
            torch._foreach_addcdiv_(found.params, found.grads, denom, value=-group["lr"])
        return loss
