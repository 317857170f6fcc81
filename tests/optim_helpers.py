"""A tiny float64 regression problem shared by the optimizer tests.

The model is a 3-5-2 tanh MLP written as a function of an explicit weight list, so a test can
evaluate the same loss at the optimizer's parameters (through a closure) and at weights of its
own (the float64 references). Minibatch t is rows 8t..8t+7 (mod 64) of a fixed data set.
``actor_loss`` is the paper's RL setting on the same network: a batch of B = 64 states whose
loss the reference RL code sums and we average.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from vadam_rl.optim.ivon import ivon_available

needs_ivon = pytest.mark.skipif(
    not ivon_available(), reason="the optional package ivon-opt is not installed"
)

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


BATCH = 64


def actor_loss(weights: list[Tensor], obs: Tensor, *, reduce: Callable[[Tensor], Tensor]) -> Tensor:
    """-Q(s, pi(s)) of a tanh actor against a fixed quadratic critic, summed or averaged.

    obs: (batch, 3); ``reduce``: ``torch.sum`` (the reference RL code) or ``torch.mean`` (ours).
    """
    w1, b1, w2, b2 = weights
    action = torch.tanh(torch.tanh(obs @ w1.T + b1) @ w2.T + b2)
    target = torch.sin(obs[:, :2])
    q = -(action - target).pow(2).sum(dim=1)
    return reduce(-q)


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


def actor_closure(
    optimizer: torch.optim.Optimizer, params: list[Tensor], obs: Tensor
) -> Callable[[], Tensor]:
    """Our convention for the actor: the *mean* of ``actor_loss`` over the batch."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = actor_loss(params, obs, reduce=torch.mean)
        loss.backward()
        return loss

    return closure


def reference_rl_vadam(
    obs: Tensor,
    noise: torch.Generator,
    steps: int,
    *,
    lr: float,
    betas: tuple[float, float],
    lam_ref: float,
    c_ref: float,
) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
    """The reference RL code's Vadam (ActorNetworkEpsilon.py, method "vadam"), in float64.

    Summed gradient G over the batch, S from 0, sigma = 1/sqrt(S + lambda + c), TensorFlow's
    bias correction of the step with the damping lambda added to sqrt(S) before it. Yields
    (mu, sigma) after each of ``steps`` steps, starting from ``INIT``, eps drawn from ``noise``.
    """
    b1, b2 = betas
    mu = [w.clone() for w in INIT]
    big_m = [torch.zeros_like(w) for w in INIT]
    big_s = [torch.zeros_like(w) for w in INIT]
    for t in range(1, steps + 1):
        sigma = [1 / torch.sqrt(s_i + lam_ref + c_ref) for s_i in big_s]
        eps = randn_like_params(noise, mu)
        theta = [mu_i + sig * e for mu_i, sig, e in zip(mu, sigma, eps, strict=True)]
        big_g = grad_at(theta, lambda w: actor_loss(w, obs, reduce=torch.sum))
        big_s = [b2 * s_i + (1 - b2) * g * g for s_i, g in zip(big_s, big_g, strict=True)]
        big_m = [
            b1 * m_i + (1 - b1) * (g + lam_ref * w)
            for m_i, g, w in zip(big_m, big_g, mu, strict=True)
        ]
        step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        mu = [
            w - step * m_i / (torch.sqrt(s_i) + lam_ref)
            for w, m_i, s_i in zip(mu, big_m, big_s, strict=True)
        ]
        yield mu, [1 / torch.sqrt(s_i + lam_ref + c_ref) for s_i in big_s]
