"""Making environments: custom ones exactly as gymnasium.make makes them, and the user's own
errors told with the traceback of their code."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from conftest import run_cli

from vadam_rl.envs import check_env_id, make_env
from vadam_rl.errors import UserCodeError, UserError

HERE = Path(__file__).parent


def test_a_custom_env_whose_constructor_takes_no_render_mode_is_made():
    env = make_env("user_envs:PointEnv-v0")
    try:
        assert env.observation_space.shape == (1,)
        assert type(env.unwrapped) is type(gym.make("user_envs:PointEnv-v0").unwrapped)
    finally:
        env.close()


def test_a_custom_env_module_that_raises_is_told_with_its_own_traceback():
    with pytest.raises(UserCodeError) as raised:
        check_env_id("raising_env_module:Any-v0")
    assert "importing 'raising_env_module'" in str(raised.value)
    assert "ValueError" in str(raised.value)
    trace = raised.value.trace
    assert "raising_env_module.py" in trace and "load_settings" in trace
    assert "importlib" not in trace and "vadam_rl" not in trace


def test_a_custom_env_constructor_that_raises_is_one_line_then_its_own_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    result = run_cli(
        "train", "--env", "user_envs:BrokenEnv-v0", "--log-dir", str(tmp_path / "runs")
    )
    assert result.returncode == 2
    first, *trace = result.stderr.strip().splitlines()
    assert first.startswith("vadam-rl: error: creating environment 'user_envs:BrokenEnv-v0'")
    assert "FileNotFoundError" in first
    assert any("user_envs.py" in line and "read_track" in line for line in trace)
    assert not any("gymnasium" in line or "vadam_rl" in line for line in trace)
    assert not (tmp_path / "runs").exists()


def test_an_unknown_env_id_suggests_the_most_similar_ids_first():
    with pytest.raises(UserError, match=r"did you mean Pendulum-v1, "):
        check_env_id("Pendulum-v2")


def test_an_env_whose_action_box_has_no_dimension_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    result = run_cli(
        "train", "--env", "user_envs:NoActionEnv-v0", "--log-dir", str(tmp_path / "runs")
    )
    assert result.returncode == 2
    assert "at least one action dimension" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
