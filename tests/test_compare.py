"""The seed grid: real `vadam-rl compare` subprocesses training Pendulum on tiny networks."""

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, popen_cli, run_cli

from vadam_rl import run_dir as layout
from vadam_rl.commands.compare import (
    Job,
    PopulationJob,
    compare_command,
    group_populations,
    train_argv,
)
from vadam_rl.config import apply_overrides, load_preset, save_config
from vadam_rl.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("ddpg-vadam", "ddpg-adam-plain")
QUICK = [
    *TINY, "--set", "learning_starts=200", "--set", "eval_every=1000",
    "--set", "checkpoint_every=500", "--set", "log_every=500",
]  # fmt: skip
OVERRIDES = [value for flag, value in zip(QUICK[::2], QUICK[1::2], strict=True) if flag == "--set"]
RUN_NAMES = sorted(f"{p}_Pendulum-v1_s{s}" for p in PRESETS for s in (0, 1))


def grid_args(runs_dir: Path, *extra: str, steps: int = 2000, workers: int = 2) -> list[str]:
    return [
        "compare", "--presets", *PRESETS, "--num-seeds", "2", "--env", "Pendulum-v1",
        "--total-steps", str(steps), "--runs-dir", str(runs_dir), "--workers", str(workers),
        "--device", "cpu", *QUICK, *extra,
    ]  # fmt: skip


def without_seeds(args: list[str]) -> list[str]:
    """``grid_args`` without its ``--num-seeds 2``, for a test that names its --seeds."""
    i = args.index("--num-seeds")
    return args[:i] + args[i + 2 :]


def finished_runs(runs_dir: Path) -> list[str]:
    return sorted(p.name for p in runs_dir.iterdir() if layout.is_finished(p))


def method_rows(runs_dir: Path) -> dict[str, dict[str, str]]:
    with (runs_dir / "report" / "results.csv").open(newline="") as f:
        return {row["method"]: row for row in csv.DictReader(f) if row["kind"] == "method"}


def sessions(runs_dir: Path, name: str) -> list[str]:
    """The command line of every session of one run, from the header lines of its log."""
    text = (runs_dir / "logs" / f"{name}.log").read_text()
    return [line for line in text.splitlines() if line.startswith("=== ")]


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def expected_config(preset: str, seed: int, steps: int):
    config = load_preset(preset, "Pendulum-v1")
    config.seed, config.total_steps, config.device = seed, steps, "cpu"
    return apply_overrides(config, OVERRIDES)


def job(runs_dir: Path, preset: str = "ddpg-vadam", seed: int = 0) -> Job:
    run_dir = runs_dir / f"{preset}_Pendulum-v1_s{seed}"
    return Job(preset, seed, "Pendulum-v1", 2000, tuple(OVERRIDES), "cpu", run_dir)


# --------------------------------------------------------------------------------------------
# The local backend
# --------------------------------------------------------------------------------------------


@pytest.mark.expensive
def test_killed_grid_resumes_without_redoing_finished_runs(tmp_path: Path):
    log = tmp_path / "compare.log"
    runs_dir = tmp_path / "grid"
    first, second = "ddpg-vadam_Pendulum-v1_s0", "ddpg-vadam_Pendulum-v1_s1"
    process = popen_cli(*grid_args(runs_dir, workers=1, steps=1500), log=log)
    try:
        wait_until(lambda: layout.is_finished(runs_dir / first), "the first run to finish")
        wait_until(lambda: (runs_dir / second / "checkpoint.pt").exists(), "a second checkpoint")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the grid and its training subprocesses
        process.wait()
    assert not layout.is_finished(runs_dir / second), "killed too late to test a resume"
    summary = runs_dir / first / "summary.json"
    before = (summary.stat().st_mtime_ns, (runs_dir / first / "evaluations.csv").read_text())

    result = run_cli(*grid_args(runs_dir, steps=1500), check=True)

    assert finished_runs(runs_dir) == RUN_NAMES
    after = (summary.stat().st_mtime_ns, (runs_dir / first / "evaluations.csv").read_text())
    assert after == before
    assert len(sessions(runs_dir, first)) == 1
    assert "--resume" in sessions(runs_dir, second)[-1]
    # The finished grid: every cell a normal run directory, and the report of all of them.
    for name in RUN_NAMES:
        assert {"config.yaml", "evaluations.csv", "model.zip"} <= {
            p.name for p in (runs_dir / name).iterdir()
        }
    rows = method_rows(runs_dir)
    assert set(rows) == set(PRESETS) and all(row["seeds"] == "2" for row in rows.values())
    assert all(row["steps"] == "1500" for row in rows.values())
    assert (runs_dir / "report" / "learning_curves.png").stat().st_size > 10_000
    assert "ddpg-vadam − ddpg-adam-plain" in result.stdout  # the table, printed


@pytest.mark.expensive
def test_population_grid_trains_each_presets_seeds_in_one_process_and_extends_them(
    tmp_path: Path,
):
    args = ["--presets", "ddpg-adam-plain", "--population", "on", "--no-report"]
    base = grid_args(tmp_path, steps=600)
    base = [a for a in base if a not in PRESETS and a != "--presets"]
    run_cli(*base, *args, check=True)
    names = ["ddpg-adam-plain_Pendulum-v1_s0", "ddpg-adam-plain_Pendulum-v1_s1"]
    assert finished_runs(tmp_path) == names  # ordinary run directories, one per seed
    log_name = "ddpg-adam-plain_Pendulum-v1_s0,1"
    assert "--seeds 0,1" in sessions(tmp_path, log_name)[0]

    extended = [a if a != "600" else "800" for a in base]
    run_cli(*extended, *args, check=True)  # both runs are extended together
    assert "--resume" in sessions(tmp_path, log_name)[-1]
    for name in names:
        assert _finished_steps(tmp_path / name) == 800


@pytest.mark.expensive
def test_a_population_groups_only_runs_that_resume_from_the_same_step(tmp_path: Path):
    base = without_seeds(grid_args(tmp_path, steps=600))
    base = [a for a in base if a not in PRESETS and a != "--presets"]
    args = ["--presets", "ddpg-adam-plain", "--no-report"]
    run_cli(*base, *args, "--seeds", "0", check=True)  # seed 0 stops at 600,
    longer = [a if a != "600" else "800" for a in base]
    run_cli(*longer, *args, "--seeds", "1", check=True)  # seed 1 at 800
    longest = [a if a != "600" else "1000" for a in base]
    run_cli(
        *longest, *args, "--seeds", "0-1", "--population", "on", check=True
    )  # a population could not
    for seed in (0, 1):  # resume both: it trains in lockstep, so each resumes on its own
        name = f"ddpg-adam-plain_Pendulum-v1_s{seed}"
        assert _finished_steps(tmp_path / name) == 1000
        assert "--resume" in sessions(tmp_path, name)[-1]


@pytest.mark.expensive
def test_population_runs_land_where_compare_looks_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A namespaced env id (its "/" nested the population's run directories one level too
    # deep, so every rerun started afresh).
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    base = without_seeds(grid_args(tmp_path, steps=300))
    base = [a for a in base if a not in PRESETS and a != "--presets"]
    base[base.index("Pendulum-v1")] = "namespaced_env:vadam-test/Pendulum-v1"
    args = [*base, "--presets", "ddpg-adam-plain", "--seeds", "0-1"]
    run_cli(*args, "--population", "on", "--no-report", check=True)
    names = [f"ddpg-adam-plain_namespaced_env-vadam-test-Pendulum-v1_s{s}" for s in (0, 1)]
    assert finished_runs(tmp_path) == names
    result = run_cli(*args, "--population", "on", "--no-report", check=True)
    assert "2 finished (skipped), 0 to resume, 0 to start" in result.stdout


def test_runs_whose_compile_auto_resolved_differently_do_not_resume_as_one_population(
    tmp_path: Path,
):
    # compile: auto is saved resolved, by run length: a run started for 20k steps keeps
    # `false` after an extension, one started for 40k has `true`, and a population of the
    # two is refused (its runs must share every setting but the seed) on every rerun.
    import torch

    jobs = [job(tmp_path, seed=0), job(tmp_path, seed=1), job(tmp_path, seed=2)]
    for cell, compiled in zip(jobs, (False, True, True), strict=True):
        config = expected_config(cell.preset, cell.seed, 2000)
        config.compile = compiled
        save_config(config, cell.run_dir / layout.CONFIG)
        torch.save({"progress": {"step": 1000}}, cell.run_dir / layout.CHECKPOINT)
    groups = group_populations(jobs)
    assert groups == [jobs[0], PopulationJob((jobs[1], jobs[2]))]


def test_a_retried_job_trains_only_what_has_not_finished_meanwhile(tmp_path: Path):
    # Ray retries a task whose node died, perhaps after some of its runs finished.
    done, left = job(tmp_path, seed=0), job(tmp_path, seed=1)
    for cell in (done, left):
        cell.run_dir.mkdir()
        save_config(expected_config(cell.preset, cell.seed, 2000), cell.run_dir / layout.CONFIG)
    (done.run_dir / layout.SUMMARY).write_text('{"finished": true, "total_steps": 2000}')
    (left.run_dir / layout.CHECKPOINT).write_bytes(b"")
    assert train_argv(done) is None
    argv = train_argv(PopulationJob((done, left)))
    assert argv is not None and argv[:3] == ["train", "--resume", str(left.run_dir)]
    assert argv[3] == "--total-steps"  # left alone: a single run's resume
    (left.run_dir / layout.SUMMARY).write_text('{"finished": true, "total_steps": 2000}')
    assert train_argv(PopulationJob((done, left))) is None


def _finished_steps(run_dir: Path) -> int:
    import json

    return json.loads((run_dir / "summary.json").read_text())["total_steps"]


def test_populations_group_a_presets_seeds_by_what_they_need(tmp_path: Path):
    jobs = [job(tmp_path, "ddpg-vadam", 0), job(tmp_path, "ddpg-vadam", 1)]
    jobs.append(job(tmp_path, "ddpg-adam", 0))
    groups = group_populations(jobs)
    assert groups[0] == PopulationJob((jobs[0], jobs[1])) and groups[1] == jobs[2]
    argv = train_argv(groups[0])
    assert argv[argv.index("--seeds") + 1] == "0,1"
    assert argv[argv.index("--run-name") + 1] == "ddpg-vadam_Pendulum-v1"
    save_config(expected_config("ddpg-vadam", 1, 2000), jobs[1].run_dir / "config.yaml")
    (jobs[1].run_dir / "checkpoint.pt").write_bytes(b"")  # seed 1 now resumes, seed 0 starts
    with pytest.raises(UserError, match="different states"):
        train_argv(groups[0])


STOPS = {
    "SIGTERM to the grid, as a job scheduler sends it": lambda pid: os.kill(pid, signal.SIGTERM),
    "SIGINT to the process group, as Ctrl-C in a terminal": lambda pid: os.killpg(
        pid, signal.SIGINT
    ),
}


RUNNING = ["ddpg-vadam_Pendulum-v1_s0", "ddpg-vadam_Pendulum-v1_s1"]  # a long grid's runs


def wait_until_running(runs_dir: Path) -> None:
    for name in RUNNING:
        wait_until(lambda n=name: (runs_dir / n / "checkpoint.pt").exists(), f"{name} running")


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.expensive
def test_a_stopped_grid_checkpoints_every_run_and_leaves_no_process(stop: str, tmp_path: Path):
    log, runs_dir, names = tmp_path / "compare.log", tmp_path / "grid", RUNNING
    process = popen_cli(*grid_args(runs_dir, "--presets", "ddpg-vadam", steps=100_000), log=log)
    try:
        wait_until_running(runs_dir)
        STOPS[stop](process.pid)
        assert process.wait(timeout=60) == 130
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already when the test passes
            os.killpg(process.pid, signal.SIGKILL)
    assert "rerun the same command" in log.read_text() and "Traceback" not in log.read_text()
    for name in names:
        assert "checkpoint written" in (runs_dir / "logs" / f"{name}.log").read_text()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no training subprocess left behind
        os.killpg(process.pid, 0)


@pytest.mark.expensive
def test_runs_stop_with_a_checkpoint_when_compare_is_killed_outright(tmp_path: Path):
    log, runs_dir, names = tmp_path / "compare.log", tmp_path / "grid", RUNNING
    process = popen_cli(*grid_args(runs_dir, "--presets", "ddpg-vadam", steps=100_000), log=log)
    try:
        wait_until_running(runs_dir)
        process.kill()  # SIGKILL to compare alone: it cannot stop its runs itself
        process.wait()
        wait_until(lambda: not _group_alive(process.pid), "the runs to stop", timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for name in names:  # stopped by SIGTERM, as from the kernel: each wrote its checkpoint
        assert "checkpoint written" in (runs_dir / "logs" / f"{name}.log").read_text()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_planning_keeps_its_hands_off_runs_another_process_trains(tmp_path: Path):
    cell = job(tmp_path)
    cell.run_dir.mkdir()
    save_config(expected_config("ddpg-vadam", 0, 2000), cell.run_dir / layout.CONFIG)
    pending = cell.run_dir / layout.PENDING_CHECKPOINT
    pending.write_bytes(b"a population save being written")
    holder = subprocess.Popen(  # a training process holds the run's lock
        [sys.executable, "-c", HOLD_LOCK, str(cell.run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="being trained by another process"):
            train_argv(cell)  # would clear a folder without a checkpoint, and settle
        assert cell.run_dir.is_dir() and pending.read_bytes().startswith(b"a population")
    finally:
        holder.kill()
        holder.wait()
    pending.unlink()  # (not a real checkpoint)
    train_argv(cell)  # the lock died with its holder: an unstarted run is cleared
    assert not cell.run_dir.exists()


HOLD_LOCK = """
import sys, time
from vadam_rl import run_dir as layout
with layout.RunLocks() as locks:
    locks.hold(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
"""


def test_rerunning_a_finished_grid_trains_nothing(tmp_path: Path):
    for preset in PRESETS:
        for seed in (0, 1):
            run_dir = tmp_path / f"{preset}_Pendulum-v1_s{seed}"
            run_dir.mkdir()
            save_config(expected_config(preset, seed, 2000), run_dir / layout.CONFIG)
            (run_dir / layout.EVALUATIONS).write_text(
                ",".join(layout.EVAL_COLUMNS) + f"\n2000,{-100 - seed},1,200,2,1\n"
            )
            (run_dir / layout.SUMMARY).write_text('{"finished": true, "total_steps": 2000}')
    result = run_cli(*grid_args(tmp_path), check=True)
    assert "4 finished (skipped), 0 to resume, 0 to start" in result.stdout
    assert not (tmp_path / "logs").exists()  # no run was started
    assert (tmp_path / "report" / "results.md").is_file()


def test_algorithm_td3_compares_the_td3_family(tmp_path: Path):
    from vadam_rl.commands.compare import TD3_PRESETS

    for preset in TD3_PRESETS:
        assert load_preset(preset).algorithm == "td3"
        run_dir = tmp_path / f"{preset}_Pendulum-v1_s0"
        run_dir.mkdir()
        save_config(expected_config(preset, 0, 2000), run_dir / layout.CONFIG)
        (run_dir / layout.EVALUATIONS).write_text(
            ",".join(layout.EVAL_COLUMNS) + "\n2000,-100,1,200,2,1\n"
        )
        (run_dir / layout.SUMMARY).write_text('{"finished": true, "total_steps": 2000}')
    args = [a for a in without_seeds(grid_args(tmp_path)) if a not in PRESETS and a != "--presets"]
    result = run_cli(*args, "--algorithm", "td3", "--seeds", "0", "--no-report", check=True)
    assert "grid: 5 presets x 1 seeds" in result.stdout
    assert "5 finished (skipped), 0 to resume, 0 to start" in result.stdout
    refused = run_cli(*args, "--algorithm", "td3", "--with-vadagrad", "--seeds", "0")
    assert refused.returncode == 2 and "ddpg presets only" in refused.stderr


@pytest.mark.expensive
def test_a_failing_run_is_reported_and_the_others_finish(tmp_path: Path):
    broken = tmp_path / "ddpg-vadam_Pendulum-v1_s1"
    broken.mkdir()
    save_config(expected_config("ddpg-vadam", 1, 2000), broken / layout.CONFIG)
    (broken / layout.CHECKPOINT).write_bytes(b"not a checkpoint")
    result = run_cli(*grid_args(tmp_path, "--presets", "ddpg-vadam"))
    assert result.returncode == 1
    assert finished_runs(tmp_path) == ["ddpg-vadam_Pendulum-v1_s0"]
    assert "ddpg-vadam_Pendulum-v1_s1 failed with exit code 2" in result.stderr
    assert "corrupt" in result.stderr  # the run's own last lines say why
    assert method_rows(tmp_path)["ddpg-vadam"]["seeds"] == "1"  # the report has the rest


def test_a_failing_population_says_how_to_train_its_seeds_one_by_one(tmp_path: Path):
    for seed in (0, 1):
        run_dir = tmp_path / f"ddpg-vadam_Pendulum-v1_s{seed}"
        run_dir.mkdir()
        save_config(expected_config("ddpg-vadam", seed, 2000), run_dir / layout.CONFIG)
        (run_dir / layout.CHECKPOINT).write_bytes(b"not a checkpoint")
    result = run_cli(*grid_args(tmp_path, "--presets", "ddpg-vadam", "--population", "on"))
    assert result.returncode == 1
    assert "ddpg-vadam_Pendulum-v1_s0,1 failed with exit code 2" in result.stderr
    assert "2 of 2 runs failed" in result.stderr  # runs, not processes
    assert "rerun with --population off" in result.stderr


# --------------------------------------------------------------------------------------------
# Planning: decided before anything runs
# --------------------------------------------------------------------------------------------


def test_a_run_dir_trained_with_other_settings_is_refused(tmp_path: Path):
    run_dir = tmp_path / "ddpg-vadam_Pendulum-v1_s0"
    run_dir.mkdir()
    config = expected_config("ddpg-vadam", 0, 2000)
    config.batch_size = 32
    save_config(config, run_dir / layout.CONFIG)
    (run_dir / layout.CHECKPOINT).write_bytes(b"")
    with pytest.raises(UserError, match="batch_size: 32 there, 64 here"):
        compare_command(
            presets=["ddpg-vadam"], num_seeds=1, env="Pendulum-v1", total_steps=2000,
            runs_dir=tmp_path, set=OVERRIDES, device="cpu", report=False,
        )  # fmt: skip
    assert not (tmp_path / "logs").exists()


def test_bad_input_is_one_line_exit_2_before_anything_is_written(tmp_path: Path):
    for args, message in (
        (["--presets", "ddpg-nope"], "unknown agent preset"),
        (["--env", "CartPole-v1"], "Box action space"),
        (["--set", "actor.nonsense=1"], "unknown config key"),
    ):
        result = run_cli(*grid_args(tmp_path / "runs"), *args)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("stopped_by", ["a kill", "a crash"])
def test_a_run_stopped_before_its_first_checkpoint_starts_again(stopped_by: str, tmp_path: Path):
    cell = job(tmp_path)
    cell.run_dir.mkdir()
    save_config(expected_config("ddpg-vadam", 0, 2000), cell.run_dir / layout.CONFIG)
    (cell.run_dir / "events.out.tfevents.123.host.1.0").write_bytes(b"")
    (cell.run_dir / ".checkpoint.pt.abc123.tmp").write_bytes(b"")  # a write the kill cut short
    if stopped_by == "a crash":
        (cell.run_dir / layout.ERROR_LOG).write_text("Traceback (most recent call last): ...")
    argv = train_argv(cell)
    assert argv[:3] == ["train", "--agent", "ddpg-vadam"] and "--resume" not in argv
    assert not cell.run_dir.exists()  # cleared, so train can create it afresh


def test_a_folder_with_foreign_files_is_never_cleared(tmp_path: Path):
    cell = job(tmp_path)
    cell.run_dir.mkdir()
    (cell.run_dir / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match=r"thesis\.tex"):
        train_argv(cell)
    assert (cell.run_dir / "thesis.tex").is_file()
    (cell.run_dir / "thesis.tex").unlink()
    (cell.run_dir / ".git").mkdir()  # hidden, but not a temp file of ours
    with pytest.raises(UserError, match=r"\.git"):
        train_argv(cell)
    assert (cell.run_dir / ".git").is_dir()


def test_a_finished_run_with_fewer_steps_is_extended(tmp_path: Path):
    cell = job(tmp_path)
    cell.run_dir.mkdir()
    (cell.run_dir / layout.SUMMARY).write_text('{"finished": true, "total_steps": 1000}')
    argv = train_argv(cell)
    assert argv[:3] == ["train", "--resume", str(cell.run_dir)]
    assert argv[argv.index("--total-steps") + 1] == "2000"


def test_the_script_is_the_same_command():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare_halfcheetah.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for flag in ("--with-vadagrad", "--backend", "--num-seeds", "--total-steps", "--set"):
        assert flag in result.stdout


# --------------------------------------------------------------------------------------------
# The Ray backend
# --------------------------------------------------------------------------------------------


@pytest.mark.expensive
def test_ray_grid_trains_every_preset_and_seed_on_a_local_ray_instance(tmp_path: Path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vadam-rl[ray]')")
    result = run_cli(*grid_args(tmp_path, "--backend", "ray", steps=1000), timeout=400, check=True)
    assert finished_runs(tmp_path) == RUN_NAMES
    assert "ray backend" in result.stdout
    assert set(method_rows(tmp_path)) == set(PRESETS)
