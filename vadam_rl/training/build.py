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
from vadam_rl.errors import UserError
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
    try:
        check_memory(config, obs_dim, act_dim, device)
    except UserError:
        envs.close()
        raise
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


def memory_needed(config: TrainConfig, obs_dim: int, act_dim: int, agents: int = 1) -> dict:
    """Bytes a run will allocate, roughly: its replay buffer (preallocated whole: obs,
    next_obs, action, reward, terminated in float32) and one update's tensors (activations
    and their gradients for the actor, the critic and both targets at ``batch_size``, about
    eight float32 values per unit and row)."""
    buffer = config.buffer_size * (2 * obs_dim + act_dim + 2) * 4
    units = sum(config.actor.hidden_sizes) + sum(config.critic.hidden_sizes) + obs_dim + act_dim
    update = config.batch_size * units * 8 * 4
    return {"replay buffer": agents * buffer, "an update": agents * update}


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: MemAvailable on a Linux host, the free memory of a GPU;
    None where it cannot be read (then nothing is refused)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(
    config: TrainConfig, obs_dim: int, act_dim: int, device: torch.device, agents: int = 1
) -> None:
    """UserError, before anything is allocated or written, for a run that would not fit: a
    machine that swaps or kills the process is worse than a message."""
    needed = memory_needed(config, obs_dim, act_dim, agents)
    available = available_memory(device)
    if available is None or sum(needed.values()) <= available:
        return
    parts = ", ".join(f"{name} {size / 2**30:.1f} GiB" for name, size in needed.items())
    raise UserError(
        f"this run needs about {sum(needed.values()) / 2**30:.1f} GiB ({parts}) and {device.type} "
        f"has {available / 2**30:.1f} GiB available: lower buffer_size or batch_size"
    )
