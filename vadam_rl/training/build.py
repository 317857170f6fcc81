"""Building a run: seed, then construct envs, agent, replay buffer, exploration and collector."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.exploration import make_exploration
from vadam_rl.config import TrainConfig
from vadam_rl.device import resolve_device
from vadam_rl.envs import make_env
from vadam_rl.fast.host_actor import acting_forward
from vadam_rl.fast.select import speed_up
from vadam_rl.training.buffer import ReplayBuffer
from vadam_rl.training.collector import RolloutCollector, make_vector_env


@dataclass
class Progress:
    """Counters that a checkpoint must carry besides the components' own state."""

    step: int = 0
    updates: int = 0
    wall_time_s: float = 0.0
    best_return: float = -math.inf
    evaluations: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Run:
    """Everything one training run holds, built by ``build_run``."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    generator: torch.Generator
    agent: DDPG
    buffer: ReplayBuffer
    collector: RolloutCollector
    eval_env: gym.Env
    progress: Progress


def build_run(config: TrainConfig, run_dir: Path) -> Run:
    """Seed, then construct envs, agent, buffer, exploration and collector."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # network initialisation
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    envs = make_vector_env(config.env_id, config.num_envs, config.async_envs)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    agent = DDPG(obs_dim, act_dim, config, device, generator=generator)
    speed_up(agent, config)
    buffer = ReplayBuffer(config.buffer_size, obs_dim, act_dim, device, generator=generator)
    exploration = make_exploration(
        config.exploration, agent.actor, agent.actor_optimizer, generator, acting_forward
    )
    collector = RolloutCollector(envs, buffer, exploration, config.seed, device, generator)
    return Run(
        config,
        run_dir,
        device,
        generator,
        agent,
        buffer,
        collector,
        make_env(config.env_id),
        Progress(),
    )
