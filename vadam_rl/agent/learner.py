"""What every learner shares: K actor-critic agents stacked along dim 0 (K = 1 for a single
run), their targets and optimizers, the update in phases, and state for checkpoints.

An algorithm (``ddpg.py``, ``td3.py``) is a subclass that says which networks an agent has
(``make_networks``), what its losses are, and which update phase runs next
(``begin_update``). Each phase is a function ``(batch) -> metrics`` with no Python state of
its own and the optimizers it steps, so ``vadam_rl.fast`` can compile it or capture it as a
CUDA graph from outside; ``begin_update`` is the eager part (counters, random draws) that
runs before each. ``update(batch)`` is the two together, eagerly.

Tensors carry a leading agent dimension everywhere: obs (K, batch, obs_dim) -> actions
(K, batch, act_dim); metrics come back with shape (K,). Agent k is seeded and initialised as
a run of its own with seed k would be, and its gradient is the one that run computes (losses
are averaged over each agent's minibatch and summed over agents).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.mlp_grad import (
    MLPLayers,
    action_gradient,
    forward,
    hand_written_layers,
    set_gradients,
    tanh_backward,
    weight_gradients,
    weight_gradients_and_sq_means,
)
from vadam_rl.agent.networks import mean_state, noise_drawn, noisy_layers, polyak_update
from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.agent.stacking import select_agent, stack_modules
from vadam_rl.config import ConfigError, TrainConfig
from vadam_rl.errors import UserError
from vadam_rl.optim.base import take_step
from vadam_rl.optim.per_example import per_example_grads
from vadam_rl.optim.vogn import VOGN
from vadam_rl.rng import AgentGenerators

Update = Callable[[Batch], dict[str, Tensor]]

# Optimizers whose state is per weight (elementwise): stacking agents along a new leading
# dimension leaves each agent's update unchanged. IVON keeps flattened, shared state.
STACKABLE_OPTIMIZERS = ("adam", "vadam", "vadagrad", "vprop", "adam-explore", "vogn")


@dataclass(frozen=True)
class Phase:
    """One kind of update: ``run(batch)`` steps ``optimizers`` (in that order) and returns
    the metrics. A learner whose updates differ from step to step (TD3's delayed actor) has
    several phases; each is compiled or graphed on its own."""

    run: Update
    optimizers: tuple[torch.optim.Optimizer, ...]


def check_stackable(config: TrainConfig) -> None:
    """ConfigError for settings that K > 1 agents cannot train like K runs of their own."""
    for role, net in (("actor", config.actor), ("critic", config.critic)):
        if net.optimizer.name not in STACKABLE_OPTIMIZERS:
            raise ConfigError(
                f"{role}.optimizer.name={net.optimizer.name!r} cannot be trained as a "
                f"population (supported: {', '.join(STACKABLE_OPTIMIZERS)}); train the "
                "seeds one by one"
            )
    if config.exploration.kind in ("posterior", "vadam") and config.exploration.resample_every == 0:
        raise ConfigError(
            "exploration.resample_every=0 (redraw when an episode ends) is not supported by "
            "population training, whose agents end episodes at different times; use >= 1"
        )


class ActorCritic:
    """The shared part of the off-policy actor-critic learners (see the module docstring).

    ``seeds``: one per agent; each agent's networks are initialised after
    ``torch.manual_seed(seed)``, as its own run would be. ``generators``: agent k's random
    stream (optimizer draws, TD3's target noise). ``initial_policy`` (a policy file's dict)
    replaces every agent's freshly initialised networks (optimizers start fresh).
    """

    algorithm: ClassVar[str]
    POLICY_KEYS: ClassVar[tuple[str, ...]] = ("actor", "critic", "actor_target", "critic_target")

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: TrainConfig,
        device: torch.device,
        seeds: Sequence[int],
        generators: AgentGenerators,
        initial_policy: dict | None = None,
    ) -> None:
        if len(seeds) != len(generators):
            raise ValueError("one generator per seed")
        if len(seeds) > 1:
            check_stackable(config)
        self.config = config
        self.device = device
        self.num_agents = len(seeds)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        nets: dict[str, list[nn.Module]] = {key: [] for key in self.POLICY_KEYS}
        for seed in seeds:
            torch.manual_seed(seed)  # network initialisation, as a run of its own
            actor, critic = self.make_networks(obs_dim, act_dim, config)
            agent = {"actor": actor.to(device), "critic": critic.to(device)}
            agent["actor_target"] = copy.deepcopy(agent["actor"])
            agent["critic_target"] = copy.deepcopy(agent["critic"])
            if initial_policy is not None:
                load_initial_policy(agent, initial_policy)
            for key, module in agent.items():
                nets[key].append(module)
        self.single_actor = copy.deepcopy(nets["actor"][0]).requires_grad_(False)
        """An unstacked actor of the agents' shape (what a run's evaluation loads weights into)."""
        self.actor = stack_modules(nets["actor"])
        self.critic = stack_modules(nets["critic"])
        self.actor_target = stack_modules(nets["actor_target"]).requires_grad_(False)
        self.critic_target = stack_modules(nets["critic_target"]).requires_grad_(False)
        # One agent draws from its own generator as it is: the same values as through
        # AgentGenerators, and an optimizer with flattened state (IVON) draws as it expects.
        self.generator = generators[0] if self.num_agents == 1 else generators
        self.actor_optimizer = build_optimizer(
            self.actor.parameters(), config.actor.optimizer, generator=self.generator
        )
        self.critic_optimizer = build_optimizer(
            self.critic.parameters(), config.critic.optimizer, generator=self.generator
        )
        self.actor_grad_sq_means = isinstance(self.actor_optimizer, VOGN)
        """Whether the actor's closure also hands its optimizer h, the mean of the per-example
        squared gradients (VOGN's curvature), besides the minibatch-mean gradient."""
        self.gamma, self.tau = config.gamma, config.tau
        # Kept as lists: walking four modules once per update costs more than the lerp.
        self._online_params = [*self.critic.parameters(), *self.actor.parameters()]
        self._target_params = [*self.critic_target.parameters(), *self.actor_target.parameters()]
        # A NoisyNet actor's loss is taken at fresh noise (its sigmas learn through it); its
        # target, a copy without a draw in force, is the mean policy.
        self.actor_noise: Callable[[], AbstractContextManager[None]] = (
            (lambda: noise_drawn(self.actor, self.generator))
            if noisy_layers(self.actor)
            else nullcontext
        )
        # Called after load_state_dict: a wrapper that holds tensors' addresses (a CUDA
        # graph) or step counts (a compiled update) re-reads them.
        self.load_state_dict_post_hooks: list[Callable[[], None]] = []
        self.layers = hand_written_layers(
            {
                "actor": self.actor,
                "critic": self.critic,
                "actor_target": self.actor_target,
                "critic_target": self.critic_target,
            }
        )
        """The networks' layer views where the hand-written gradients know them all (the
        built-in Linear/ReLU MLPs); None: autograd's gradients (the one place that decides)."""

    # -- what an algorithm defines ---------------------------------------------------------

    def make_networks(
        self, obs_dim: int, act_dim: int, config: TrainConfig
    ) -> tuple[nn.Module, nn.Module]:
        """One agent's (actor, critic), freshly initialised from torch's global RNG."""
        raise NotImplementedError

    @property
    def phases(self) -> dict[str, Phase]:
        raise NotImplementedError

    def begin_update(self, batch: Batch) -> str:
        """The eager part of the next update (counters, random draws); returns the name of
        the phase that performs it."""
        raise NotImplementedError

    def actor_q(self, obs: Tensor, action: Tensor) -> Tensor:
        """The Q the actor ascends, (K, batch, 1), through the critic module (autograd)."""
        raise NotImplementedError

    def actor_q_layers(self) -> MLPLayers:
        """The same critic's layer view, for the hand-written gradients."""
        raise NotImplementedError

    @property
    def hand_written(self) -> bool:
        """Whether the gradients are the hand-written ones (``mlp_grad``), not autograd's:
        only then can the update be compiled whole or captured as a CUDA graph."""
        return self.layers is not None

    # -- shared ----------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One update, eagerly (``vadam_rl.fast.select.speed_up`` gives the fast one)."""
        return self.phases[self.begin_update(batch)].run(batch)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The mean actor's actions, (K, batch, act_dim)."""
        return self.actor(obs)

    def update_targets(self) -> None:
        """Polyak averaging of both targets: target <- (1 - tau) target + tau online."""
        polyak_update(self._target_params, self._online_params, self.tau)

    def td_target(self, next_q: Tensor, batch: Batch) -> Tensor:
        # A time-limit truncation is not an end of the task: bootstrap unless terminated.
        return batch.rewards + self.gamma * (1.0 - batch.terminated) * next_q

    @staticmethod
    def batch_mean(values: Tensor) -> Tensor:
        """Each agent's mean over its minibatch: (K, batch, 1) -> (K,)."""
        return values.mean(dim=(-2, -1))

    # -- the deterministic policy gradient: the actor ascends its Q ------------------------

    def actor_step(self, batch: Batch) -> Tensor:
        """One actor optimizer step on -mean Q(s, pi(s)); returns that loss, (K,)."""
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
        optimizer set: a variational optimizer's draw); for VOGN also h."""
        if self.layers is None:
            self.actor_optimizer.zero_grad(set_to_none=True)
            if self.actor_grad_sq_means:  # VOGN: loss_i = -Q(s_i, pi(s_i)), per example
                return self.per_example_actor_gradients(
                    lambda action, obs: -self.actor_q(obs, action)[..., 0], batch.obs
                )
            with self.actor_noise():
                actions = self.actor(batch.obs)
            loss = -self.batch_mean(self.actor_q(batch.obs, actions))
            loss.sum().backward()
            return loss
        # Optimizers call closures under enable_grad (autograd closures need it); this needs
        # no graph. set_gradients replaces every .grad, so no zero_grad.
        with torch.no_grad():
            actor, critic = self.layers["actor"], self.actor_q_layers()
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

    def per_example_actor_gradients(
        self, per_example_loss: Callable[[Tensor, Tensor], Tensor], obs: Tensor
    ) -> Tensor:
        """The autograd path's actor gradients for VOGN: ``per_example_loss(actions, obs)``
        -> (K, batch), one loss per example (the actor loss before its minibatch mean); the
        mean gradient goes to the actor's .grad and h to its optimizer
        (``set_grad_sq_means``). Returns each agent's mean loss, (K,). torch.func computes
        every example's gradient: ~100x a minibatch gradient's time, for any actor module."""
        stats = per_example_grads(self.actor, per_example_loss, obs, agent_dim=True)
        for p, grad in zip(self.actor.parameters(), stats.grads, strict=True):
            p.grad = grad
        self.actor_optimizer.set_grad_sq_means(stats.grad_sqs)  # type: ignore[attr-defined]
        return stats.loss

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer, in the order an update steps them."""
        return [self.critic_optimizer, self.actor_optimizer]

    def extra_state(self) -> dict:
        """An algorithm's own state besides networks and optimizers (TD3: its counter)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.load_extra_state(state)
        for hook in self.load_state_dict_post_hooks:
            hook()

    def agent_state_dict(self, agent: int) -> dict:
        """Agent ``agent``'s state in the run directory's format (one agent, whatever K)."""
        return select_agent(self.state_dict(), agent)

    def policy_state(self) -> dict:
        """The mean policy's weights, in the run directory's policy-file format (a NoisyNet
        actor's means, without its noise scales: a plain actor's state)."""
        return {
            "actor": mean_state(self.actor),
            "critic": self.critic.state_dict(),
            "actor_target": mean_state(self.actor_target),
            "critic_target": self.critic_target.state_dict(),
        }


def load_initial_policy(agent: dict[str, nn.Module], policy: dict) -> None:
    """Start one agent's networks (actor, critic and their targets) from given weights (a
    policy file's dict); UserError if they do not fit."""
    try:
        for name, module in agent.items():
            # A NoisyNet actor starts its noise scales at their init: the file holds means.
            missing = set(module.state_dict()) - set(mean_state(module))
            result = module.load_state_dict(policy[name], strict=not missing)
            if set(result.missing_keys) - missing or result.unexpected_keys:
                raise RuntimeError(
                    f"{name}: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
                )
    except (KeyError, RuntimeError) as err:
        raise UserError(f"the initial policy does not fit the configured networks: {err}") from None
