"""Rollout collector: steps a gymnasium vector env with the behaviour policies of K agents (one
for a single run) into their buffer.

Episodes are reset by the collector, not by gymnasium's autoreset, and episode k of env i
always starts from ``reset(seed=episode_seed(seed, i, k))``. Each episode's start therefore
depends only on (seed, env, episode number), which is what makes a resumed run continue
exactly like an uninterrupted one when the checkpoint falls between episodes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from vadam_rl import rng
from vadam_rl.agent.exploration import Exploration, ExplorationStep
from vadam_rl.agent.networks import ActionScaler
from vadam_rl.envs import make_env
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.buffer import AgentBuffer


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool = False) -> VectorEnv:
    """``num_envs`` copies of ``env_id``; resets are left to the collector."""
    make_one: Callable[[], gym.Env] = lambda: make_env(env_id)  # noqa: E731
    fns = [make_one] * num_envs
    if asynchronous:
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
    return SerialVectorEnv(fns)


class SerialVectorEnv(VectorEnv):
    """gymnasium's ``SyncVectorEnv`` with autoreset disabled, minus the per-step infos.

    The collector never reads infos, and batching them (a dict of masked arrays per key,
    every step) is most of what SyncVectorEnv adds to the envs' own time. Observations,
    rewards and flags are the same arrays (tested
    against SyncVectorEnv); reset takes a ``reset_mask`` option and seeds as SyncVectorEnv
    does (and refuses what it refuses), and an env that ended must be reset before it steps
    again. ``reset`` still returns infos.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        super().__init__()
        self.envs = [make() for make in env_fns]
        self.num_envs = len(self.envs)
        self.metadata = dict(self.envs[0].metadata)
        self.metadata["autoreset_mode"] = AutoresetMode.DISABLED
        self.render_mode = self.envs[0].render_mode
        self.single_action_space = self.envs[0].action_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = self.envs[0].observation_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._obs: list[np.ndarray] = [np.zeros(0)] * self.num_envs
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed=None, options=None):  # type: ignore[override]
        options = dict(options or {})
        mask = options.pop("reset_mask", np.ones(self.num_envs, dtype=bool))
        if not (isinstance(mask, np.ndarray) and mask.dtype == bool and mask.any()):
            raise ValueError(f"reset_mask must be a bool array with a True, got {mask!r}")
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
        seeds = seed if isinstance(seed, list) else [seed] * self.num_envs
        if isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
        infos: dict = {}
        for i in np.flatnonzero(mask):
            self._obs[i], info = self.envs[i].reset(seed=seeds[i], options=options or None)
            infos = self._add_info(infos, info, int(i))
        self._ended[mask] = False
        return np.stack(self._obs), infos

    def step(self, actions):  # type: ignore[override]
        if self._ended.any():
            raise RuntimeError(f"envs {np.flatnonzero(self._ended).tolist()} ended: reset first")
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            self._obs[i], rewards[i], terminated[i], truncated[i], _ = env.step(actions[i])
        self._ended = terminated | truncated
        return np.stack(self._obs), rewards, terminated, truncated, {}

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    """A distinct 32-bit seed for every (run seed, env, episode) triple."""
    sequence = np.random.SeedSequence([seed, env_index, episode])
    return int(sequence.generate_state(1)[0])


class RolloutCollector:
    """Collects K agents' transitions from ``envs`` (K x n envs) into ``buffer``.

    Env j = k*n + i is agent k's env i; its episodes start from
    ``reset(seed=episode_seed(seed_k, i, episode))``, so agent k's episodes do not depend on
    the other agents (a single run is K = 1). During the first ``learning_starts`` steps
    actions are uniform in [-1, 1], agent k's drawn from its own generator; afterwards they
    come from ``exploration``, one batched act for all agents. Episode returns and lengths
    are tracked per agent on the host, where the rewards arrive.
    """

    def __init__(
        self,
        envs: VectorEnv,
        buffer: AgentBuffer,
        exploration: Exploration,
        seeds: Sequence[int],
        device: torch.device,
        generators: AgentGenerators,
    ) -> None:
        if not seeds or envs.num_envs % len(seeds):
            raise ValueError(f"{envs.num_envs} envs cannot be split among {len(seeds)} agents")
        self.envs = envs
        self.buffer = buffer
        self.exploration = exploration
        self.seeds = list(seeds)
        self.device = device
        self.generators = generators
        self.num_envs = envs.num_envs
        self.num_agents = len(seeds)
        self.envs_per_agent = envs.num_envs // self.num_agents
        space = envs.single_action_space
        assert isinstance(space, gym.spaces.Box)
        self.scaler = ActionScaler(space.low, space.high)
        self.act_dim = int(np.prod(space.shape))
        self.episodes_started = np.zeros(self.num_envs, dtype=np.int64)
        self.episode_return = np.zeros(self.num_envs)
        self.episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self.recent_returns = [deque[float](maxlen=100) for _ in seeds]
        self.recent_lengths = [deque[int](maxlen=100) for _ in seeds]
        self.episodes_finished = [0] * self.num_agents
        self.action_distance_sum = self._no_distance()
        self.action_distance_count = 0
        self.obs: np.ndarray | None = None

    # ---------------------------------------------------------------- episodes
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start new episodes in the envs selected by ``mask`` (all if None)."""
        mask = np.ones(self.num_envs, dtype=bool) if mask is None else mask
        seeds = [self._episode_seed(i) if mask[i] else None for i in range(self.num_envs)]
        obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": mask})
        self.obs = obs if self.obs is None else np.where(mask[:, None], obs, self.obs)
        self.episodes_started += mask
        self.episode_return[mask] = 0.0
        self.episode_length[mask] = 0

    def _agent_envs(self, agent: int) -> slice:
        return slice(agent * self.envs_per_agent, (agent + 1) * self.envs_per_agent)

    def _episode_seed(self, env_index: int) -> int:
        # Env i of agent k starts the episodes of env i in agent k's own run.
        agent, local = divmod(env_index, self.envs_per_agent)
        return episode_seed(self.seeds[agent], local, int(self.episodes_started[env_index]))

    @property
    def at_episode_boundary(self) -> bool:
        """True between episodes (every env about to start a new one)."""
        return bool(np.all(self.episode_length == 0))

    def agent_at_episode_boundary(self, agent: int) -> bool:
        return bool(np.all(self.episode_length[self._agent_envs(agent)] == 0))

    # ---------------------------------------------------------------- stepping
    @torch.no_grad()
    def collect(self, n_steps: int, random_actions: bool = False) -> None:
        """Take ``n_steps`` vector steps (``n_steps * num_envs`` transitions)."""
        if self.obs is None:
            self.reset()
        for _ in range(n_steps):
            self._step(random_actions)

    def _step(self, random_actions: bool) -> None:
        assert self.obs is not None
        k, n = self.num_agents, self.envs_per_agent
        # numpy converts the env's float64 in a fraction of torch's time for a tensor this small
        obs = torch.from_numpy(self.obs.astype(np.float32)).to(self.device, non_blocking=True)
        obs = obs.view(k, n, -1)
        if random_actions:
            action = rng.rand((k, n, self.act_dim), self.generators, device=self.device)
            action = 2.0 * action - 1.0
        else:
            step = self.exploration.act(obs)
            action = step.behaviour
            self.action_distance_sum += self._action_distance(step)
            self.action_distance_count += n
        action_np = action.reshape(k * n, self.act_dim).cpu().numpy()
        next_obs, reward, terminated, truncated, _ = self.envs.step(self.scaler.to_env(action_np))
        self.buffer.add(
            obs, action, reward.reshape(k, n), next_obs.reshape(k, n, -1), terminated.reshape(k, n)
        )
        self.episode_return += reward
        self.episode_length += 1
        self.obs = next_obs
        done = np.logical_or(terminated, truncated)
        if done.any():
            self._end_episodes(done)

    def _no_distance(self) -> Tensor | np.ndarray:
        # A host array on a CPU: adding to it costs less than a torch op; a device tensor
        # elsewhere, so accumulating never waits for the device.
        if self.device.type == "cpu":
            return np.zeros(self.num_agents)
        return torch.zeros(self.num_agents, device=self.device)

    def _action_distance(self, step: ExplorationStep) -> Tensor | np.ndarray:
        """Per agent, the sum over its envs of ||a_behaviour - a_mean||_2: (K,); on a CPU in
        numpy (the four torch operations cost more than the arithmetic), elsewhere on the
        device (no sync)."""
        if self.device.type != "cpu":
            return (step.behaviour - step.mean).norm(dim=-1).sum(dim=1)
        gap = step.behaviour.numpy() - step.mean.numpy()
        return np.sqrt(np.square(gap).sum(axis=-1)).sum(axis=1)

    def _end_episodes(self, done: np.ndarray) -> None:
        for j in np.flatnonzero(done):
            agent = j // self.envs_per_agent
            self.recent_returns[agent].append(float(self.episode_return[j]))
            self.recent_lengths[agent].append(int(self.episode_length[j]))
            self.episodes_finished[agent] += 1
        done_by_agent = torch.as_tensor(done, device=self.device).view(self.num_agents, -1)
        self.exploration.on_episode_end(done_by_agent)
        self.reset(done)

    # ---------------------------------------------------------------- metrics
    def pop_action_distance(self) -> Tensor | None:
        """Per agent, mean ||a_behaviour - a_mean||_2 since the last call: (K,) (None if no
        policy steps)."""
        if self.action_distance_count == 0:
            return None
        mean = torch.as_tensor(self.action_distance_sum / self.action_distance_count)
        self.action_distance_sum = self._no_distance()
        self.action_distance_count = 0
        return mean

    # ---------------------------------------------------------------- resume
    def agent_state_dict(self, agent: int) -> dict:
        """Agent ``agent``'s counters, in the run directory's checkpoint format."""
        return {
            "episodes_started": torch.as_tensor(self.episodes_started[self._agent_envs(agent)]),
            "recent_returns": list(self.recent_returns[agent]),
            "recent_lengths": list(self.recent_lengths[agent]),
            "episodes_finished": self.episodes_finished[agent],
            "at_boundary": self.agent_at_episode_boundary(agent),
        }

    def load_agent_state_dict(self, agent: int, state: dict) -> None:
        """Restore one agent's counters; ``restart_episodes`` then resets every env (an
        interrupted episode is abandoned)."""
        started = state["episodes_started"].numpy().astype(np.int64)
        if len(started) != self.envs_per_agent:
            raise ValueError(f"checkpoint has {len(started)} envs, the run {self.envs_per_agent}")
        if state["at_boundary"]:
            # The episodes that had just been reset never took a step: start them again with
            # the same seeds, exactly as the uninterrupted run did.
            started = started - 1
        self.episodes_started[self._agent_envs(agent)] = started
        self.recent_returns[agent] = deque(state["recent_returns"], maxlen=100)
        self.recent_lengths[agent] = deque(state["recent_lengths"], maxlen=100)
        self.episodes_finished[agent] = int(state["episodes_finished"])

    def restart_episodes(self) -> None:
        self.obs = None
        self.reset()
