"""Environment construction with the checks that turn gymnasium errors into readable ones."""

from __future__ import annotations

import importlib
import os
import sys

import gymnasium as gym
import numpy as np

from vadam_rl.errors import UserError


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``, or a UserError naming close matches.

    ``module:EnvName-v0`` imports ``module`` first (it registers the env), as ``gym.make``
    does: custom environments work from the command line.
    """
    module, colon, name = env_id.partition(":")
    if colon:
        if not module or module.startswith(".") or not name:  # (import_module would raise)
            raise UserError(f"environment {env_id!r}: expected module:EnvName-v0 (absolute module)")
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"cannot import {module!r} for environment {env_id!r}: {err}") from None
    try:
        return gym.spec(name if colon else env_id)
    except gym.error.Error:
        close = [known for known in gym.registry if env_id.split("-")[0].lower() in known.lower()]
        hint = f"; did you mean {', '.join(sorted(close)[:5])}?" if close else ""
        raise UserError(f"unknown environment id {env_id!r}{hint}") from None


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One gymnasium env with a bounded Box action space and a flat Box observation space."""
    check_env_id(env_id)
    quiet_mujoco_deprecations()
    try:
        env = gym.make(env_id, render_mode=render_mode)
    except gym.error.DependencyNotInstalled as err:
        raise UserError(f"environment {env_id!r} needs a missing dependency: {err}") from None
    except (RuntimeError, AttributeError, ImportError) as err:
        # `import mujoco` fails this way when MUJOCO_GL names a backend that isn't installed.
        gl = os.environ.get("MUJOCO_GL")
        hint = f" (MUJOCO_GL={gl!r}: try MUJOCO_GL=egl or unset it)" if gl else ""
        raise UserError(f"cannot create environment {env_id!r}: {err}{hint}") from None
    check_spaces(env_id, env.observation_space, env.action_space)
    return env


# Deprecations MuJoCo warns about in the XML files gymnasium ships (not the user's to fix):
# printed at every env creation, three times per run. Other MuJoCo warnings pass through.
MUJOCO_QUIET = ("compiler attribute 'settotalmass' is deprecated",)


def quiet_mujoco_deprecations() -> None:
    """Install a MuJoCo warning handler that drops ``MUJOCO_QUIET`` and prints the rest as
    MuJoCo does; once, and only where nobody installed a handler of their own."""
    try:
        import mujoco
    except ImportError:  # (not every env needs MuJoCo)
        return
    if mujoco.get_mju_user_warning() is not None:
        return

    def handler(message: str) -> None:
        if not message.startswith(MUJOCO_QUIET):
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(handler)


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """DDPG needs continuous, bounded actions and flat vector observations."""
    if not isinstance(action_space, gym.spaces.Box):
        raise UserError(
            f"environment {env_id!r} has a {type(action_space).__name__} action space; "
            "DDPG needs a continuous Box action space"
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise UserError(f"environment {env_id!r} has an unbounded action space")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise UserError(
            f"environment {env_id!r} has observations of type "
            f"{type(observation_space).__name__} {getattr(observation_space, 'shape', '')}; "
            "vadam-rl's MLP policies need a flat Box observation space"
        )
