"""A tiny float64 regression problem shared by the optimizer tests.

The model is a 3-5-2 tanh MLP written as a function of an explicit weight list, so a test can
evaluate the same loss at the optimizer's parameters (through a closure) and at weights of its
own (the float64 references). Minibatch t is rows 8t..8t+7 (mod 64) of a fixed data set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

DTYPE = torch.float64
_data = torch.Generator().manual_seed(1234)
X = torch.randn(64, 3, generator=_data, dtype=DTYPE)
Y = torch.randn(64, 2, generator=_data, dtype=DTYPE)
INIT = [
    0.5 * torch.randn(5, 3, generator=_data, dtype=DTYPE),
    0.1 * torch.randn(5, generator=_data, dtype=DTYPE),
    0.5 * torch.randn(2, 5, generator=_data, dtype=DTYPE),
    0.1 * torch.randn(2, generator=_data, dtype=DTYPE),
]


def forward(weights: list[Tensor], x: Tensor) -> Tensor:
    w1, b1, w2, b2 = weights
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def minibatch(t: int, size: int = 8) -> tuple[Tensor, Tensor]:
    start = (size * t) % X.shape[0]
    return X[start : start + size], Y[start : start + size]


def mean_loss(weights: list[Tensor], t: int) -> Tensor:
    """The minibatch-mean loss at step t: mean squared error over 8 rows and 2 outputs."""
    x, y = minibatch(t)
    return (forward(weights, x) - y).pow(2).mean()


def fresh_params(dtype: torch.dtype = DTYPE, device: str | torch.device = "cpu") -> list[Tensor]:
    return [w.to(dtype=dtype, device=device).clone().requires_grad_() for w in INIT]


def closure_for(
    optimizer: torch.optim.Optimizer, params: list[Tensor], t: int
) -> Callable[[], Tensor]:
    """PyTorch's closure convention: zero grads, minibatch-mean loss, backward, return it."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        x, y = minibatch(t)
        x, y = x.to(params[0]), y.to(params[0])
        loss = (forward(params, x) - y).pow(2).mean()
        loss.backward()
        return loss

    return closure


def grad_at(weights: list[Tensor], loss_fn: Callable[[list[Tensor]], Tensor]) -> list[Tensor]:
    """The gradient of ``loss_fn`` at ``weights`` (plain tensors, not modified)."""
    leaves = [w.detach().clone().requires_grad_() for w in weights]
    return list(torch.autograd.grad(loss_fn(leaves), leaves))


def randn_like_params(generator: torch.Generator, like: list[Tensor]) -> list[Tensor]:
    """The optimizers' documented draw: one torch.randn per parameter, in order."""
    return [torch.randn(w.shape, generator=generator, dtype=w.dtype) for w in like]


def max_abs_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a, b, strict=True))


def run(optimizer: torch.optim.Optimizer, params: list[Tensor], steps: range) -> None:
    for t in steps:
        optimizer.step(closure_for(optimizer, params, t))
