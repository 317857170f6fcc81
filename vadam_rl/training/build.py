"""Building the runs: K seeds of one preset (K = 1 for a single run) as one set of envs, one
learner with an agent dimension (the algorithm the config names), its update with the
speed-ups it can have, one replay buffer, one exploration strategy and one collector, and an
ordinary run directory per seed."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from vadam_rl.agent.exploration import Exploration, make_exploration
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.agent.registry import make_learner
from vadam_rl.agent.stacking import select_agent
from vadam_rl.config import TrainConfig
from vadam_rl.device import resolve_device
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.fast.host_actor import acting_forward
from vadam_rl.fast.select import SpeedUps, speed_up
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.buffer import AgentBuffer
from vadam_rl.training.collector import RolloutCollector, make_vector_env


@dataclass
class Progress:
    """The counters the agents share, which a checkpoint carries besides the components'
    own state."""

    step: int = 0
    updates: int = 0
    wall_time_s: float = 0.0


@dataclass
class Run:
    """One seed's run directory and what is kept for it: its evaluation env and an actor to
    evaluate (agent k's weights, copied in by ``Runs.load_actor``), its generator (in the
    checkpoint) and its evaluations."""

    config: TrainConfig
    run_dir: Path
    index: int
    generator: torch.Generator
    actor: nn.Module
    eval_env: gym.Env
    best_return: float = -math.inf
    evaluations: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Runs:
    """Everything K runs trained together hold, built by ``build_runs``."""

    runs: list[Run]
    device: torch.device
    agent: ActorCritic
    speed_ups: SpeedUps
    """``speed_ups.update(batch)``: the learner's update, as fast as it can be."""
    buffer: AgentBuffer
    exploration: Exploration
    collector: RolloutCollector
    progress: Progress = field(default_factory=Progress)

    @property
    def config(self) -> TrainConfig:
        return self.runs[0].config

    @property
    def single(self) -> bool:
        return len(self.runs) == 1

    def load_actor(self, run: Run) -> nn.Module:
        """``run``'s actor with agent ``run.index``'s current weights."""
        run.actor.load_state_dict(select_agent(self.agent.actor.state_dict(), run.index))
        return run.actor

    def policy_state(self, run: Run) -> dict:
        """Agent ``run.index``'s mean policy, in the policy-file format (``policy_state``)."""
        return select_agent(self.agent.policy_state(), run.index)

    def close(self) -> None:
        self.collector.envs.close()
        for run in self.runs:
            run.eval_env.close()


def build_runs(
    configs: Sequence[TrainConfig], run_dirs: Sequence[Path], initial_policy: dict | None = None
) -> Runs:
    """Seed each agent exactly as a run of its own, then build envs, the stacked agent, buffer,
    exploration and collector. ``initial_policy`` (a policy file's dict) replaces the freshly
    initialised networks of every agent (then optimizers start fresh)."""
    config = configs[0]
    device = resolve_device(config.device)
    envs = make_vector_env(config.env_id, config.num_envs * len(configs), config.async_envs)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    try:
        check_memory(config, obs_dim, act_dim, device, agents=len(configs))
    except UserError:
        envs.close()
        raise
    generators: list[torch.Generator] = []
    for agent_config in configs:
        generator = torch.Generator(device=device)
        generator.manual_seed(agent_config.seed)
        generators.append(generator)
    streams = AgentGenerators(generators)
    seeds = [c.seed for c in configs]
    agent = make_learner(config, obs_dim, act_dim, device, seeds, streams, initial_policy)
    buffer = AgentBuffer(config.buffer_size, obs_dim, act_dim, device, streams)
    speed_ups = speed_up(agent, config)
    exploration = make_exploration(
        config.exploration, agent.actor, agent.actor_optimizer, streams, acting_forward
    )
    collector = RolloutCollector(envs, buffer, exploration, seeds, device, streams)
    runs = [
        Run(
            c, Path(d), k, generators[k], copy.deepcopy(agent.single_actor), make_env(config.env_id)
        )
        for k, (c, d) in enumerate(zip(configs, run_dirs, strict=True))
    ]
    return Runs(runs, device, agent, speed_ups, buffer, exploration, collector)


def memory_needed(config: TrainConfig, obs_dim: int, act_dim: int, agents: int = 1) -> dict:
    """Bytes a run will allocate, roughly: its replay buffer (preallocated whole: obs,
    next_obs, action, reward, terminated in float32) and one update's tensors (activations
    and their gradients for the actor, the critic and both targets at ``batch_size``, about
    eight float32 values per unit and row)."""
    buffer = config.buffer_size * (2 * obs_dim + act_dim + 2) * 4
    critics = 2 if config.algorithm == "td3" else 1  # TD3's twin critics
    units = sum(config.actor.hidden_sizes) + critics * sum(config.critic.hidden_sizes)
    units += obs_dim + act_dim
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
