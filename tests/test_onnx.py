"""ONNX export of a run's mean actor, checked by onnxruntime against an independent reference:
the torch ``Actor`` and ``ActionScaler.to_env`` in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from sb3_helpers import files_under, make_random_run

from vadam_rl.agent.networks import ActionScaler
from vadam_rl.envs import make_env

onnxruntime = pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytest.importorskip("onnxscript", reason="needs the onnx extra")


def reference_actions(run, step: int, obs: np.ndarray) -> np.ndarray:
    """What ``vadam-rl eval`` acts with: the actor in float64, mapped to the env's bounds."""
    env = make_env(run.config.env_id)
    scaler = ActionScaler(env.action_space.low, env.action_space.high)
    env.close()
    actor = run.actor(step).double()
    with torch.no_grad():
        squashed = actor(torch.from_numpy(obs).double()).numpy()
    return scaler.to_env(squashed)


@pytest.mark.parametrize(("env_id", "sizes"), [("Pendulum-v1", [16, 16]), ("HalfCheetah-v5", [64])])
def test_the_onnx_actor_acts_like_the_run_on_1000_observations(tmp_path: Path, env_id, sizes):
    from vadam_rl.onnx_export import export_onnx

    run = make_random_run(tmp_path / "run", env_id, sizes)
    done = export_onnx(run.path, tmp_path / "policy.onnx")  # "last": the step-2000 policy
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    obs_dim = session.get_inputs()[0].shape[1]
    obs = (np.random.default_rng(1).normal(size=(1000, obs_dim)) * 3).astype(np.float32)
    (got,) = session.run(["action"], {"obs": obs})
    want = reference_actions(run, 2000, obs.astype(np.float64))
    # float32 through the actor (|error| ~ 1e-7 of the [-1, 1] output) times half the
    # action range: Pendulum's is 2, HalfCheetah's 1.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert done.max_difference <= 1e-5


def test_export_onnx_from_the_cli_writes_only_the_model(tmp_path: Path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16], best_step=1000)
    before = files_under(run.path)
    out = tmp_path / "best.onnx"
    result = run_cli("export", str(run.path), "--checkpoint", "best", "--onnx", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "onnxruntime" in result.stdout
    assert files_under(run.path) == before  # no model.zip as a side effect
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    obs = np.zeros((5, 3), dtype=np.float32)
    (got,) = session.run(["action"], {"obs": obs})
    np.testing.assert_allclose(got, reference_actions(run, 1000, obs.astype(np.float64)), atol=1e-5)


def test_a_bad_onnx_path_is_one_line_and_writes_nothing(tmp_path: Path):
    run = make_random_run(tmp_path / "run", "Pendulum-v1", [8])
    before = files_under(tmp_path)
    for bad in ("policy.zip", "missing-folder/policy.onnx"):
        result = run_cli("export", str(run.path), "--onnx", str(tmp_path / bad))
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and ".onnx" in result.stderr
    assert files_under(tmp_path) == before
