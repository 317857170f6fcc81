"""DDPG (Lillicrap et al. 2016): one actor, one critic, their targets, one update per minibatch.

The actor is trained by whatever optimizer the config names. With a variational optimizer
(Vadam, VadaGrad, ...) ``step(closure)`` evaluates the actor loss at weights drawn from its
posterior, which is the Vadam paper's DDPG; with Adam it is plain DDPG. Nothing here knows
which: the difference lives in the optimizer and in the exploration strategy.

The critic's loss is written here once, beside its hand-written gradient (``mlp_grad``),
which the built-in MLPs take; other networks (LayerNorm, NoisyNet layers) take autograd's.
The actor's loss, -mean Q(s, pi(s)), is DDPG's and TD3's alike:
``learner.ActorCritic.actor_closure``, with the Q this file names (``actor_q``). Tests
check the hand-written gradients against autograd in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic, Phase
from vadam_rl.agent.mlp_grad import (
    MLPLayers,
    forward,
    set_gradients,
    weight_gradients,
)
from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.config import TrainConfig
from vadam_rl.optim.base import take_step


def make_actor(obs_dim: int, act_dim: int, config: TrainConfig) -> Actor:
    return Actor(
        obs_dim,
        act_dim,
        config.actor.hidden_sizes,
        config.actor.final_layer_init,
        config.actor.layer_norm,
        noisy=config.exploration.kind == "noisy-net",
    )


def make_critic(obs_dim: int, act_dim: int, config: TrainConfig) -> Critic:
    return Critic(
        obs_dim,
        act_dim,
        config.critic.hidden_sizes,
        config.critic.action_layer,
        config.critic.final_layer_init,
        config.critic.layer_norm,
    )


class DDPG(ActorCritic):
    """Critic TD regression, actor ascent on Q, Polyak-averaged targets: every update."""

    algorithm = "ddpg"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._phases = {
            "update": Phase(self.full_update, (self.critic_optimizer, self.actor_optimizer))
        }

    def make_networks(
        self, obs_dim: int, act_dim: int, config: TrainConfig
    ) -> tuple[nn.Module, nn.Module]:
        return make_actor(obs_dim, act_dim, config), make_critic(obs_dim, act_dim, config)

    @property
    def phases(self) -> dict[str, Phase]:
        return self._phases

    def begin_update(self, batch: Batch) -> str:
        return "update"

    def full_update(self, batch: Batch) -> dict[str, Tensor]:
        """Critic step, actor step, then both targets."""
        target_q = self.target_q(batch)
        critic_loss = take_step(self.critic_optimizer, lambda: self.critic_closure(batch, target_q))
        actor_loss = self.actor_step(batch)
        self.update_targets()
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_target_mean": self.batch_mean(target_q),
        }

    # -- the losses, each with its gradient ------------------------------------------------

    @torch.no_grad()
    def target_q(self, batch: Batch) -> Tensor:
        """y = r + gamma (1 - terminated) Q'(s', pi'(s')), (K, batch, 1)."""
        if self.layers is None:
            next_q = self.critic_target(batch.next_obs, self.actor_target(batch.next_obs))
        else:
            next_action = forward(self.layers["actor_target"], batch.next_obs).output
            next_q = forward(self.layers["critic_target"], batch.next_obs, next_action).output
        return self.td_target(next_q, batch)

    def critic_closure(self, batch: Batch, target_q: Tensor) -> Tensor:
        """The minibatch mean of (Q(s, a) - y)^2 per agent, its gradient in the critic's .grad."""
        if self.layers is None:
            self.critic_optimizer.zero_grad(set_to_none=True)
            q = self.critic(batch.obs, batch.actions)
            loss = self.batch_mean(F.mse_loss(q, target_q, reduction="none"))
            loss.sum().backward()
            return loss
        # Optimizers call closures under enable_grad (autograd closures need it); this needs
        # no graph. set_gradients replaces every .grad, so no zero_grad (which a compiled
        # graph could not trace either).
        with torch.no_grad():
            critic = self.layers["critic"]
            acts = forward(critic, batch.obs, batch.actions)
            error = acts.output - target_q
            # d/dq of the minibatch mean of error^2 (each agent's own mean).
            grads = weight_gradients(critic, acts, error * (2.0 / error.shape[-2]))
            set_gradients(critic, grads)
            return self.batch_mean(error.square())

    def actor_q(self, obs: Tensor, action: Tensor) -> Tensor:
        """The critic's Q: the actor's loss is -mean Q(s, pi(s)) (``ActorCritic.actor_step``)."""
        return self.critic(obs, action)

    def actor_q_layers(self) -> MLPLayers:
        assert self.layers is not None
        return self.layers["critic"]
