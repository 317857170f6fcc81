"""Vprop: RMSprop whose gradients are taken at weights drawn from a Gaussian posterior.

Khan et al., ICML 2018 (https://arxiv.org/abs/1806.04854), the variational counterpart of
RMSprop; reference code ``Vprop`` in https://github.com/emtiyaz/vadam,
``pytorch/vadam/optimizers.py``.
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
from vadam_rl.optim.vadam import (
    check_vadam_group,
    init_state_like_reference,
    sigma_from_second_moment,
)
from vadam_rl.rng import Generators

__all__ = ["Vprop"]


class Vprop(DiagonalGaussianOptimizer):
    r"""Variational RMSprop: like ``Vadam`` without momentum and without bias correction.

    Per weight, with N = ``train_set_size``, lambda = ``prior_precision``, lambda~ = lambda/N:

    .. code-block:: text

        sigma = 1 / sqrt(N*s + lambda + c);  theta = mu + sigma * eps,  eps ~ N(0, I)
        g     = gradient at theta of the minibatch-mean loss (MC-averaged; g2 likewise)
        s     = beta*s + (1-beta) * g2
        mu    = mu - lr * (g + lambda~*mu) / (sqrt(s) + lambda~)

    s starts at ``(init_precision - lambda)/N`` (default init_precision: lambda, so s = 0), as
    in the reference. ``precision_floor`` c (default 0, an addition shared with ``Vadam``)
    bounds sigma <= 1/sqrt(c) and touches only the sampling distribution.

    Args:
        params: parameters or param-group dicts (per-group ``lr``, ``beta``,
            ``prior_precision``, ``train_set_size``, ``init_precision``, ``precision_floor``).
        train_set_size: N > 0. lr: >= 0. beta: in [0, 1). prior_precision: lambda >= 0.
        init_precision: >= lambda. num_samples: MC draws per step, >= 1.
        precision_floor: c >= 0.
        generator: source of the noise (on the parameters' device); None: global RNG.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        train_set_size: float,
        lr: float = 1e-3,
        beta: float = 0.999,
        prior_precision: float = 1.0,
        init_precision: float | None = None,
        num_samples: int = 1,
        precision_floor: float = 0.0,
        *,
        generator: Generators = None,
    ) -> None:
        self.num_samples = check_num_samples(num_samples)
        defaults = dict(
            lr=lr,
            beta=beta,
            prior_precision=prior_precision,
            train_set_size=train_set_size,
            init_precision=init_precision,
            precision_floor=precision_floor,
        )
        super().__init__(params, defaults, generator=generator)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_range("beta", group["beta"], 0.0, 1.0)
        check_vadam_group(group)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        init_state_like_reference(group, p, state)

    def _group_std(self, group: dict[str, Any], params: list[Tensor]) -> tuple[list[Tensor], float]:
        return sigma_from_second_moment(
            [self.state[p]["exp_avg_sq"] for p in params],
            group["train_set_size"],
            group["prior_precision"] + group["precision_floor"],
        )

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
            exp_avg_sqs = [state["exp_avg_sq"] for state in states]
            beta = group["beta"]
            damping = group["prior_precision"] / group["train_set_size"]

            torch._foreach_mul_(exp_avg_sqs, beta)
            if found.grad_sqs is None:
                torch._foreach_addcmul_(exp_avg_sqs, found.grads, found.grads, 1 - beta)
            else:
                torch._foreach_add_(exp_avg_sqs, found.grad_sqs, alpha=1 - beta)
            numerator = (
                torch._foreach_add(found.grads, found.params, alpha=damping)
                if damping != 0
                else found.grads
            )
            denom = torch._foreach_sqrt(exp_avg_sqs)
            if damping != 0:
                torch._foreach_add_(denom, damping)
            torch._foreach_addcdiv_(found.params, numerator, denom, value=-group["lr"])
        return loss
