"""Which learner class an ``algorithm`` names: the one place that knows them all."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.agent.td3 import TD3
from vadam_rl.config import TrainConfig
from vadam_rl.rng import AgentGenerators

LEARNERS: dict[str, type[ActorCritic]] = {"ddpg": DDPG, "td3": TD3}


def make_learner(
    config: TrainConfig,
    obs_dim: int,
    act_dim: int,
    device: torch.device,
    seeds: Sequence[int],
    generators: AgentGenerators,
    initial_policy: dict | None = None,
) -> ActorCritic:
    """K agents of ``config.algorithm`` stacked, agent k seeded with ``seeds[k]`` and drawing
    from ``generators[k]`` (K = 1 for a single run)."""
    learner = LEARNERS[config.algorithm]
    return learner(obs_dim, act_dim, config, device, seeds, generators, initial_policy)
