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

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.networks import Actor, Critic, polyak_update
from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.config import TrainConfig
from vadam_rl.fast import backprop, compiled, cuda_graph
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
        # Hand-written gradients (``backprop``) for the MLPs it knows, autograd otherwise.
        nets = {
            "actor": actor,
            "critic": critic,
            "actor_target": self.actor_target,
            "critic_target": self.critic_target,
        }
        known = {name: backprop.layers_of(module) for name, module in nets.items()}
        self.layers = {name: layers for name, layers in known.items() if layers is not None}
        self.manual_backprop = len(self.layers) == len(nets)
        self._gradient_fns = {
            "td_target": self._manual_td_target,
            "critic": self._manual_critic_gradients,
            "actor": self._manual_actor_gradients,
        }
        self._online_params = [*critic.parameters(), *actor.parameters()]
        self._target_params = [*self.critic_target.parameters(), *self.actor_target.parameters()]
        # How _manual_step steps each optimizer (a compiled update replaces them).
        self._critic_step: compiled.Step = self.critic_optimizer.step
        self._actor_step: compiled.Step = self.actor_optimizer.step
        self.graphed = self._graphed_update(config)
        self.compiled = self._compiled_update(config)

    def _graphed_update(self, config: TrainConfig) -> cuda_graph.GraphedUpdate | None:
        """The CUDA-graph replay of ``_eager_update`` where ``config.cuda_graph`` can have it;
        ``eager_reason`` says why not otherwise."""
        optimizers = [self.actor_optimizer, self.critic_optimizer]
        device = next(self.actor.parameters()).device
        self.eager_reason = cuda_graph.why_eager(config, device, optimizers, self.manual_backprop)
        if self.eager_reason is not None:
            return None
        # Critic first: the update's order, so prepared draws consume the generator as the
        # eager update would.
        prepare, after_replay = cuda_graph.make_capturable(
            [self.critic_optimizer, self.actor_optimizer]
        )
        return cuda_graph.GraphedUpdate(
            self._eager_update, prepare=prepare, after_replay=after_replay
        )

    def _compiled_update(self, config: TrainConfig) -> compiled.CompiledUpdate | None:
        """``_eager_update`` compiled as one graph where ``config.compile`` can have it
        (``compiled.why_not_whole_update``, kept in ``compile_scope``)."""
        # Critic first: the update's order (see _graphed_update).
        optimizers = [self.critic_optimizer, self.actor_optimizer]
        device = next(self.actor.parameters()).device
        reason = compiled.why_not_whole_update(config, device, optimizers, self.manual_backprop)
        if not compiled.compile_wanted(config, device):
            self.compile_scope = f"none ({reason})"
        elif reason is not None:
            self.compile_scope = f"gradients only ({reason})"
            self._gradient_fns = {
                k: torch.compile(compiled.with_own_code(f)) for k, f in self._gradient_fns.items()
            }
        else:
            self.compile_scope = "whole update"
        if reason is not None or self.graphed is not None:
            return None
        update = compiled.CompiledUpdate(self._eager_update, optimizers)
        self._critic_step, self._actor_step = update.steps
        return update

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The mean actor's action, (batch, act_dim)."""
        return self.actor(obs)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One DDPG step: critic TD regression, actor ascent on Q, Polyak-averaged targets."""
        if self.graphed is not None:
            return self.graphed(batch)
        if self.compiled is not None:
            return self.compiled(batch)
        return self._eager_update(batch)

    def _eager_update(self, batch: Batch) -> dict[str, Tensor]:
        step = self._manual_step if self.manual_backprop else self._autograd_step
        target_q, critic_loss, actor_loss = step(batch)
        polyak_update(self._target_params, self._online_params, self.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_target_mean": self.batch_mean(target_q),
        }

    def _td_target(self, next_q: Tensor, batch: Batch) -> Tensor:
        # A time-limit truncation is not an end of the task: bootstrap unless terminated.
        return batch.rewards + self.gamma * (1.0 - batch.terminated) * next_q

    def _autograd_step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Critic and actor steps with autograd (any actor and critic modules)."""
        with torch.no_grad():
            next_q = self.critic_target(batch.next_obs, self.actor_target(batch.next_obs))
            target_q = self._td_target(next_q, batch)

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
        return target_q, critic_loss, actor_loss  # type: ignore[return-value]

    @torch.no_grad()
    def _manual_step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """The same steps with ``backprop``'s hand-written gradients (same losses, same
        closures for the optimizers, no autograd graph)."""
        target_q = self._gradient_fns["td_target"](batch)

        # Optimizers call closures under enable_grad (autograd closures need it); these need
        # no graph, so they switch it off again.
        # set_gradients replaces every .grad, so no zero_grad (which a compiled graph
        # could not trace either).
        def critic_closure() -> Tensor:
            with torch.no_grad():
                grads, loss = self._gradient_fns["critic"](batch.obs, batch.actions, target_q)
            backprop.set_gradients(self.layers["critic"], grads)
            return loss

        critic_loss = self._critic_step(critic_closure)

        def actor_closure() -> Tensor:
            with torch.no_grad():
                grads, loss = self._gradient_fns["actor"](batch.obs)
            backprop.set_gradients(self.layers["actor"], grads)
            return loss

        actor_loss = self._actor_step(actor_closure)
        return target_q, critic_loss, actor_loss  # type: ignore[return-value]

    # The three pure functions of the hand-written update (``TrainConfig.compile`` compiles
    # them); weights are read from the layers when called, so Vadam's perturbation applies.

    def _manual_td_target(self, batch: Batch) -> Tensor:
        layers = self.layers
        next_action = backprop.forward(layers["actor_target"], batch.next_obs).output
        next_q = backprop.forward(layers["critic_target"], batch.next_obs, next_action).output
        return self._td_target(next_q, batch)

    def _manual_critic_gradients(
        self, obs: Tensor, actions: Tensor, target_q: Tensor
    ) -> tuple[list[Tensor], Tensor]:
        """Gradients of the minibatch-mean squared TD error, and that loss."""
        critic = self.layers["critic"]
        acts = backprop.forward(critic, obs, actions)
        error = acts.output - target_q
        # d/dq of the minibatch mean of error^2 (each agent's own mean in a population).
        grads = backprop.weight_gradients(critic, acts, error * (2.0 / error.shape[-2]))
        return grads, self.batch_mean(error.square())

    def _manual_actor_gradients(self, obs: Tensor) -> tuple[list[Tensor], Tensor]:
        """Gradients of -mean Q(s, pi(s)) w.r.t. the actor, and that loss."""
        actor, critic = self.layers["actor"], self.layers["critic"]
        actor_acts = backprop.forward(actor, obs)
        action = actor_acts.output
        critic_acts = backprop.forward(critic, obs, action)
        q = critic_acts.output
        dq = torch.full_like(q, -1.0 / q.shape[-2])  # d/dq of -mean(q)
        d_action = backprop.action_gradient(critic, critic_acts, dq, action.shape[-1])
        grads = backprop.weight_gradients(
            actor, actor_acts, backprop.tanh_backward(d_action, action)
        )
        return grads, -self.batch_mean(q)

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
        if self.graphed is not None:  # the graph holds the replaced tensors' addresses
            # The loaded param groups may say capturable=False.
            cuda_graph.set_capturable([self.critic_optimizer, self.actor_optimizer])
            self.graphed.reset()
        if self.compiled is not None:
            self.compiled.reset()

    def policy_state(self) -> dict:
        """The mean policy's weights, in the run directory's policy-file format."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
        }
