"""A Pendulum that raises after 2500 env steps (training and evaluation together): an error
inside training that no check of ours anticipates (test_cli, ``--env
crashing_env:CrashingPendulum-v0``)."""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.classic_control.pendulum import PendulumEnv


class CrashingPendulum(PendulumEnv):
    steps = 0  # across episodes and instances: the process's env steps

    def step(self, action):
        type(self).steps += 1
        if type(self).steps > 2500:
            raise RuntimeError("the simulator lost its connection")
        return super().step(action)


gym.register("CrashingPendulum-v0", entry_point=CrashingPendulum, max_episode_steps=200)
