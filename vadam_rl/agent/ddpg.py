"""DDPG (Lillicrap et al. 2016): one actor, one critic, their targets, one update per minibatch.

The actor is trained by whatever optimizer the config names. With a variational optimizer
(Vadam, VadaGrad, ...) ``step(closure)`` evaluates the actor loss at weights drawn from its
posterior, which is the Vadam paper's DDPG; with Adam it is plain DDPG. Nothing here knows
which: the difference lives in the optimizer and in the exploration strategy.

The losses are written once, each beside its hand-written gradient (``mlp_grad``), which the
built-in MLPs take; other networks (LayerNorm, NoisyNet layers) take autograd's. Tests check
the two against each other in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic, Phase
from vadam_rl.agent.mlp_grad import (
    action_gradient,
    forward,
    hand_written_layers,
    set_gradients,
    tanh_backward,
    weight_gradients,
    weight_gradients_and_sq_means,
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
        self.layers = hand_written_layers(
            {
                "actor": self.actor,
                "critic": self.critic,
                "actor_target": self.actor_target,
                "critic_target": self.critic_target,
            }
        )
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

    @property
    def hand_written(self) -> bool:
        return self.layers is not None

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

    def actor_step(self, batch: Batch) -> Tensor:
        """One actor optimizer step on -mean Q(s, pi(s)); returns that loss."""
        if self.layers is not None:
            return take_step(self.actor_optimizer, lambda: self.actor_closure(batch))
        # The actor loss needs gradients w.r.t. the actor only; freezing the critic skips the
        # weight-gradient matmuls of its backward pass.
        self.critic.requires_grad_(False)
        try:
            return take_step(self.actor_optimizer, lambda: self.actor_closure(batch))
        finally:
            self.critic.requires_grad_(True)

    def actor_closure(self, batch: Batch) -> Tensor:
        """-mean Q(s, pi(s)) per agent, its gradient in the actor's .grad (at the weights the
        optimizer set: a variational optimizer's draw)."""
        if self.layers is None:
            self.actor_optimizer.zero_grad(set_to_none=True)
            if self.actor_grad_sq_means:  # VOGN: loss_i = -Q(s_i, pi(s_i)), per example
                return self.per_example_actor_gradients(
                    lambda action, obs: -self.critic(obs, action)[..., 0], batch.obs
                )
            with self.actor_noise():
                actions = self.actor(batch.obs)
            loss = -self.batch_mean(self.critic(batch.obs, actions))
            loss.sum().backward()
            return loss
        with torch.no_grad():
            actor, critic = self.layers["actor"], self.layers["critic"]
            actor_acts = forward(actor, batch.obs)
            action = actor_acts.output
            critic_acts = forward(critic, batch.obs, action)
            q = critic_acts.output
            dq = torch.full_like(q, -1.0 / q.shape[-2])  # d/dq of -mean(q)
            d_action = action_gradient(critic, critic_acts, dq, action.shape[-1])
            grad_out = tanh_backward(d_action, action)
            if self.actor_grad_sq_means:
                grads, grad_sqs = weight_gradients_and_sq_means(actor, actor_acts, grad_out)
                self.actor_optimizer.set_grad_sq_means(grad_sqs)  # type: ignore[attr-defined]
            else:
                grads = weight_gradients(actor, actor_acts, grad_out)
            set_gradients(actor, grads)
            return -self.batch_mean(q)
