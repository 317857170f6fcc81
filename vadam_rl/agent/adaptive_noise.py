"""Weight noise whose scale adapts to a target distance in action space (Plappert et al.,
ICLR 2018, "Parameter Space Noise for Exploration", section 3; OpenAI baselines'
``AdaptiveParamNoiseSpec`` and ``DDPG.adapt_param_noise``).

The distance between the mean actor pi and a perturbed copy pi~ is measured on replayed
states, d = sqrt(mean((pi(s) - pi~(s))^2)) over the minibatch and the action dimensions, and
the noise scale follows d to the target delta:

    scale <- scale / alpha   if d > delta
    scale <- scale * alpha   otherwise

Everything has an optional leading agent dimension: scales and distances are 0-d for one run,
(K,) for a population, and agent k's draws come from its own generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vadam_rl import rng
from vadam_rl.agent.stacking import StackedLayerNorm
from vadam_rl.rng import AgentGenerators, Generators


def action_distance(mean: Tensor, perturbed: Tensor) -> Tensor:
    """sqrt(mean((a - a~)^2)) over batch and action dims: (..., batch, act_dim) -> (...)."""
    return (mean - perturbed).square().mean(dim=(-2, -1)).sqrt()


class AdaptiveScale:
    """The noise scale (sigma of parameter noise, kappa of a scaled posterior) and its rule.

    ``adapt_every`` counts updates: every k-th ``due()`` is True (baselines adapts once every
    ``param_noise_adaption_interval`` = 50 training steps).
    """

    def __init__(
        self,
        initial: float,
        target: float,
        factor: float,
        adapt_every: int,
        agents: int | None,
        device: torch.device,
    ) -> None:
        shape = () if agents is None else (agents,)
        self.target, self.factor, self.adapt_every = target, factor, adapt_every
        self.scale = torch.full(shape, float(initial), device=device)
        self.distance = torch.full(shape, float("nan"), device=device)
        self.updates = 0

    def due(self) -> bool:
        self.updates += 1
        return self.updates % self.adapt_every == 0

    def adapt(self, distance: Tensor) -> None:
        self.distance = distance
        shrink = distance > self.target  # (baselines: d == delta grows the noise)
        self.scale = torch.where(shrink, self.scale / self.factor, self.scale * self.factor)

    def log_values(self) -> dict[str, Tensor]:
        return {"explore/scale": self.scale, "explore/adapt_distance": self.distance}

    def state_dict(self) -> dict:
        return {"scale": self.scale, "distance": self.distance, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.scale = state["scale"].to(self.scale.device)
        self.distance = state["distance"].to(self.distance.device)
        self.updates = int(state["updates"])


def perturbable(module: nn.Module) -> list[bool]:
    """Per parameter of ``module`` (in ``parameters()`` order): whether weight noise goes
    on it. LayerNorm's gain and bias stay as they are, as in baselines (``perturbable_vars``
    leaves out every variable named LayerNorm): they undo the perturbation's scale."""
    norms = {
        id(p)
        for m in module.modules()
        if isinstance(m, nn.LayerNorm | StackedLayerNorm)
        for p in m.parameters()
    }
    return [id(p) not in norms for p in module.parameters()]


def per_agent(scale: Tensor, like: Tensor) -> Tensor:
    """``scale`` ((), or (K,)) shaped to broadcast over a parameter ((K, ...) for a population)."""
    return scale.reshape(scale.shape + (1,) * (like.dim() - scale.dim()))


@torch.no_grad()
def write_perturbed(
    target: Sequence[Tensor],
    source: Sequence[Tensor],
    noisy: Sequence[bool],
    scale: Tensor,
    generator: Generators,
    agents: Sequence[int] | None = None,
) -> None:
    """target <- source + scale * eps, eps ~ N(0, I), for the ``noisy`` parameters (the others
    are copied). ``agents``: in a population, only these agents' parts are redrawn, each
    from its own generator in the order a single run draws."""
    if agents is None or not isinstance(generator, AgentGenerators):
        for dst, src, on in zip(target, source, noisy, strict=True):
            if on:
                eps = rng.randn(src.shape, generator, dtype=src.dtype, device=src.device)
                torch.addcmul(src, per_agent(scale, src), eps, out=dst)
            else:
                dst.copy_(src)
        return
    for k in agents:
        for dst, src, on in zip(target, source, noisy, strict=True):
            if on:
                eps = torch.randn(
                    src.shape[1:], generator=generator[k], dtype=src.dtype, device=src.device
                )
                torch.addcmul(src[k], scale[k], eps, out=dst[k])
            else:
                dst[k].copy_(src[k])
