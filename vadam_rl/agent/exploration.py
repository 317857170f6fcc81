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
from vadam_rl.agent.adaptive_noise import (
    AdaptiveScale,
    action_distance,
    per_agent,
    perturbable,
    write_perturbed,
)
from vadam_rl.agent.networks import NoisyLinear, noise_drawn, noisy_layers
from vadam_rl.config import ExplorationConfig
from vadam_rl.optim.base import VariationalOptimizer
from vadam_rl.rng import AgentGenerators, Generators

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

    def after_update(self, obs: Tensor) -> None:
        """Hears each update's replay states (``obs``: (batch, obs_dim), a population's
        (K, batch, obs_dim)), which adaptive strategies measure their noise on."""
        ...

    def log_values(self) -> dict[str, Tensor]:
        """The strategy's own scalars for TensorBoard (0-d, or (K,) in a population)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Memoryless:
    """What a strategy without state between steps answers to the loop and to checkpoints."""

    def on_episode_end(self, done: Tensor) -> None:
        pass

    def after_update(self, obs: Tensor) -> None:
        pass

    def log_values(self) -> dict[str, Tensor]:
        return {}

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


class OrnsteinUhlenbeckNoise(Memoryless):
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


def draw_due(needs_draw: Tensor, steps_since_draw: Tensor, resample_every: int) -> list[int] | None:
    """Which agents take a new draw before this step: None for all of one run's, else the
    population's agents (indices) whose draw is due."""
    due = needs_draw.clone()
    if resample_every > 0:
        due |= steps_since_draw >= resample_every
    if due.dim() == 0:
        return None if bool(due) else []
    return due.nonzero()[:, 0].tolist()


class ParameterNoise(Memoryless):
    """Adaptive parameter-space noise (Plappert et al., ICLR 2018; OpenAI baselines' DDPG).

    The behaviour actor is a copy of the actor whose weights are mu + sigma * eps (all but
    LayerNorm's), redrawn when an episode ends and, with ``resample_every`` = k > 0, every k
    env steps. Every ``adapt_every`` updates a separate draw at the current sigma is measured
    against the mean actor on the update's replay states and sigma adapts to the target
    distance (``adaptive_noise``). baselines samples another minibatch for that measurement;
    here it is the one just trained on (the same replay distribution, no extra draw from the
    buffer).
    """

    def __init__(
        self,
        actor: nn.Module,
        config: ExplorationConfig,
        generator: Generators,
        acting: Acting = module_itself,
    ) -> None:
        assert config.target_action_distance is not None  # (config.validate)
        self.actor, self.generator = actor, generator
        self.resample_every = config.resample_every
        agents = len(generator) if isinstance(generator, AgentGenerators) else None
        device = next(actor.parameters()).device
        self.noise = AdaptiveScale(
            config.sigma,
            config.target_action_distance,
            config.adapt_factor,
            config.adapt_every,
            agents,
            device,
        )
        self.behaviour_actor = copy.deepcopy(actor).requires_grad_(False)
        self.adaptive_actor = copy.deepcopy(actor).requires_grad_(False)
        self.noisy = perturbable(actor)
        self.forward = acting(actor)
        self.behaviour_forward = acting(self.behaviour_actor)
        shape = () if agents is None else (agents,)
        self.needs_draw = torch.ones(shape, dtype=torch.bool)
        self.steps_since_draw = torch.zeros(shape, dtype=torch.int64)

    def act(self, obs: Tensor) -> ExplorationStep:
        agents = draw_due(self.needs_draw, self.steps_since_draw, self.resample_every)
        if agents is None or agents:
            write_perturbed(
                list(self.behaviour_actor.parameters()),
                list(self.actor.parameters()),
                self.noisy,
                self.noise.scale,
                self.generator,
                agents,
            )
            if agents is None:
                self.needs_draw.fill_(False)
                self.steps_since_draw.zero_()
            else:
                self.needs_draw[agents] = False
                self.steps_since_draw[agents] = 0
        self.steps_since_draw += 1
        return ExplorationStep(self.behaviour_forward(obs), self.forward(obs))

    def on_episode_end(self, done: Tensor) -> None:
        # One draw serves all of an agent's envs: it is redrawn when any of them ends.
        self.needs_draw |= done.any(dim=-1).cpu()

    @torch.no_grad()
    def after_update(self, obs: Tensor) -> None:
        if not self.noise.due():
            return
        write_perturbed(
            list(self.adaptive_actor.parameters()),
            list(self.actor.parameters()),
            self.noisy,
            self.noise.scale,
            self.generator,
        )
        self.noise.adapt(action_distance(self.actor(obs), self.adaptive_actor(obs)))

    def log_values(self) -> dict[str, Tensor]:
        return self.noise.log_values()

    def state_dict(self) -> dict:
        return {
            "behaviour_actor": self.behaviour_actor.state_dict(),
            "noise": self.noise.state_dict(),
            "needs_draw": self.needs_draw,
            "steps_since_draw": self.steps_since_draw,
        }

    def load_state_dict(self, state: dict) -> None:
        self.behaviour_actor.load_state_dict(state["behaviour_actor"])
        self.noise.load_state_dict(state["noise"])
        self.needs_draw = state["needs_draw"].clone()
        self.steps_since_draw = state["steps_since_draw"].clone()


class NoisyNetExploration(Memoryless):
    """Act with fresh NoisyNet noise every env step (Fortunato et al., ICLR 2018): the
    actor's ``NoisyLinear`` layers draw factorised noise for the behaviour action and the
    mean action is the same actor without it. The noise scales are learned by the actor's
    optimizer (``DDPG`` draws fresh noise for each actor update as well)."""

    def __init__(self, actor: nn.Module, generator: Generators) -> None:
        self.actor, self.generator = actor, generator
        if not noisy_layers(actor):
            raise TypeError("noisy-net exploration needs an actor with NoisyLinear layers")

    def act(self, obs: Tensor) -> ExplorationStep:
        with noise_drawn(self.actor, self.generator):
            behaviour = self.actor(obs)
        return ExplorationStep(behaviour, self.actor(obs))

    def log_values(self) -> dict[str, Tensor]:
        """Mean learned sigma of each layer's weights (their init is 0.5/sqrt(fan_in))."""
        return {
            f"explore/noisy_sigma/{name.removeprefix('mu.')}": layer.weight_sigma.detach()
            .abs()
            .mean(dim=(-2, -1))
            for name, layer in self.actor.named_modules()
            if isinstance(layer, NoisyLinear)
        }


class PosteriorSampling(Memoryless):
    """Act with actor weights drawn from the actor optimizer's posterior N(mu, sigma^2).

    The Vadam paper's exploration: the behaviour actor is a copy of the actor whose weights are
    one draw theta ~ N(mu, sigma^2), redrawn every ``resample_every`` env steps (1 = every
    step, as in the paper's code) or, with 0, at every episode end. The trained parameters
    (mu) are never touched: the draw is written into a separate module. With
    ``reuse_draw_in_update`` the optimizer's next step takes its gradient at that same draw.

    With ``target_action_distance`` (delta) the behaviour weights are mu + kappa * sigma * eps:
    the posterior says which weights are uncertain, kappa (adapted by parameter noise's rule,
    ``adaptive_noise``, from 1) how far to act on it. The optimizer's own draws, and a draw
    its next step reuses, stay unscaled: kappa changes how the agent acts, not what it learns.
    """

    def __init__(
        self,
        actor: nn.Module,
        optimizer: VariationalOptimizer,
        config: ExplorationConfig,
        generator: Generators = None,
        acting: Acting = module_itself,
    ) -> None:
        if not isinstance(optimizer, VariationalOptimizer):
            raise TypeError(
                f"posterior exploration needs a variational optimizer, got "
                f"{type(optimizer).__name__}"
            )
        self.actor = actor
        self.optimizer = optimizer
        self.generator = generator
        self.resample_every = config.resample_every
        self.reuse_draw_in_update = config.reuse_draw_in_update
        self.behaviour_actor = copy.deepcopy(actor).requires_grad_(False)
        self.forward = acting(actor)
        self.behaviour_forward = acting(self.behaviour_actor)
        self.steps_since_draw = 0
        self.needs_draw = True
        self.kappa: AdaptiveScale | None = None
        if config.target_action_distance is not None:
            agents = len(generator) if isinstance(generator, AgentGenerators) else None
            self.kappa = AdaptiveScale(
                1.0,
                config.target_action_distance,
                config.adapt_factor,
                config.adapt_every,
                agents,
                next(actor.parameters()).device,
            )
            self.adaptive_actor = copy.deepcopy(actor).requires_grad_(False)

    def act(self, obs: Tensor) -> ExplorationStep:
        if self.needs_draw or (
            self.resample_every > 0 and self.steps_since_draw >= self.resample_every
        ):
            behaviour = list(self.behaviour_actor.parameters())
            self.optimizer.sample_into(behaviour, reuse_in_next_step=self.reuse_draw_in_update)
            if self.kappa is not None:
                _scale_draw(behaviour, list(self.actor.parameters()), self.kappa.scale)
            self.steps_since_draw = 0
            self.needs_draw = False
        self.steps_since_draw += 1
        return ExplorationStep(self.behaviour_forward(obs), self.forward(obs))

    def on_episode_end(self, done: Tensor) -> None:
        # One draw serves all envs, so with resample_every=0 a new draw comes when any ends.
        if self.resample_every == 0 and bool(done.any()):
            self.needs_draw = True

    @torch.no_grad()
    def after_update(self, obs: Tensor) -> None:
        if self.kappa is None or not self.kappa.due():
            return
        # A draw of its own (not sample_into, which would replace one the next step reuses).
        means = list(self.actor.parameters())
        sigmas = self.optimizer.posterior_std()
        measured = list(self.adaptive_actor.parameters())
        for dst, mu, sigma in zip(measured, means, sigmas, strict=True):
            eps = rng.randn(mu.shape, self.generator, dtype=mu.dtype, device=mu.device)
            torch.addcmul(mu, per_agent(self.kappa.scale, mu) * sigma, eps, out=dst)
        self.kappa.adapt(action_distance(self.actor(obs), self.adaptive_actor(obs)))

    def log_values(self) -> dict[str, Tensor]:
        return {} if self.kappa is None else self.kappa.log_values()

    def state_dict(self) -> dict:
        state = {
            "behaviour_actor": self.behaviour_actor.state_dict(),
            "steps_since_draw": self.steps_since_draw,
            "needs_draw": self.needs_draw,
        }
        if self.kappa is not None:
            state["kappa"] = self.kappa.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.behaviour_actor.load_state_dict(state["behaviour_actor"])
        self.steps_since_draw = int(state["steps_since_draw"])
        self.needs_draw = bool(state["needs_draw"])
        if self.kappa is not None:
            self.kappa.load_state_dict(state["kappa"])


@torch.no_grad()
def _scale_draw(draw: list[Tensor], means: list[Tensor], kappa: Tensor) -> None:
    """draw <- mu + kappa * (draw - mu), in place."""
    for theta, mu in zip(draw, means, strict=True):
        theta.sub_(mu).mul_(per_agent(kappa, mu)).add_(mu)


def make_exploration(
    config: ExplorationConfig,
    actor: nn.Module,
    actor_optimizer: torch.optim.Optimizer,
    generator: Generators,
    acting: Acting = module_itself,
) -> Exploration:
    """The strategy named by ``config.kind``; ``acting``: see ``Acting``."""
    if config.kind in ("posterior", "vadam"):  # "vadam": the name the paper's users know
        return PosteriorSampling(actor, actor_optimizer, config, generator, acting)  # type: ignore[arg-type]
    if config.kind == "parameter-noise":
        return ParameterNoise(actor, config, generator, acting)
    if config.kind == "noisy-net":
        return NoisyNetExploration(actor, generator)
    if config.kind == "gaussian":
        return GaussianActionNoise(actor, config.sigma, generator, acting)
    if config.kind == "ornstein-uhlenbeck":
        return OrnsteinUhlenbeckNoise(actor, config.sigma, config.theta, generator, acting)
    if config.kind == "none":
        return NoExploration(actor, acting)
    raise ValueError(f"unknown exploration kind {config.kind!r}")
