"""TD3 (Fujimoto et al., ICML 2018, "Addressing Function Approximation Error in Actor-Critic
Methods"): DDPG with twin critics, a clipped double-Q target, target policy smoothing and a
delayed actor.

- Twin critics Q1, Q2 are one stacked module (weights (K, 2, out, in)): one batched matmul
  per layer serves both critics of every agent.
- Target: y = r + gamma (1 - terminated) min_j Q'_j(s', clip(pi'(s') + eps, -1, 1)), with
  eps = clip(N(0, noise^2), -noise_clip, noise_clip) drawn from the agent's own stream. Our
  actions live in [-1, 1] (``networks.ActionScaler``), so noise 0.2 and clip 0.5 are in units
  of the action bounds, as the paper's 0.2 * max_action and SB3's TD3.
- Both critics regress on y every update (loss: the sum of their mean squared errors); the
  actor ascends Q1 and the targets follow by Polyak averaging every ``policy_delay`` updates
  (the 2nd, 4th, ...: sfujim/TD3 and SB3 count the same way).

The update has two phases, "critic" and "full" (critic, actor and targets), each a function
with no Python control flow of its own, so each can be compiled or captured as a CUDA graph;
``begin_update`` counts and picks. The logged ``actor_loss`` is the last actor step's,
carried over the critic-only updates, so every update logs the same metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vadam_rl import rng
from vadam_rl.agent.batch import Batch
from vadam_rl.agent.ddpg import make_actor, make_critic
from vadam_rl.agent.learner import ActorCritic, Phase
from vadam_rl.agent.mlp_grad import (
    MLPLayers,
    forward,
    set_gradients,
    weight_gradients,
)
from vadam_rl.agent.stacking import stack_modules
from vadam_rl.config import TrainConfig
from vadam_rl.optim.base import take_step


def twice(x: Tensor) -> Tensor:
    """(..., batch, d) -> (..., 2, batch, d): the same input for both twin critics."""
    return x.unsqueeze(-3).expand(*x.shape[:-2], 2, *x.shape[-2:])


class TD3(ActorCritic):
    """Twin critics every update; actor and targets every ``config.td3.policy_delay``."""

    algorithm = "td3"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        td3 = self.config.td3
        self.policy_delay = td3.policy_delay
        self.target_policy_noise = td3.target_policy_noise
        self.target_noise_clip = td3.target_noise_clip
        self.critic_updates = 0
        self.last_actor_loss = torch.zeros(self.num_agents, device=self.device)
        self.smoothing_noise: Tensor | None = None
        """This update's target smoothing noise, (K, batch, act_dim), drawn by
        ``begin_update`` into a tensor that keeps its address (what a graph reads)."""
        self._phases = {
            "critic": Phase(self.critic_update, (self.critic_optimizer,)),
            "full": Phase(self.full_update, (self.critic_optimizer, self.actor_optimizer)),
        }

    def make_networks(
        self, obs_dim: int, act_dim: int, config: TrainConfig
    ) -> tuple[nn.Module, nn.Module]:
        actor = make_actor(obs_dim, act_dim, config)
        twin = stack_modules([make_critic(obs_dim, act_dim, config) for _ in range(2)])
        return actor, twin

    @property
    def phases(self) -> dict[str, Phase]:
        return self._phases

    @torch.no_grad()
    def begin_update(self, batch: Batch) -> str:
        self.critic_updates += 1
        shape = batch.actions.shape
        noise = rng.randn(shape, self.generator, dtype=batch.actions.dtype, device=self.device)
        noise.mul_(self.target_policy_noise).clamp_(-self.target_noise_clip, self.target_noise_clip)
        if self.smoothing_noise is None or self.smoothing_noise.shape != shape:
            self.smoothing_noise = torch.empty_like(noise)
        self.smoothing_noise.copy_(noise)
        return "full" if self.critic_updates % self.policy_delay == 0 else "critic"

    def critic_update(self, batch: Batch) -> dict[str, Tensor]:
        """Both critics' step; the actor and the targets wait."""
        target_q = self.target_q(batch)
        critic_loss = take_step(self.critic_optimizer, lambda: self.critic_closure(batch, target_q))
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": self.last_actor_loss.clone(),
            "q_target_mean": self.batch_mean(target_q),
        }

    def full_update(self, batch: Batch) -> dict[str, Tensor]:
        """Both critics' step, the actor's step on Q1, then both targets."""
        target_q = self.target_q(batch)
        critic_loss = take_step(self.critic_optimizer, lambda: self.critic_closure(batch, target_q))
        actor_loss = self.actor_step(batch).detach()
        self.update_targets()
        self.last_actor_loss.copy_(actor_loss)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss,
            "q_target_mean": self.batch_mean(target_q),
        }

    # -- the losses, each with its gradient ------------------------------------------------

    @torch.no_grad()
    def target_q(self, batch: Batch) -> Tensor:
        """y = r + gamma (1 - terminated) min_j Q'_j(s', clip(pi'(s') + eps)), (K, batch, 1)."""
        assert self.smoothing_noise is not None, "begin_update draws the smoothing noise"
        if self.layers is None:
            next_action = self.actor_target(batch.next_obs)
        else:
            next_action = forward(self.layers["actor_target"], batch.next_obs).output
        next_action = (next_action + self.smoothing_noise).clamp(-1.0, 1.0)
        if self.layers is None:
            next_q = self.critic_target(twice(batch.next_obs), twice(next_action))
        else:
            critic_target = self.layers["critic_target"]
            next_q = forward(critic_target, twice(batch.next_obs), twice(next_action)).output
        return self.td_target(next_q.amin(dim=-3), batch)

    def critic_closure(self, batch: Batch, target_q: Tensor) -> Tensor:
        """Sum over the twins of the minibatch mean of (Q_j(s, a) - y)^2, per agent; its
        gradient in the critics' .grad."""
        y = target_q.unsqueeze(-3)  # (K, 1, batch, 1): the same target for both
        if self.layers is None:
            self.critic_optimizer.zero_grad(set_to_none=True)
            q = self.critic(twice(batch.obs), twice(batch.actions))
            errors = F.mse_loss(q, y.expand_as(q), reduction="none")
            loss = errors.mean(dim=(-2, -1)).sum(dim=-1)
            loss.sum().backward()
            return loss
        with torch.no_grad():  # (see DDPG.critic_closure)
            critic = self.layers["critic"]
            acts = forward(critic, twice(batch.obs), twice(batch.actions))
            error = acts.output - y
            grads = weight_gradients(critic, acts, error * (2.0 / error.shape[-2]))
            set_gradients(critic, grads)
            return error.square().mean(dim=(-2, -1)).sum(dim=-1)

    def actor_q(self, obs: Tensor, action: Tensor) -> Tensor:
        """Q1: the first critic of each agent's twins, through its parameters' views."""
        first = {name: p.select(1, 0) for name, p in self.critic.named_parameters()}
        return functional_call(self.critic, first, (obs, action))

    def actor_q_layers(self) -> MLPLayers:
        assert self.layers is not None
        return self.layers["critic"].select(0)

    # -- state -----------------------------------------------------------------------------

    def extra_state(self) -> dict:
        # (K, 1): each agent's own value survives select_agent / stack_agents as a tensor.
        return {
            "critic_updates": self.critic_updates,
            "last_actor_loss": self.last_actor_loss.unsqueeze(-1).clone(),
        }

    def load_extra_state(self, state: dict) -> None:
        self.critic_updates = int(state["critic_updates"])
        self.last_actor_loss.copy_(state["last_actor_loss"].reshape(self.num_agents))
