"""A researcher's own environments, as ``--env user_envs:PointEnv-v0`` imports them
(test_envs): a point mass whose constructor takes no ``render_mode`` (gymnasium.make makes it
so), one whose constructor raises in the researcher's code, and one with no action."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PointEnv(gym.Env):
    """A point on a line pushed towards 0; no ``render_mode`` argument, no rendering."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.position = np.zeros(1, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self.position.copy(), {}

    def step(self, action):
        self.position = np.clip(self.position + 0.1 * action, -10, 10).astype(np.float32)
        return self.position.copy(), -float(abs(self.position[0])), False, False, {}


def read_track(path: str) -> str:
    raise FileNotFoundError(f"track file {path} not found")


class BrokenEnv(PointEnv):
    """Its constructor fails in the researcher's own helper."""

    def __init__(self) -> None:
        super().__init__()
        self.track = read_track("tracks/oval.csv")


class NoActionEnv(PointEnv):
    """Nothing to act on: a Box action space with no dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)


gym.register("PointEnv-v0", entry_point=PointEnv, max_episode_steps=50)
gym.register("NoActionEnv-v0", entry_point=NoActionEnv, max_episode_steps=50)
gym.register("BrokenEnv-v0", entry_point=BrokenEnv, max_episode_steps=50)
