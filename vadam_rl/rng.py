"""Random draws that work for one agent or for a population with one generator per agent.

A population stacks K agents along a leading dimension. To train each agent exactly as a
single run with the same seed would, agent k must consume *its own* generator in the same
order as that run: a draw of shape (K, *rest) from ``AgentGenerators`` is K draws of shape
``rest``, agent k's from generator k. With a plain ``torch.Generator`` (or None, the global
RNG) these functions are ``torch.randn`` / ``torch.rand`` / ``torch.randint`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class AgentGenerators:
    """K independent generators on one device, agent k's stream is ``generators[k]``."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        if not generators:
            raise ValueError("a population needs at least one generator")
        devices = {g.device for g in generators}
        if len(devices) != 1:
            raise ValueError(f"the agents' generators live on different devices: {devices}")
        self.generators = list(generators)
        self.device = self.generators[0].device

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, agent: int) -> torch.Generator:
        return self.generators[agent]


Generators = torch.Generator | AgentGenerators | None


def _per_agent(
    draw: Callable[[tuple[int, ...], torch.Generator], Tensor],
    shape: Sequence[int],
    generators: AgentGenerators,
) -> Tensor:
    shape = tuple(shape)
    if not shape or shape[0] != len(generators):
        raise ValueError(
            f"a population draw needs a leading agent dimension of {len(generators)}, "
            f"got shape {shape}"
        )
    if len(generators) == 1:  # a single run: its own draw, no copy (the same values)
        return draw(shape[1:], generators.generators[0]).unsqueeze(0)
    return torch.stack([draw(shape[1:], g) for g in generators.generators])


def randn(
    shape: Sequence[int],
    generator: Generators,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    if isinstance(generator, AgentGenerators):
        return _per_agent(
            lambda s, g: torch.randn(s, generator=g, dtype=dtype, device=device), shape, generator
        )
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)


def rand(
    shape: Sequence[int],
    generator: Generators,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    if isinstance(generator, AgentGenerators):
        return _per_agent(lambda s, g: torch.rand(s, generator=g, device=device), shape, generator)
    return torch.rand(tuple(shape), generator=generator, device=device)


def randint(
    high: int,
    shape: Sequence[int],
    generator: Generators,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    if isinstance(generator, AgentGenerators):
        return _per_agent(
            lambda s, g: torch.randint(0, high, s, generator=g, device=device), shape, generator
        )
    return torch.randint(0, high, tuple(shape), generator=generator, device=device)
