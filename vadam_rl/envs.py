"""Environment construction with the checks that turn gymnasium errors into readable ones."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import traceback
from pathlib import Path

import gymnasium as gym
import numpy as np

from vadam_rl.errors import UserCodeError, UserError


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
        except Exception as err:
            missing = isinstance(err, ModuleNotFoundError) and err.name is not None
            if missing and f"{module}.".startswith(f"{err.name}."):  # no such module
                raise UserError(
                    f"cannot import {module!r} for environment {env_id!r}: {err}"
                ) from None
            raise _their_error(f"importing {module!r} for environment {env_id!r}", err) from None
    try:
        return gym.spec(name if colon else env_id)
    except gym.error.Error:
        close = closest_ids(env_id, list(gym.registry))
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown environment id {env_id!r}{hint}") from None


def closest_ids(env_id: str, known: list[str], count: int = 5) -> list[str]:
    """The ``count`` registered ids most like ``env_id`` (``Pendulum-v2``: ``Pendulum-v1``
    first), among those that share its name or read much like it."""
    name = env_id.split("-")[0].lower()

    def similarity(other: str) -> float:
        return difflib.SequenceMatcher(None, env_id.lower(), other.lower()).ratio()

    candidates = [other for other in known if name in other.lower() or similarity(other) >= 0.7]
    return sorted(candidates, key=lambda other: (-similarity(other), other))[:count]


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One gymnasium env with a bounded Box action space and a flat Box observation space."""
    spec = check_env_id(env_id)
    quiet_mujoco_deprecations()
    # As gymnasium.make makes it: an env class need not take a render_mode it was not asked for.
    asked = {} if render_mode is None else {"render_mode": render_mode}
    try:
        env = gym.make(env_id, **asked)
    except gym.error.DependencyNotInstalled as err:
        raise UserError(f"environment {env_id!r} needs a missing dependency: {err}") from None
    except Exception as err:
        if _is_theirs(spec) and _their_frames(err):
            raise _their_error(f"creating environment {env_id!r}", err) from None
        if not isinstance(err, (RuntimeError, AttributeError, ImportError)):
            raise
        # `import mujoco` fails this way when MUJOCO_GL names a backend that isn't installed.
        gl = os.environ.get("MUJOCO_GL")
        hint = f" (MUJOCO_GL={gl!r}: try MUJOCO_GL=egl or unset it)" if gl else ""
        raise UserError(f"cannot create environment {env_id!r}: {err}{hint}") from None
    check_spaces(env_id, env.observation_space, env.action_space)
    return env


def _is_theirs(spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether the env's class is the user's (or another package's), not gymnasium's."""
    entry = spec.entry_point
    module = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    return not (module or "").startswith("gymnasium.")


_NOT_THEIRS = (
    str(Path(gym.__file__).parent),
    str(Path(__file__).parent),
    str(Path(importlib.__file__).parent),
    "<frozen importlib",
)


def _their_frames(err: BaseException) -> traceback.StackSummary:
    """The frames of ``err``'s traceback that are the user's code: from the first frame that
    is neither vadam-rl's, gymnasium's nor the import machinery's."""
    frames = traceback.extract_tb(err.__traceback__)
    for start, frame in enumerate(frames):
        if not frame.filename.startswith(_NOT_THEIRS):
            return traceback.StackSummary.from_list(frames[start:])
    return traceback.StackSummary.from_list([])


def _their_error(doing: str, err: BaseException) -> UserError:
    """``doing`` raised in the user's code: one line, with the traceback of their code."""
    frames = _their_frames(err)
    line = f"{doing} raised {type(err).__name__}: {err}"
    if not frames:
        return UserError(line)
    heading = "Traceback (most recent call last), your code only:\n"
    trace = "".join([heading, *frames.format(), *traceback.format_exception_only(err)])
    return UserCodeError(f"{line} (its traceback follows)", trace)


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
    if action_space.shape == () or 0 in action_space.shape:
        raise UserError(
            f"environment {env_id!r} has an action space of shape {action_space.shape}; "
            "DDPG needs at least one action dimension"
        )
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise UserError(
            f"environment {env_id!r} has observations of type "
            f"{type(observation_space).__name__} {getattr(observation_space, 'shape', '')}; "
            "vadam-rl's MLP policies need a flat Box observation space"
        )
    if observation_space.shape[0] == 0:
        raise UserError(f"environment {env_id!r} has empty observations (shape (0,))")
