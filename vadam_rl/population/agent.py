"""The population's learner and replay buffer: DDPG and ReplayBuffer with an agent dimension."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vadam_rl import rng
from vadam_rl.buffer import FIELDS, Batch, ReplayBuffer
from vadam_rl.config import ConfigError, TrainConfig
from vadam_rl.ddpg import DDPG
from vadam_rl.population.stacking import select_agent, stack_modules
from vadam_rl.rng import AgentGenerators

# Optimizers whose state is per weight (elementwise): stacking agents along a new leading
# dimension leaves each agent's update unchanged. IVON keeps flattened, shared state.
STACKABLE_OPTIMIZERS = ("adam", "vadam", "vadagrad", "vprop", "adam-explore")


def check_stackable(config: TrainConfig) -> None:
    """ConfigError for settings a population cannot train like K single runs."""
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


class PopulationDDPG(DDPG):
    """K DDPG agents whose networks and optimizer states are stacked along dim 0.

    Built from K single agents (``agents``, initialised with their own seeds), whose weights
    it copies; obs: (K, batch, obs_dim) -> actions (K, batch, act_dim). Losses are averaged
    over each agent's minibatch and summed over agents, so agent k's gradient is the one its
    single run would compute. Metrics come back with shape (K,).
    """

    def __init__(
        self, agents: Sequence[DDPG], config: TrainConfig, generators: AgentGenerators
    ) -> None:
        check_stackable(config)
        self.num_agents = len(agents)
        actor = stack_modules([agent.actor for agent in agents])
        critic = stack_modules([agent.critic for agent in agents])
        self._setup(actor, critic, config, generators)

    @staticmethod
    def batch_mean(values: Tensor) -> Tensor:
        return values.mean(dim=(1, 2))

    def agent_state_dict(self, agent: int) -> dict:
        """Agent ``agent``'s state in the single-run format (``DDPG.state_dict``)."""
        return select_agent(self.state_dict(), agent)


# The single-run state_dict would slice or load along the agent dimension.
PER_AGENT_STATE = (
    "{} is saved and loaded per agent (agent_state_dict / load_agent_state_dict), each in "
    "the single-run format"
)


class PopulationBuffer(ReplayBuffer):
    """K replay buffers of one capacity in (K, capacity, dim) tensors, filled in lockstep
    (``add`` takes (K, n, ...) tensors); agent k's minibatch indices come from generator k, as
    in its single run."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        generators: AgentGenerators,
    ) -> None:
        super().__init__(capacity, obs_dim, act_dim, device, leading=(len(generators),))
        self.num_agents = len(generators)
        self.generators = generators
        self.agent_index = torch.arange(self.num_agents, device=self.device).unsqueeze(1)

    def sample(self, batch_size: int) -> Batch:
        """(K, batch_size, ...) fields; row k is agent k's uniform draw from its own data."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = rng.randint(
            self.size, (self.num_agents, batch_size), self.generators, device=self.device
        )
        return self._gather((self.agent_index, index))

    def state_dict(self) -> dict[str, Tensor | int]:
        raise TypeError(PER_AGENT_STATE.format(type(self).__name__))

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        raise TypeError(PER_AGENT_STATE.format(type(self).__name__))

    def agent_state_dict(self, agent: int) -> dict[str, Tensor | int]:
        """Agent ``agent``'s buffer in the single-run format (``ReplayBuffer.state_dict``)."""
        filled = slice(0, self.size)
        state: dict[str, Tensor | int] = {
            name: getattr(self, name)[agent, filled].cpu().clone() for name in FIELDS
        }
        return {**state, "pos": self.pos, "size": self.size}

    def load_agent_state_dict(self, agent: int, state: dict[str, Tensor | int]) -> None:
        size, pos = int(state["size"]), int(state["pos"])
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, capacity is {self.capacity}")
        if agent > 0 and (size, pos) != (self.size, self.pos):
            raise ValueError("the agents' replay buffers hold different numbers of transitions")
        for name in FIELDS:
            stored = state[name]
            assert isinstance(stored, Tensor)
            getattr(self, name)[agent, :size] = stored.to(self.device)
        self.pos, self.size = pos, size
