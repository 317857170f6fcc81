"""Exploration strategies: how the behaviour policy differs from the trained (mean) actor.

Every strategy answers ``act(obs)`` with the behaviour action *and* the mean actor's action
(so the loop can log how far exploration moves the policy), hears ``on_episode_end(done)``,
and saves its state for exact resume. Methods differ here, not in a forked training loop.
Their forward passes go through ``acting(actor)``, the module itself unless the caller passes a
faster forward that computes the same (``vadam_rl.fast.host_actor.acting_forward``: numpy on a
CPU).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
from torch import Tensor, nn

from vadam_rl import rng
from vadam_rl.config import ExplorationConfig
from vadam_rl.optim.base import VariationalOptimizer
from vadam_rl.rng import Generators

Acting = Callable[[nn.Module], Callable[[Tensor], Tensor]]
"""What acts for an actor: ``acting(actor)(obs)`` computes ``actor(obs)``."""


def module_itself(actor: nn.Module) -> Callable[[Tensor], Tensor]:
    return actor


class ExplorationStep(NamedTuple):
    """behaviour, mean: (num_envs, act_dim) squashed actions in [-1, 1]."""

    behaviour: Tensor
    mean: Tensor


class Exploration(Protocol):
    def act(self, obs: Tensor) -> ExplorationStep: ...

    def on_episode_end(self, done: Tensor) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Memoryless:
    """What a strategy without state between steps answers to the loop and to checkpoints."""

    def on_episode_end(self, done: Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NoExploration(Memoryless):
    """Act with the mean actor (the paper's "Adam-Plain")."""

    def __init__(self, actor: nn.Module, acting: Acting = module_itself) -> None:
        self.actor = actor
        self.forward = acting(actor)

    def act(self, obs: Tensor) -> ExplorationStep:
        action = self.forward(obs)
        return ExplorationStep(action, action)


class GaussianActionNoise(Memoryless):
    """a = clip(pi(s) + sigma * eps, -1, 1), eps ~ N(0, I) drawn fresh every step."""

    def __init__(
        self, actor: nn.Module, sigma: float, generator: Generators, acting: Acting = module_itself
    ) -> None:
        self.actor = actor
        self.forward = acting(actor)
        self.sigma = sigma
        self.generator = generator

    def act(self, obs: Tensor) -> ExplorationStep:
        mean = self.forward(obs)
        noise = rng.randn(mean.shape, self.generator, device=mean.device)
        return ExplorationStep((mean + self.sigma * noise).clamp(-1.0, 1.0), mean)


class OrnsteinUhlenbeckNoise:
    """Temporally correlated action noise (DDPG paper), dt = 1, reset at each episode end:
    x <- x + theta * (0 - x) + sigma * eps."""

    def __init__(
        self,
        actor: nn.Module,
        sigma: float,
        theta: float,
        generator: Generators,
        acting: Acting = module_itself,
    ) -> None:
        self.actor = actor
        self.forward = acting(actor)
        self.sigma = sigma
        self.theta = theta
        self.generator = generator
        self.state: Tensor | None = None

    def act(self, obs: Tensor) -> ExplorationStep:
        mean = self.forward(obs)
        if self.state is None:
            self.state = torch.zeros_like(mean)
        eps = rng.randn(mean.shape, self.generator, device=mean.device)
        self.state = self.state - self.theta * self.state + self.sigma * eps
        return ExplorationStep((mean + self.state).clamp(-1.0, 1.0), mean)

    def on_episode_end(self, done: Tensor) -> None:
        if self.state is not None:
            self.state = self.state * (~done).to(self.state.dtype).unsqueeze(-1)

    def state_dict(self) -> dict:
        return {"state": self.state}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("state")
        device = next(self.actor.parameters()).device
        self.state = None if saved is None else saved.to(device)


class PosteriorSampling:
    """Act with actor weights drawn from the actor optimizer's posterior N(mu, sigma^2).

    The Vadam paper's exploration: the behaviour actor is a copy of the actor whose weights are
    one draw theta ~ N(mu, sigma^2), redrawn every ``resample_every`` env steps (1 = every
    step, as in the paper's code) or, with 0, at every episode end. The trained parameters
    (mu) are never touched: the draw is written into a separate module. With
    ``reuse_draw_in_update`` the optimizer's next step takes its gradient at that same draw.
    """

    def __init__(
        self,
        actor: nn.Module,
        optimizer: VariationalOptimizer,
        resample_every: int,
        reuse_draw_in_update: bool = False,
        acting: Acting = module_itself,
    ) -> None:
        if not isinstance(optimizer, VariationalOptimizer):
            raise TypeError(
                f"posterior exploration needs a variational optimizer, got "
                f"{type(optimizer).__name__}"
            )
        self.actor = actor
        self.optimizer = optimizer
        self.resample_every = resample_every
        self.reuse_draw_in_update = reuse_draw_in_update
        self.behaviour_actor = copy.deepcopy(actor).requires_grad_(False)
        self.forward = acting(actor)
        self.behaviour_forward = acting(self.behaviour_actor)
        self.steps_since_draw = 0
        self.needs_draw = True

    def act(self, obs: Tensor) -> ExplorationStep:
        if self.needs_draw or (
            self.resample_every > 0 and self.steps_since_draw >= self.resample_every
        ):
            self.optimizer.sample_into(
                self.behaviour_actor.parameters(), reuse_in_next_step=self.reuse_draw_in_update
            )
            self.steps_since_draw = 0
            self.needs_draw = False
        self.steps_since_draw += 1
        return ExplorationStep(self.behaviour_forward(obs), self.forward(obs))

    def on_episode_end(self, done: Tensor) -> None:
        # One draw serves all envs, so with resample_every=0 a new draw comes when any ends.
        if self.resample_every == 0 and bool(done.any()):
            self.needs_draw = True

    def state_dict(self) -> dict:
        return {
            "behaviour_actor": self.behaviour_actor.state_dict(),
            "steps_since_draw": self.steps_since_draw,
            "needs_draw": self.needs_draw,
        }

    def load_state_dict(self, state: dict) -> None:
        self.behaviour_actor.load_state_dict(state["behaviour_actor"])
        self.steps_since_draw = int(state["steps_since_draw"])
        self.needs_draw = bool(state["needs_draw"])


def make_exploration(
    config: ExplorationConfig,
    actor: nn.Module,
    actor_optimizer: torch.optim.Optimizer,
    generator: Generators,
    acting: Acting = module_itself,
) -> Exploration:
    """The strategy named by ``config.kind``; ``acting``: see ``Acting``."""
    if config.kind in ("posterior", "vadam"):  # "vadam": the name the paper's users know
        return PosteriorSampling(
            actor,
            actor_optimizer,  # type: ignore[arg-type]
            config.resample_every,
            config.reuse_draw_in_update,
            acting,
        )
    if config.kind == "gaussian":
        return GaussianActionNoise(actor, config.sigma, generator, acting)
    if config.kind == "ornstein-uhlenbeck":
        return OrnsteinUhlenbeckNoise(actor, config.sigma, config.theta, generator, acting)
    if config.kind == "none":
        return NoExploration(actor, acting)
    raise ValueError(f"unknown exploration kind {config.kind!r}")
