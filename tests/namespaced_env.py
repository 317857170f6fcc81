"""Pendulum under a namespace, ``vadam-test/Pendulum-v1`` (``--env
namespaced_env:vadam-test/Pendulum-v1``): the ``/`` of such ids must not nest run directories
(test_compare)."""

from __future__ import annotations

import gymnasium as gym

gym.register(
    "vadam-test/Pendulum-v1",
    entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
    max_episode_steps=200,
)
