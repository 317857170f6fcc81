"""The evaluator: deterministic episodes, SB3's evaluate_policy semantics, and mp4 recording."""

from __future__ import annotations

import functools
import gc
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from stable_baselines3 import DDPG
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from vadam_rl.agent.networks import Actor
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.evaluation import EvalResult, evaluate, record_video


class RecordActions(gym.Wrapper):
    """Keeps every action the env receives."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action))
        return super().step(action)


def constant_policy(value: float, act_dim: int):
    return lambda obs: torch.full((obs.shape[0], act_dim), value)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_evaluate_equals_sb3_evaluate_policy_on_the_same_seed(env_id):
    model = DDPG("MlpPolicy", env_id, policy_kwargs={"net_arch": [32, 32]}, device="cpu")
    sb3_returns, sb3_lengths = evaluate_policy(
        model,
        make_vec_env(env_id, n_envs=1, seed=7),
        n_eval_episodes=3,
        deterministic=True,
        return_episode_rewards=True,
    )
    result = evaluate(model.policy.actor, make_env(env_id), episodes=3, seed=7, device="cpu")
    assert result.lengths.tolist() == sb3_lengths
    # SB3's Monitor rounds each return to 6 decimals; the trajectories themselves are identical.
    np.testing.assert_allclose(result.returns, sb3_returns, rtol=0, atol=1e-5)
    assert result.mean_return == pytest.approx(np.mean(sb3_returns), abs=1e-5)


def test_evaluate_repeats_itself_on_a_seed_and_varies_across_seeds():
    torch.manual_seed(0)
    actor = Actor(3, 1, [16])
    env = make_env("Pendulum-v1")
    first = evaluate(actor, env, 3, seed=1)
    np.testing.assert_array_equal(first.returns, evaluate(actor, env, 3, seed=1).returns)
    assert not np.array_equal(first.returns, evaluate(actor, env, 3, seed=2).returns)
    assert len(set(first.returns.tolist())) == 3  # later episodes start from unseeded resets


@pytest.mark.parametrize(("squashed", "expected"), [(1.0, 2.0), (-1.0, -2.0), (0.0, 0.0)])
def test_evaluate_rescales_squashed_actions_to_the_box_in_its_dtype(squashed, expected):
    env = RecordActions(make_env("Pendulum-v1"))  # Box(-2, 2, (1,), float32)
    evaluate(constant_policy(squashed, 1), env, 1, seed=0, max_episode_steps=5)
    assert len(env.actions) == 5
    for action in env.actions:
        assert action.dtype == np.float32 and action.tolist() == [expected]


def test_evaluate_counts_episode_lengths_and_cuts_episodes_at_max_steps():
    env = make_env("Pendulum-v1")  # always truncated after 200 steps
    assert evaluate(constant_policy(0.0, 1), env, 2, seed=0).lengths.tolist() == [200, 200]
    short = evaluate(constant_policy(0.0, 1), env, 2, seed=0, max_episode_steps=7)
    assert short.lengths.tolist() == [7, 7]


def test_evaluate_tracks_no_gradients_and_feeds_float32_batches_on_the_device():
    seen = []

    def policy(obs):
        seen.append((torch.is_grad_enabled(), obs.dtype, tuple(obs.shape), obs.device.type))
        return torch.zeros(obs.shape[0], 1)

    evaluate(policy, make_env("Pendulum-v1"), 1, seed=0, device="cpu", max_episode_steps=3)
    assert seen == [(False, torch.float32, (1, 3), "cpu")] * 3


def test_evaluate_rejects_zero_episodes():
    with pytest.raises(ValueError, match="episodes"):
        evaluate(constant_policy(0.0, 1), make_env("Pendulum-v1"), 0, seed=0)


def test_eval_result_reports_mean_population_std_and_mean_length():
    result = EvalResult(returns=np.array([1.0, 3.0]), lengths=np.array([10, 20]))
    assert (result.mean_return, result.std_return, result.mean_length) == (2.0, 1.0, 15.0)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


@functools.cache
def egl_renders() -> bool:
    """Whether MuJoCo can render offscreen with EGL here (in a throwaway process)."""
    probe = (
        "import gymnasium as gym\n"
        "env = gym.make('HalfCheetah-v5', render_mode='rgb_array', width=32, height=32)\n"
        "env.reset(seed=0)\n"
        "assert env.render().shape == (32, 32, 3)\n"
    )
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return (
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0
    )


def test_record_video_writes_an_mp4_of_one_episode(tmp_path, monkeypatch):
    pytest.importorskip("moviepy", reason="recording needs moviepy (pip install 'vadam-rl[video]')")
    if not egl_renders():
        pytest.skip("MuJoCo cannot render offscreen with EGL on this machine (no libEGL/GPU)")
    monkeypatch.setenv("MUJOCO_GL", "egl")  # restored afterwards; then exercise the default:
    monkeypatch.delenv("MUJOCO_GL")  # with no display, record_video picks EGL itself
    monkeypatch.delenv("DISPLAY", raising=False)
    torch.manual_seed(0)
    path = tmp_path / "videos" / "cheetah.mp4"
    result = record_video(Actor(17, 6, [32]), "HalfCheetah-v5", path, seed=0, max_steps=20)
    assert result.lengths.tolist() == [20]
    data = path.read_bytes()
    assert len(data) > 1000 and data[4:8] == b"ftyp"  # an MP4 container
    assert os.listdir(path.parent) == ["cheetah.mp4"]  # the temp folder is gone


def test_record_video_without_moviepy_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # makes `import moviepy` fail
    with pytest.raises(UserError, match="moviepy"):
        record_video(Actor(3, 1, [8]), "Pendulum-v1", tmp_path / "out.mp4", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_record_video_with_an_unknown_mujoco_gl_is_a_user_error(tmp_path, monkeypatch):
    pytest.importorskip("moviepy")
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(UserError, match="use egl, osmesa or glfw"):
        record_video(Actor(17, 6, [8]), "HalfCheetah-v5", tmp_path / "out.mp4", seed=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_record_video_when_the_gl_context_fails_is_one_user_error_and_no_noise(
    tmp_path, monkeypatch
):
    pytest.importorskip("moviepy")
    from gymnasium.envs.mujoco import mujoco_rendering

    def no_device(width, height):
        raise RuntimeError("no EGL device\nsecond line")

    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setitem(mujoco_rendering._ALL_RENDERERS, "egl", no_device)
    with pytest.raises(UserError, match=r"cannot render .*RuntimeError: no EGL device; MuJoCo"):
        record_video(Actor(17, 6, [8]), "HalfCheetah-v5", tmp_path / "out.mp4", seed=0)
    gc.collect()  # the half-built viewer's __del__ must not raise (it would warn here)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(bool(os.environ.get("DISPLAY")), reason="GLFW works where there is a display")
def test_record_video_with_glfw_and_no_display_fails_in_one_line(tmp_path):
    pytest.importorskip("moviepy")
    script = (
        "import sys\n"
        "from vadam_rl.errors import UserError\n"
        "from vadam_rl.evaluation import record_video\n"
        "from vadam_rl.agent.networks import Actor\n"
        "try:\n"
        "    record_video(Actor(17, 6, [8]), 'HalfCheetah-v5', 'out.mp4', seed=0)\n"
        "except UserError as err:\n"
        "    sys.exit(f'vadam-rl: {err}')\n"
    )
    env = {**os.environ, "MUJOCO_GL": "glfw"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    ours = [line for line in result.stderr.splitlines() if line.startswith("vadam-rl:")]
    assert len(ours) == 1 and "cannot render HalfCheetah-v5 offscreen (MUJOCO_GL=glfw)" in ours[0]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] in ([], ["MUJOCO_LOG.TXT"])  # MuJoCo's own log


def test_mujocos_deprecation_of_gymnasiums_own_xml_is_silenced_and_nothing_else():
    code = (
        "import mujoco\n"
        "from vadam_rl.envs import make_env\n"
        "make_env('HalfCheetah-v5').close()\n"
        "mujoco.get_mju_user_warning()('Nan, Inf or huge value in QACC at DOF 0')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "settotalmass" not in done.stdout + done.stderr
    assert "WARNING: Nan, Inf or huge value in QACC" in done.stderr


@pytest.mark.expensive
def test_eval_records_a_clip_of_video_steps_from_the_cli(tmp_path):
    pytest.importorskip("moviepy", reason="recording needs moviepy (pip install 'vadam-rl[video]')")
    if not egl_renders():
        pytest.skip("MuJoCo cannot render offscreen with EGL on this machine (no libEGL/GPU)")
    run_cli(
        "train", "--agent", "ddpg-adam-plain", "--env", "HalfCheetah-v5", "--total-steps", "200",
        "--log-dir", str(tmp_path), "--run-name", "run", "--no-progress", *TINY,
        "--set", "learning_starts=100", "--set", "eval_every=0", "--set", "buffer_size=500",
        check=True,
    )  # fmt: skip
    clip = tmp_path / "clip.mp4"
    done = run_cli(
        "eval", str(tmp_path / "run"), "--episodes", "1", "--video", str(clip), "--video-steps",
        "15", check=True,
    )  # fmt: skip
    assert f"wrote {clip} (15 steps," in done.stdout
    assert clip.read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video", "x.mp4", "--video-steps", "0"], "--video-steps must be >= 1, got 0"),
        (["--video-steps", "20"], "--video-steps needs --video FILE.mp4"),
    ],
)
def test_eval_refuses_a_clip_it_cannot_record_in_one_line(tmp_path, args, message):
    done = run_cli("eval", str(tmp_path), *args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"vadam-rl: error: {message}", done.stderr
