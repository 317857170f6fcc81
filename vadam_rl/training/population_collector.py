"""The population's rollout collector: K agents x n envs in one vector env, stepped together.

Env j = k*n + i is agent k's env i; its episodes start from
``reset(seed=episode_seed(seed_k, i, episode))``, exactly as in agent k's single run, and
agent k's random warm-up actions come from its own generator. Episode statistics are kept
per agent, in the single-run collector's checkpoint format.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import Tensor

from vadam_rl import rng
from vadam_rl.agent.exploration import Exploration
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.buffer import PER_AGENT_STATE, PopulationBuffer
from vadam_rl.training.collector import RolloutCollector, episode_seed


class PopulationCollector(RolloutCollector):
    """``RolloutCollector`` for K agents x n envs: per-agent episode seeds, warm-up actions,
    episode statistics and checkpoint state; one batched act for all agents."""

    def __init__(
        self,
        envs: VectorEnv,
        buffer: PopulationBuffer,
        exploration: Exploration,
        seeds: Sequence[int],
        device: torch.device,
        generators: AgentGenerators,
    ) -> None:
        if envs.num_envs % len(seeds):
            raise ValueError(f"{envs.num_envs} envs cannot be split among {len(seeds)} agents")
        super().__init__(envs, buffer, exploration, seeds[0], device, generators)  # type: ignore[arg-type]
        self.num_agents = len(seeds)
        self.seeds = list(seeds)
        self.envs_per_agent = envs.num_envs // self.num_agents
        self.recent_returns = [deque[float](maxlen=100) for _ in seeds]  # type: ignore[assignment]
        self.recent_lengths = [deque[int](maxlen=100) for _ in seeds]  # type: ignore[assignment]
        self.episodes_finished = [0] * self.num_agents  # type: ignore[assignment]
        self.action_distance_sum = torch.zeros(self.num_agents, device=device)

    # ---------------------------------------------------------------- episodes
    def _agent_envs(self, agent: int) -> slice:
        return slice(agent * self.envs_per_agent, (agent + 1) * self.envs_per_agent)

    def _episode_seed(self, env_index: int) -> int:
        # Env i of agent k starts the episodes of env i in agent k's single run.
        agent, local = divmod(env_index, self.envs_per_agent)
        return episode_seed(self.seeds[agent], local, int(self.episodes_started[env_index]))

    def agent_at_episode_boundary(self, agent: int) -> bool:
        return bool(np.all(self.episode_length[self._agent_envs(agent)] == 0))

    # ---------------------------------------------------------------- stepping
    def _step(self, random_actions: bool) -> None:
        assert self.obs is not None
        k, n = self.num_agents, self.envs_per_agent
        obs = torch.as_tensor(self.obs, dtype=torch.float32).to(self.device, non_blocking=True)
        obs = obs.view(k, n, -1)
        if random_actions:
            action = 2.0 * rng.rand((k, n, self.act_dim), self.generator, device=self.device)
            action = action - 1.0
        else:
            step = self.exploration.act(obs)
            action = step.behaviour
            self.action_distance_sum += (step.behaviour - step.mean).norm(dim=-1).sum(dim=1)
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
        """Per agent, mean ||a_behaviour - a_mean||_2 since the last call: (K,)."""
        if self.action_distance_count == 0:
            return None
        mean = self.action_distance_sum / self.action_distance_count
        self.action_distance_sum = torch.zeros(self.num_agents, device=self.device)
        self.action_distance_count = 0
        return mean

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        raise TypeError(PER_AGENT_STATE.format(type(self).__name__))

    def load_state_dict(self, state: dict) -> None:
        raise TypeError(PER_AGENT_STATE.format(type(self).__name__))

    def agent_state_dict(self, agent: int) -> dict:
        """Agent ``agent``'s counters in the single-run format (``RolloutCollector``)."""
        return {
            "episodes_started": torch.as_tensor(self.episodes_started[self._agent_envs(agent)]),
            "recent_returns": list(self.recent_returns[agent]),
            "recent_lengths": list(self.recent_lengths[agent]),
            "episodes_finished": self.episodes_finished[agent],
            "at_boundary": self.agent_at_episode_boundary(agent),
        }

    def load_agent_state_dict(self, agent: int, state: dict) -> None:
        """Restore one agent's counters; ``restart_episodes`` then resets every env."""
        started = state["episodes_started"].numpy().astype(np.int64)
        if len(started) != self.envs_per_agent:
            raise ValueError(f"checkpoint has {len(started)} envs, the run {self.envs_per_agent}")
        if state["at_boundary"]:
            started = started - 1  # as RolloutCollector.load_state_dict: same seeds again
        self.episodes_started[self._agent_envs(agent)] = started
        self.recent_returns[agent] = deque(state["recent_returns"], maxlen=100)
        self.recent_lengths[agent] = deque(state["recent_lengths"], maxlen=100)
        self.episodes_finished[agent] = int(state["episodes_finished"])

    def restart_episodes(self) -> None:
        self.obs = None
        self.reset()
