"""Deterministic evaluation of a policy, and recording one episode to an mp4.

``evaluate`` is episode-for-episode the same as Stable-Baselines3's
``evaluate_policy(model, make_vec_env(env_id, seed=seed), deterministic=True)``: the first
episode starts from ``env.reset(seed=seed)``, later ones from unseeded resets (what a seeded
``DummyVecEnv`` does when it auto-resets), and squashed actions are rescaled to the Box in the
action space's dtype, as SB3's ``predict`` does. So on the same seed both report the same
returns for the same weights.
"""

from __future__ import annotations

import logging
import os
import tempfile
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from vadam_rl.agent.networks import ActionScaler
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError

logger = logging.getLogger(__name__)

Policy = Callable[[Tensor], Tensor] | nn.Module
"""obs: (batch, obs_dim) float32 on the evaluation device -> squashed action (batch, act_dim)."""


@dataclass
class EvalResult:
    """Undiscounted return and length of each evaluated episode, in the order they ran."""

    returns: np.ndarray
    """(episodes,) float64: sum of the env's rewards per episode."""
    lengths: np.ndarray
    """(episodes,) int64: env steps per episode."""

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        """Population std (``np.std``), as SB3's ``evaluate_policy`` reports it."""
        return float(np.std(self.returns))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))


def evaluate(
    policy: Policy,
    env: gym.Env,
    episodes: int,
    seed: int | None,
    device: torch.device | str = "cpu",
    *,
    max_episode_steps: int | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes with the deterministic ``policy`` and return their returns.

    The policy sees observations as a (1, obs_dim) float32 tensor on ``device`` and returns
    squashed actions in [-1, 1]; ``ActionScaler`` maps them to the env's Box here, at the env
    boundary. The first episode starts from ``env.reset(seed=seed)``, the rest from unseeded
    resets, so the episode sequence equals SB3's ``evaluate_policy`` on a seeded vec env.
    ``max_episode_steps`` cuts episodes short (for videos and quick checks); None runs each
    episode until the env terminates or truncates it. Gradients are never tracked.
    """
    if episodes < 1:
        raise ValueError(f"Invalid number of episodes: {episodes}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"Invalid max_episode_steps: {max_episode_steps}")
    action_space = env.action_space
    assert isinstance(action_space, gym.spaces.Box), "DDPG policies need a Box action space"
    scaler = ActionScaler(action_space.low, action_space.high)
    returns = np.zeros(episodes, dtype=np.float64)
    lengths = np.zeros(episodes, dtype=np.int64)
    with torch.inference_mode():
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            done = False
            while not done:
                obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=device)
                squashed = policy(obs_tensor.unsqueeze(0))[0].cpu().numpy()
                # SB3 rescales the float32 actor output without widening it to float64; feeding
                # ActionScaler float32 and casting to the Box dtype reproduces its env actions.
                action = scaler.to_env(squashed).astype(action_space.dtype)
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[episode] += float(reward)
                lengths[episode] += 1
                done = terminated or truncated
                if max_episode_steps is not None and lengths[episode] >= max_episode_steps:
                    done = True
    return EvalResult(returns=returns, lengths=lengths)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def record_video(
    policy: Policy,
    env_id: str,
    path: Path,
    seed: int | None,
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
) -> EvalResult:
    """Record one deterministic episode of ``policy`` on ``env_id`` to the mp4 file ``path``.

    Uses gymnasium's ``RecordVideo`` (needs moviepy: ``pip install 'vadam-rl[video]'``) and the
    env's ``rgb_array`` rendering; MuJoCo envs render offscreen through ``MUJOCO_GL`` (egl or
    osmesa). On a machine without a display and with ``MUJOCO_GL`` unset, EGL is chosen, since
    MuJoCo's default (GLFW) needs a display. Frames are encoded in a temporary folder next to
    ``path`` and the finished mp4 is moved into place, so ``path`` is never half-written.
    Returns the recorded episode's return and length. Raises ``UserError`` without moviepy or
    without a working renderer.
    """
    path = Path(path)
    check_video_output(path)
    _choose_mujoco_gl()
    env = _make_rendering_env(env_id, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
            frames_dir = Path(tmp) / "video"  # RecordVideo warns when its folder already exists
            video_env = gym.wrappers.RecordVideo(
                env,
                video_folder=str(frames_dir),
                episode_trigger=lambda episode_id: episode_id == 0,
                name_prefix="episode",
                disable_logger=True,
            )
            result = evaluate(policy, video_env, 1, seed, device, max_episode_steps=max_steps)
            video_env.close()  # stops the recording and encodes the mp4
            videos = sorted(frames_dir.glob("*.mp4"))
            if not videos or videos[0].stat().st_size == 0:
                raise UserError(f"recording {env_id} produced no video frames")
            os.replace(videos[0], path)
    finally:
        env.close()
    return result


def check_video_output(path: Path) -> None:
    """UserError unless ``path`` is an .mp4 name and moviepy (RecordVideo's encoder) imports."""
    if Path(path).suffix.lower() != ".mp4":
        raise UserError(f"video output must be an .mp4 file, got {path}")
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise UserError(
            "recording a video needs moviepy: pip install 'vadam-rl[video]' (or moviepy)"
        ) from None


MUJOCO_GL_BACKENDS = ("egl", "osmesa", "glfw")


def _choose_mujoco_gl() -> None:
    """Check ``MUJOCO_GL``; with no display and none set, choose EGL.

    MuJoCo's default (GLFW) needs a display and fails with a FatalError instead of falling back,
    so headless machines get EGL; an explicit, valid ``MUJOCO_GL`` is always respected.
    """
    backend = os.environ.get("MUJOCO_GL")
    if backend is not None and backend.lower() not in MUJOCO_GL_BACKENDS:
        raise UserError(f"MUJOCO_GL={backend!r} is not a MuJoCo renderer: use egl, osmesa or glfw")
    headless = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    if backend is None and headless:
        logger.info("no display and MUJOCO_GL unset: rendering with MUJOCO_GL=egl")
        os.environ["MUJOCO_GL"] = "egl"


def _make_rendering_env(env_id: str, seed: int | None) -> gym.Env:
    """``env_id`` in rgb_array mode, after one frame rendered; GL failures become a UserError."""
    env = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GLFW warns before it fails; our message says it all
            env = make_env(env_id, render_mode="rgb_array")  # importing mujoco loads the GL
            env.reset(seed=seed)
            frame = env.render()
    except UserError:
        raise
    except Exception as err:  # GL stacks fail with RuntimeError, FatalError, ImportError, ...
        _defuse_half_built_viewer(err)
        if env is not None:
            env.close()
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise UserError(
            f"cannot render {env_id} offscreen (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): "
            f"{type(err).__name__}: {first_line}; MuJoCo needs MUJOCO_GL=egl (libEGL, e.g. "
            "apt-get install libegl1) or MUJOCO_GL=osmesa (libosmesa6)"
        ) from None
    if not isinstance(frame, np.ndarray):
        env.close()
        raise UserError(f"{env_id} does not render rgb_array frames (got {type(frame).__name__})")
    return env


def _defuse_half_built_viewer(err: BaseException) -> None:
    # gymnasium's OffScreenViewer.__del__ frees a GL context it assumes exists; when creating the
    # context failed, that prints an "Exception ignored" traceback after our one-line error.
    for frame, _ in traceback.walk_tb(err.__traceback__):
        viewer = frame.f_locals.get("self")
        if type(viewer).__name__ == "OffScreenViewer" and not hasattr(viewer, "opengl_context"):
            viewer.opengl_context = types.SimpleNamespace(free=lambda: None)
