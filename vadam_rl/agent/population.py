"""DDPG with an agent dimension: the learner of every run (a single run is K = 1)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.stacking import select_agent, stack_modules
from vadam_rl.config import ConfigError, TrainConfig
from vadam_rl.rng import AgentGenerators

# Optimizers whose state is per weight (elementwise): stacking agents along a new leading
# dimension leaves each agent's update unchanged. IVON keeps flattened, shared state.
STACKABLE_OPTIMIZERS = ("adam", "vadam", "vadagrad", "vprop", "adam-explore")


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


class PopulationDDPG(DDPG):
    """K DDPG agents whose networks and optimizer states are stacked along dim 0 (K = 1 for
    a single run).

    Built from K single agents (``agents``, initialised with their own seeds), whose weights
    it copies; obs: (K, batch, obs_dim) -> actions (K, batch, act_dim). Losses are averaged
    over each agent's minibatch and summed over agents, so agent k's gradient is the one its
    single run would compute. Metrics come back with shape (K,).
    """

    def __init__(
        self, agents: Sequence[DDPG], config: TrainConfig, generators: AgentGenerators
    ) -> None:
        if len(agents) > 1:
            check_stackable(config)
        self.num_agents = len(agents)
        actor = stack_modules([agent.actor for agent in agents])
        critic = stack_modules([agent.critic for agent in agents])
        # One agent draws from its own generator as it is: the same values as through
        # AgentGenerators, and an optimizer with flattened state (IVON) draws as it expects.
        self._setup(actor, critic, config, generators[0] if len(agents) == 1 else generators)

    @staticmethod
    def batch_mean(values: Tensor) -> Tensor:
        return values.mean(dim=(1, 2))

    def agent_state_dict(self, agent: int) -> dict:
        """Agent ``agent``'s state in the run directory's format (``DDPG.state_dict``)."""
        return select_agent(self.state_dict(), agent)
