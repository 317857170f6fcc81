"""AdamExplore: learned Gaussian weight noise, mean and precision both trained by Adam.

The Vadam paper's "Adam-Explore" baseline (Khan et al., ICML 2018, Section 5,
https://arxiv.org/abs/1806.04854), method ``noise+adam`` of the reference RL code
https://github.com/emtiyaz/vadam, ``tensorflow_RL/ActorNetworkEpsilon.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from vadam_rl.optim.gaussian import (
    Closure,
    DiagonalGaussianOptimizer,
    check_range,
    require_closure,
)
from vadam_rl.optim.vadam import _multi_tensor_vadam
from vadam_rl.rng import Generators

__all__ = ["AdamExplore"]


class AdamExplore(DiagonalGaussianOptimizer):
    r"""Weights theta = mu + eps / sqrt(prec); Adam on mu and, separately, on prec.

    The precision ``prec`` is an ordinary trained variable (one per weight, starting at
    ``init_precision``); both it and mu follow the reparameterisation gradient of the loss at
    the noisy weights, each with its own Adam (same betas and eps, learning rates ``lr`` and
    ``sigma_lr``). Unlike Vadam there is no prior, no entropy term and no natural gradient:
    the loss alone decides whether the noise grows or shrinks. Per weight:

    .. code-block:: text

        sigma = 1/sqrt(prec);  eps ~ N(0, I);  theta = mu + sigma * eps
        g      = gradient at theta of the loss                    (d loss / d mu)
        g_prec = g * eps * (-1/2) * prec^(-3/2)                   (d loss / d prec)
        mu     = Adam(lr)(mu, g);   prec = Adam(sigma_lr)(prec, g_prec)

    Reference defaults (the paper's Table 3): lr 1e-4, sigma_lr 0.01, init_precision 1e4, TF
    Adam's betas (0.9, 0.999) and eps 1e-8. The reference sums the actor loss over its batch
    of B = 64; Adam is blind to the gradient's scale except through eps, so with our
    minibatch-*mean* loss the exact equivalent is ``eps = 1e-8 / B`` and
    ``eps_before_bias_correction=True`` (TensorFlow adds its "epsilon hat" to sqrt(v) before
    the bias correction; torch's Adam, our default, after it).

    Deviations from the reference, on purpose: both gradients come from one evaluation of the
    closure at theta; the reference's two ``sess.run`` calls recompute the mean's gradient
    after the precision has moved (by about ``sigma_lr`` out of 1e4, a relative change of
    sigma near 5e-7). As in the reference nothing keeps ``prec`` positive; at these learning
    rates it cannot get there in any realistic number of steps.

    Args:
        params: parameters or param-group dicts (per-group ``lr``, ``sigma_lr``, ``betas``,
            ``eps``, ``init_precision``).
        lr: learning rate of the mean, >= 0. sigma_lr: learning rate of the precision, >= 0.
        betas: (b1, b2) in [0, 1). eps: Adam's eps, >= 0. init_precision: > 0.
        eps_before_bias_correction: TensorFlow's placement of eps (see above).
        generator: source of the noise (on the parameters' device); None: global RNG.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        sigma_lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        init_precision: float = 1e4,
        *,
        eps_before_bias_correction: bool = False,
        generator: Generators = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            sigma_lr=sigma_lr,
            betas=betas,
            eps=eps,
            init_precision=init_precision,
            eps_before_bias_correction=eps_before_bias_correction,
        )
        super().__init__(params, defaults, generator=generator)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_range("learning rate lr", group["lr"], 0.0)
        check_range("sigma_lr", group["sigma_lr"], 0.0)
        check_range("betas[0]", group["betas"][0], 0.0, 1.0)
        check_range("betas[1]", group["betas"][1], 0.0, 1.0)
        check_range("eps", group["eps"], 0.0)
        check_range("init_precision", group["init_precision"], 0.0, low_open=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("eps_before_bias_correction", False)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["precision"] = torch.full_like(
            p, group["init_precision"], memory_format=torch.preserve_format
        )
        state["precision_exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["precision_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _group_std(self, group: dict[str, Any], params: list[Tensor]) -> tuple[list[Tensor], float]:
        return torch._foreach_rsqrt([self.state[p]["precision"] for p in params]), 1.0

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """Draw theta, evaluate ``closure`` there, restore mu, update mu and prec."""
        closure = require_closure(self, closure)
        self._ensure_state()
        params = self._params()
        sigma = self.posterior_std()
        noise = self._step_noise(params)
        mu = [p.detach().clone() for p in params]
        try:
            torch._foreach_addcmul_(params, sigma, noise)
            with torch.enable_grad():
                loss = closure()
        finally:
            torch._foreach_copy_(params, mu)

        start = 0
        for group in self.param_groups:
            end = start + len(group["params"])
            present = [i for i in range(start, end) if params[i].grad is not None]
            start = end
            if not present:
                continue
            self._update_group(
                group,
                [params[i] for i in present],
                [params[i].grad for i in present],  # type: ignore[misc]
                [noise[i] for i in present],
                [sigma[i] for i in present],
            )
        return loss

    def _update_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        noise: list[Tensor],
        sigma: list[Tensor],
    ) -> None:
        states = [self.state[p] for p in params]
        for state in states:
            state["step"] += 1
        steps = [state["step"] for state in states]
        beta1, beta2 = group["betas"]
        adam = dict(
            beta1=beta1,
            beta2=beta2,
            prior_decay=0.0,
            eps=group["eps"],
            eps_before_bias_correction=group["eps_before_bias_correction"],
        )
        # d theta / d prec = eps * d(prec^-1/2)/d prec = -1/2 * eps * sigma^3.
        precision_grads = torch._foreach_mul(grads, noise)
        torch._foreach_mul_(precision_grads, torch._foreach_pow(sigma, 3))
        torch._foreach_mul_(precision_grads, -0.5)
        _multi_tensor_vadam(
            [state["precision"] for state in states],
            precision_grads,
            None,
            [state["precision_exp_avg"] for state in states],
            [state["precision_exp_avg_sq"] for state in states],
            steps,
            lr=group["sigma_lr"],
            **adam,
        )
        _multi_tensor_vadam(
            params,
            grads,
            None,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            steps,
            lr=group["lr"],
            **adam,
        )
