"""DDPG (Lillicrap et al. 2016): actor, critic, targets, and one update per minibatch.

The actor is trained by whatever optimizer the config names. With a variational optimizer
(Vadam, VadaGrad, ...) ``step(closure)`` evaluates the actor loss at weights drawn from its
posterior, which is the Vadam paper's DDPG; with Adam it is plain DDPG. Nothing here knows
which: the difference lives in the optimizer and in the exploration strategy.

``update`` is the one update function. Speed-ups (hand-written gradients, ``torch.compile``,
CUDA graphs) are applied to it from outside, by ``vadam_rl.fast.select.speed_up``: it replaces
``train_step`` (how the two optimizer steps get their gradients) and may wrap ``update``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.networks import (
    Actor,
    Critic,
    mean_state,
    noise_drawn,
    noisy_layers,
    polyak_update,
)
from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.config import TrainConfig
from vadam_rl.rng import Generators

TrainStep = Callable[[Batch], tuple[Tensor, Tensor, Tensor]]
"""(batch) -> (target_q, critic_loss, actor_loss) after stepping the critic, then the actor."""


class DDPG:
    """The learner. ``act(obs)`` is the mean policy; ``update(batch)`` returns tensor metrics.

    obs: (batch, obs_dim); actions are squashed to [-1, 1] (see ``networks.ActionScaler``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: TrainConfig,
        device: torch.device,
        generator: Generators = None,
    ) -> None:
        actor = Actor(
            obs_dim,
            act_dim,
            config.actor.hidden_sizes,
            config.actor.final_layer_init,
            config.actor.layer_norm,
            noisy=config.exploration.kind == "noisy-net",
        ).to(device)
        critic = Critic(
            obs_dim,
            act_dim,
            config.critic.hidden_sizes,
            config.critic.action_layer,
            config.critic.final_layer_init,
            config.critic.layer_norm,
        ).to(device)
        self._setup(actor, critic, config, generator)

    def _setup(
        self, actor: nn.Module, critic: nn.Module, config: TrainConfig, generator: Generators
    ) -> None:
        self.gamma = config.gamma
        self.tau = config.tau
        self.generator = generator
        self.actor = actor
        self.critic = critic
        self.actor_target = copy.deepcopy(actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(critic).requires_grad_(False)
        self.actor_optimizer = build_optimizer(
            self.actor.parameters(), config.actor.optimizer, generator=generator
        )
        self.critic_optimizer = build_optimizer(
            self.critic.parameters(), config.critic.optimizer, generator=generator
        )
        self._online_params = [*critic.parameters(), *actor.parameters()]
        self._target_params = [*self.critic_target.parameters(), *self.actor_target.parameters()]
        # A NoisyNet actor's loss is taken at fresh noise (its sigmas learn through it); its
        # target, a copy without a draw in force, is the mean policy.
        self.actor_noise: Callable[[], AbstractContextManager[None]] = (
            (lambda: noise_drawn(self.actor, self.generator))
            if noisy_layers(actor)
            else nullcontext
        )
        self.train_step: TrainStep = self.autograd_step
        # Called after load_state_dict: a wrapper that holds tensors' addresses (a CUDA
        # graph) or step counts (a compiled update) re-reads them.
        self.load_state_dict_post_hooks: list[Callable[[], None]] = []

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The mean actor's action, (batch, act_dim)."""
        return self.actor(obs)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One DDPG step: critic TD regression, actor ascent on Q, Polyak-averaged targets."""
        target_q, critic_loss, actor_loss = self.train_step(batch)
        polyak_update(self._target_params, self._online_params, self.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_target_mean": self.batch_mean(target_q),
        }

    def td_target(self, next_q: Tensor, batch: Batch) -> Tensor:
        # A time-limit truncation is not an end of the task: bootstrap unless terminated.
        return batch.rewards + self.gamma * (1.0 - batch.terminated) * next_q

    def autograd_step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Critic and actor steps with autograd (any actor and critic modules)."""
        with torch.no_grad():
            next_q = self.critic_target(batch.next_obs, self.actor_target(batch.next_obs))
            target_q = self.td_target(next_q, batch)

        def critic_closure() -> Tensor:
            self.critic_optimizer.zero_grad(set_to_none=True)
            q = self.critic(batch.obs, batch.actions)
            loss = self.batch_mean(F.mse_loss(q, target_q, reduction="none"))
            loss.sum().backward()
            return loss

        critic_loss = self.critic_optimizer.step(critic_closure)

        def actor_closure() -> Tensor:
            self.actor_optimizer.zero_grad(set_to_none=True)
            with self.actor_noise():
                actions = self.actor(batch.obs)
            loss = -self.batch_mean(self.critic(batch.obs, actions))
            loss.sum().backward()
            return loss

        # The actor loss needs gradients w.r.t. the actor only; freezing the critic skips the
        # weight-gradient matmuls of its backward pass.
        self.critic.requires_grad_(False)
        try:
            actor_loss = self.actor_optimizer.step(actor_closure)
        finally:
            self.critic.requires_grad_(True)
        return target_q, critic_loss, actor_loss  # type: ignore[return-value]

    @staticmethod
    def batch_mean(values: Tensor) -> Tensor:
        """Mean over the minibatch, (batch, 1) -> (); a population keeps one per agent."""
        return values.mean()

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        for hook in self.load_state_dict_post_hooks:
            hook()

    def policy_state(self) -> dict:
        """The mean policy's weights, in the run directory's policy-file format (a NoisyNet
        actor's means, without its noise scales: a plain actor's state)."""
        return {
            "actor": mean_state(self.actor),
            "critic": self.critic.state_dict(),
            "actor_target": mean_state(self.actor_target),
            "critic_target": self.critic_target.state_dict(),
        }
