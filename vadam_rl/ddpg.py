"""DDPG (Lillicrap et al. 2016): actor, critic, targets, and one update per minibatch.

The actor is trained by whatever optimizer the config names. With a variational optimizer
(Vadam, VadaGrad, ...) ``step(closure)`` evaluates the actor loss at weights drawn from its
posterior, which is the Vadam paper's DDPG; with Adam it is plain DDPG. Nothing here knows
which: the difference lives in the optimizer and in the exploration strategy.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadam_rl.buffer import Batch
from vadam_rl.config import TrainConfig
from vadam_rl.networks import Actor, Critic, polyak_update
from vadam_rl.optim.factory import build_optimizer
from vadam_rl.rng import Generators


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
            obs_dim, act_dim, config.actor.hidden_sizes, config.actor.final_layer_init
        ).to(device)
        critic = Critic(
            obs_dim,
            act_dim,
            config.critic.hidden_sizes,
            config.critic.action_layer,
            config.critic.final_layer_init,
        ).to(device)
        self._setup(actor, critic, config, generator)

    def _setup(
        self, actor: nn.Module, critic: nn.Module, config: TrainConfig, generator: Generators
    ) -> None:
        self.gamma = config.gamma
        self.tau = config.tau
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

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The mean actor's action, (batch, act_dim)."""
        return self.actor(obs)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One DDPG step: critic TD regression, actor ascent on Q, Polyak-averaged targets."""
        with torch.no_grad():
            next_q = self.critic_target(batch.next_obs, self.actor_target(batch.next_obs))
            # A time-limit truncation is not an end of the task: bootstrap unless terminated.
            target_q = batch.rewards + self.gamma * (1.0 - batch.terminated) * next_q

        def critic_closure() -> Tensor:
            self.critic_optimizer.zero_grad(set_to_none=True)
            q = self.critic(batch.obs, batch.actions)
            loss = self.batch_mean(F.mse_loss(q, target_q, reduction="none"))
            loss.sum().backward()
            return loss

        critic_loss = self.critic_optimizer.step(critic_closure)

        def actor_closure() -> Tensor:
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss = -self.batch_mean(self.critic(batch.obs, self.actor(batch.obs)))
            loss.sum().backward()
            return loss

        # The actor loss needs gradients w.r.t. the actor only; freezing the critic skips the
        # weight-gradient matmuls of its backward pass.
        self.critic.requires_grad_(False)
        try:
            actor_loss = self.actor_optimizer.step(actor_closure)
        finally:
            self.critic.requires_grad_(True)

        polyak_update(self.critic_target, self.critic, self.tau)
        polyak_update(self.actor_target, self.actor, self.tau)
        return {
            "critic_loss": critic_loss.detach(),  # type: ignore[union-attr]
            "actor_loss": actor_loss.detach(),  # type: ignore[union-attr]
            "q_target_mean": self.batch_mean(target_q),
        }

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

    def policy_state(self) -> dict:
        """The mean policy's weights, in the run directory's policy-file format."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
        }
