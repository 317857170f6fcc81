"""Training in-process: it learns, and it is reproducible."""

import json
from pathlib import Path

import pytest
import torch
from conftest import popen_cli

from vadam_rl.config import apply_overrides, load_preset
from vadam_rl.errors import UserError
from vadam_rl.training.records import read_evaluations
from vadam_rl.training.run import train

HIDDEN = "[64,64]"


def learning_run(agent: str, log_dir: Path) -> list[str]:
    return [
        "train", "--agent", agent, "--env", "Pendulum-v1", "--total-steps", "10000",
        "--log-dir", str(log_dir), "--run-name", agent, "--no-progress",
        "--set", f"actor.hidden_sizes={HIDDEN}", "--set", f"critic.hidden_sizes={HIDDEN}",
        "--set", "eval_episodes=5",
    ]  # fmt: skip


@pytest.mark.expensive
def test_each_exploration_family_and_td3_learn_pendulum_within_ten_thousand_steps(tmp_path: Path):
    # The runs go to CLI processes at once: the suite's other tests leave the second core
    # idle, and this is its slowest check.
    agents = ("ddpg-vadam", "ddpg-adam", "ddpg-param-noise", "ddpg-noisynet", "td3", "td3-vadam")
    logs = {agent: tmp_path / f"{agent}.log" for agent in agents}
    processes = {
        agent: popen_cli(*learning_run(agent, tmp_path), log=logs[agent]) for agent in agents
    }
    for agent, process in processes.items():
        assert process.wait(timeout=600) == 0, logs[agent].read_text()[-3000:]
    for agent in agents:
        summary = json.loads((tmp_path / agent / "summary.json").read_text())
        # random policy: about -1200; swinging up and balancing: better than -400
        assert summary["final_eval_return"] > -400, (agent, read_evaluations(tmp_path / agent))


def test_same_seed_gives_identical_returns(tmp_path: Path):
    def run(name: str) -> list[float]:
        config = load_preset("ddpg-vadam", "Pendulum-v1")
        apply_overrides(
            config,
            [
                "actor.hidden_sizes=[16]",
                "critic.hidden_sizes=[16]",
                "critic.action_layer=0",
                "total_steps=1_600",
                "learning_starts=400",
                "eval_every=400",
                "eval_episodes=2",
            ],
        )
        train(config, tmp_path / name, progress_bar=False)
        return [row["mean_return"] for row in read_evaluations(tmp_path / name)]

    first, second = run("a"), run("b")
    assert len(first) == 4 and first == second


def test_vector_envs_that_never_end_episodes_together_still_get_checkpoints(tmp_path: Path):
    # Hopper episodes under random actions end early, at different steps per env, so both
    # envs are rarely between episodes at once (without the fallback: checkpoints at 1568 only).
    config = load_preset("ddpg-adam", "Hopper-v5")
    apply_overrides(
        config,
        [
            "num_envs=2",
            "total_steps=3_000",
            "actor.hidden_sizes=[8]",
            "critic.hidden_sizes=[8,8]",
            "learning_starts=5_000",  # random actions throughout: only checkpoints matter
            "checkpoint_every=200",
            "eval_every=0",
            "eval_episodes=1",
        ],
    )
    train(config, tmp_path / "run", progress_bar=False)
    steps = sorted(
        int(p.stem.split("_")[1]) for p in (tmp_path / "run" / "policies").glob("step_*")
    )
    gaps = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    assert max(gaps) <= 2 * 200 + 2, steps


def test_metrics_sum_per_metric_and_name_the_first_non_finite_step_and_agent():
    from vadam_rl.errors import NonFiniteError
    from vadam_rl.training.loop import Metrics

    metrics = Metrics(labels=["run_s0", "run_s1", "run_s2"])
    for step in range(1, 6):
        bad = float("nan") if step >= 4 else 1.0
        late = float("inf") if step == 5 else 3.0
        metrics.add({"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([1.0, bad, late])}, step)
    with pytest.raises(NonFiniteError, match="b became non-finite at step 4 in run_s1") as caught:
        metrics.check_finite()
    assert caught.value.runs == ("run_s1", "run_s2")  # every agent that went non-finite
    finite = Metrics()
    for step in range(1, 5):
        finite.add({"a": torch.tensor(float(step)), "b": torch.tensor(2.0)}, step)
    finite.check_finite()
    assert finite.pop_means() == {"a": 2.5, "b": 2.0}
    assert finite.count == 0
    # Rows are stacked by position: other names (or another order) are refused, not mixed up.
    with pytest.raises(ValueError, match="changed"):
        finite.add({"b": torch.tensor(2.0), "a": torch.tensor(1.0)}, 5)


def test_the_resume_command_names_what_config_yaml_does_not_hold_and_quotes_paths(tmp_path: Path):
    from vadam_rl.config import load_preset, save_config
    from vadam_rl.training.run import resume_command

    config = load_preset("ddpg-adam", "Pendulum-v1")
    save_config(config, tmp_path / "config.yaml")
    assert resume_command([tmp_path], config) == f"vadam-rl train --resume {tmp_path}"
    config.total_steps += 1000  # a session started with --total-steps
    assert resume_command([tmp_path], config).endswith(f" --total-steps {config.total_steps}")
    config.device = "cpu"  # ... and --device (the preset says auto)
    assert resume_command([tmp_path], config).endswith(" --device cpu")
    spaced = tmp_path / "my runs"
    spaced.mkdir()
    save_config(config, spaced / "config.yaml")
    assert resume_command([spaced], config) == f"vadam-rl train --resume '{spaced}'"


def test_a_filesystem_without_locks_trains_unlocked(tmp_path: Path, monkeypatch):
    # Some network filesystems answer flock with ENOLCK: better a run without its lock
    # than no run (and certainly not a traceback).
    import errno

    from vadam_rl import run_dir as layout

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(layout.fcntl, "flock", no_locks)
    config = apply_overrides(
        load_preset("ddpg-adam", "Pendulum-v1"),
        ["actor.hidden_sizes=[8]", "critic.hidden_sizes=[8, 8]", "learning_starts=50",
         "total_steps=100", "eval_every=100", "eval_episodes=1"],
    )  # fmt: skip
    summary = train(config, tmp_path / "run", progress_bar=False)
    assert summary["total_steps"] == 100
    assert not layout.locked_elsewhere(tmp_path / "run")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("step,mean_return\n1000,1.5\n1000,2.0\n", "not increasing"),
        ("step,mean_return\n1000,nan\n", "non-finite"),
        ("step,mean_return\n1000,1e400\n", "non-finite"),
        ("step,mean_return\n1000,abc\n", "ValueError"),
        ("step,mean_return\n1000\n", "fewer cells"),
        ("mean_return\n1.0\n", "no step"),
    ],
)
def test_a_broken_evaluations_file_is_one_user_error_naming_it(tmp_path: Path, text, why):
    """What a resume and ``report`` read: rows of finite numbers at increasing steps."""
    (tmp_path / "evaluations.csv").write_text(text)
    with pytest.raises(UserError, match=why) as caught:
        read_evaluations(tmp_path)
    assert "evaluations.csv" in str(caught.value) and "\n" not in str(caught.value)


def test_evaluation_rows_read_back_as_written(tmp_path: Path):
    from vadam_rl.training.records import write_evaluations

    rows = [
        {"step": s, "mean_return": r, "std_return": 0.5, "mean_ep_length": 200.0,
         "episodes": 5, "wall_time_s": 1.25 * s}
        for s, r in ((1000, -3.5), (2000, 7.25))
    ]  # fmt: skip
    write_evaluations(tmp_path, rows)
    assert read_evaluations(tmp_path) == rows
    assert read_evaluations(tmp_path / "missing") == []


def test_the_progress_bar_labels_the_training_and_the_evaluation_return(tmp_path: Path):
    from vadam_rl.training.build import build_runs
    from vadam_rl.training.outputs import bar_returns

    runs = build_runs([load_preset("ddpg-adam", "Pendulum-v1")], [tmp_path])
    try:
        assert bar_returns(runs) == {"train_return": "-", "eval_return": "-"}
        runs.collector.recent_returns[0].extend([-100.0, -50.0])  # the exploring policy's
        runs.runs[0].evaluations.append({"step": 1000, "mean_return": 894.25})  # the mean's
        assert bar_returns(runs) == {"train_return": "-75.0", "eval_return": "894.2"}
    finally:
        runs.close()


def test_the_memory_estimate_counts_the_buffer_and_an_update_per_agent():
    from vadam_rl.training.build import memory_needed

    config = load_preset("ddpg-vadam")  # HalfCheetah: obs 17, act 6; [400, 300] both
    needed = memory_needed(config, 17, 6, agents=2)
    assert needed["replay buffer"] == 2 * config.buffer_size * (17 + 17 + 6 + 1 + 1) * 4
    units = 400 + 300 + 400 + 300 + 17 + 6
    assert needed["an update"] == 2 * config.batch_size * units * 8 * 4


def test_each_periodic_checkpoint_is_committed_after_its_policy_file(tmp_path: Path, monkeypatch):
    """A run killed between the two writes must not lose policies/step_N.pt for good: with
    the policy written first, a resume from the previous checkpoint writes it again."""
    from vadam_rl import run_dir as layout

    config = load_preset("ddpg-adam", "Pendulum-v1")
    apply_overrides(
        config,
        ["total_steps=800", "actor.hidden_sizes=[8]", "critic.hidden_sizes=[8,8]",
         "learning_starts=100", "checkpoint_every=200", "eval_every=0", "eval_episodes=1"],
    )  # fmt: skip
    run_dir = tmp_path / "run"
    missing: list[int] = []
    real = layout.atomic_torch_save

    def save(obj, path):
        real(obj, path)
        if Path(path).name == layout.CHECKPOINT:
            step = obj["progress"]["step"]
            if not layout.policy_path(run_dir, step).is_file():
                missing.append(step)

    monkeypatch.setattr(layout, "atomic_torch_save", save)
    train(config, run_dir, progress_bar=False)
    assert not missing  # (Pendulum's 200-step episodes: each checkpoint is a periodic one)
    assert len(list((run_dir / layout.POLICIES).glob("step_*"))) == 4


def test_a_run_that_make_train_started_is_continued_with_make_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from vadam_rl.config import save_config
    from vadam_rl.training.run import resume_command

    config = load_preset("ddpg-adam", "Pendulum-v1")
    save_config(config, tmp_path / "config.yaml")
    monkeypatch.setenv("VADAM_RL_CONTINUE", "make train AGENT=ddpg-adam STEPS=500")
    assert resume_command([tmp_path], config) == "make train AGENT=ddpg-adam STEPS=500"
