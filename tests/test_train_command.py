"""What ``train`` and ``compare`` read from their options before anything runs: the seeds
(one syntax in both commands), a budget that would end before learning starts, and the
run directory's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from vadam_rl import run_dir as layout
from vadam_rl.commands.compare import plan_grid
from vadam_rl.commands.train import _new_run_dir, check_learning_happens, seed_values
from vadam_rl.config import load_preset
from vadam_rl.errors import UserError


def test_seeds_is_a_list_or_range_and_a_single_number_is_that_seed():
    assert seed_values("0-4", None) == [0, 1, 2, 3, 4]
    assert seed_values("0,2,7", None) == [0, 2, 7]
    assert seed_values("2", None) == [2]


def test_num_seeds_counts_seeds_from_zero():
    assert seed_values(None, 3) == [0, 1, 2]


def test_seeds_and_num_seeds_together_are_refused():
    with pytest.raises(UserError, match="not both"):
        seed_values("0-1", 2)


@pytest.mark.parametrize("spec", ["0-", "a", "3-1", "-1"])
def test_a_malformed_seed_list_is_refused(spec: str):
    with pytest.raises(UserError, match="expected seeds like 0-4"):
        seed_values(spec, None)


def test_compare_takes_a_seed_range_as_train_does(tmp_path: Path):
    # (an unreachable Ray address stops the grid after its plan, before anything is written)
    result = run_cli(
        "compare", "--seeds", "3-5", "--presets", "ddpg-adam-plain", "--env", "Pendulum-v1",
        "--total-steps", "2000", "--backend", "ray", "--ray-address", "127.0.0.1:1",
        "--runs-dir", str(tmp_path / "grid"),
    )  # fmt: skip
    assert "1 presets x 3 seeds" in result.stdout
    assert result.returncode == 2 and not (tmp_path / "grid").exists()


def test_a_budget_that_ends_before_learning_starts_is_refused_with_both_numbers():
    config = load_preset("ddpg-vadam-zoo", "HalfCheetah-v5")
    config.total_steps = 2000
    with pytest.raises(UserError, match=r"total_steps 2000 .* \(learning_starts 10000\)"):
        check_learning_happens(config, [])


def test_a_budget_before_learning_starts_runs_when_learning_starts_is_set_explicitly():
    config = load_preset("ddpg-vadam-zoo", "HalfCheetah-v5")
    config.total_steps = 2000
    check_learning_happens(config, ["learning_starts=10000"])


def test_compare_refuses_a_grid_whose_budget_ends_before_learning_starts(tmp_path: Path):
    with pytest.raises(UserError, match="ends before learning starts"):
        plan_grid(["ddpg-vadam-zoo"], [0], "HalfCheetah-v5", 2000, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()


@pytest.mark.parametrize(
    ("agent", "env_id"),
    [("../../x", "Pendulum-v1"), ("ddpg-vadam", "../../../etc/Env-v0"), (".", "..")],
)
def test_a_run_directory_never_leaves_the_log_dir_whatever_the_config_names(
    agent: str, env_id: str, tmp_path: Path
):
    config = load_preset("ddpg-vadam", "Pendulum-v1")
    config.agent, config.env_id = agent, env_id
    run_dir = _new_run_dir(tmp_path / "runs", None, config)
    assert run_dir.parent == tmp_path / "runs" and not run_dir.name.startswith(".")


def test_a_module_env_ids_colon_is_not_in_the_run_directorys_name():
    name = layout.run_name("ddpg-vadam", "user_envs:PointEnv-v0", 0)
    assert name == "ddpg-vadam_user_envs-PointEnv-v0_s0"


def test_a_second_run_of_a_finished_runs_name_gets_suffix_1(tmp_path: Path):
    config = load_preset("ddpg-vadam", "Pendulum-v1")
    finished = tmp_path / layout.run_name(config.agent, config.env_id, config.seed)
    finished.mkdir()
    (finished / layout.SUMMARY).write_text("{}")
    assert _new_run_dir(tmp_path, None, config).name == f"{finished.name}_1"
