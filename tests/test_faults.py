"""Faults at chosen moments, against the real CLI in subprocesses: signals before and while
training, a second signal while the first is being honoured, runs stopped before their first
checkpoint, and files in a run directory that are not ours."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pendulum_args, popen_cli, run_cli, wait_for

from vadam_rl import run_dir as layout
from vadam_rl.config import load_preset, save_config


def one_line_without_traceback(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("vadam-rl:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.expensive
def test_a_signal_during_start_up_is_one_line_and_the_same_command_starts_again(
    tmp_path: Path, signum: int
):
    log = tmp_path / "run.log"
    process = popen_cli(*pendulum_args(tmp_path, "early"), log=log)
    wait_for(log, "run directory:")  # (parsed, checked, the env built: the run dir comes next)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 130
    line = one_line_without_traceback(log.read_text())
    if "checkpoint written" in line:  # (a fast machine: the loop had begun)
        rerun = run_cli("train", "--resume", str(tmp_path / "early"), "--no-progress")
    else:
        assert "before training started" in line
        rerun = run_cli(*pendulum_args(tmp_path, "early", steps=1000))
    assert rerun.returncode == 0, rerun.stderr
    assert layout.is_finished(tmp_path / "early")


@pytest.mark.expensive
def test_a_second_signal_while_the_first_is_honoured_still_ends_in_one_line(tmp_path: Path):
    # Ctrl-C on a grid: the run gets SIGINT from the terminal, then SIGTERM from compare.
    log = tmp_path / "run.log"
    process = popen_cli(*pendulum_args(tmp_path, "twice", steps=100_000), log=log)
    wait_for(log, "step     1,000")
    process.send_signal(signal.SIGINT)
    for _ in range(20):
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    assert "checkpoint written" in one_line_without_traceback(log.read_text())


def unstarted_run(run_dir: Path) -> None:
    """What a run killed before its first checkpoint leaves: config.yaml, TensorBoard's file,
    a temp file of the checkpoint being written."""
    run_dir.mkdir(parents=True)
    save_config(load_preset("ddpg-vadam", "Pendulum-v1"), run_dir / layout.CONFIG)
    (run_dir / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    (run_dir / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"half a checkpoint")


def test_a_run_stopped_before_its_first_checkpoint_starts_again_under_its_name(
    tmp_path: Path,
):
    unstarted_run(tmp_path / "cut")
    resumed = run_cli("train", "--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 2 and "command that created it" in resumed.stderr
    result = run_cli(*pendulum_args(tmp_path, "cut", steps=600))
    assert result.returncode == 0, result.stderr
    assert "starting it again" in result.stdout and layout.is_finished(tmp_path / "cut")
    assert not list((tmp_path / "cut").glob(".*.tmp"))


def test_a_folder_holding_someone_elses_files_is_never_cleared(tmp_path: Path):
    unstarted_run(tmp_path / "cut")
    notes = tmp_path / "cut" / "notes.txt"
    notes.write_text("mine")
    result = run_cli(*pendulum_args(tmp_path, "cut", steps=600))
    assert result.returncode == 2 and "notes.txt" in one_line_without_traceback(result.stderr)
    assert notes.read_text() == "mine"


def test_a_resume_removes_our_temp_files_and_nothing_else(tmp_path: Path):
    run_cli(*pendulum_args(tmp_path, "run", steps=600), check=True)
    run = tmp_path / "run"
    ours = run / layout.POLICIES / ".step_600.pt.x1y2z3ab.tmp"
    mine = run / ".my-notes.tmp"
    ours.write_bytes(b"a write that a kill cut short")
    mine.write_text("mine")
    result = run_cli("train", "--resume", str(run), "--total-steps", "800", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert not ours.exists() and mine.read_text() == "mine"


def test_starting_the_cli_imports_no_heavy_library():
    # rliable (through arch and scipy) alone took 5-8 s to import: every run, and every run
    # of a grid, paid it before training; Ctrl-C during those imports was a traceback.
    code = (
        "import sys, vadam_rl.commands.cli\n"
        "heavy = ('torch', 'rliable', 'matplotlib', 'stable_baselines3', 'ray', 'scipy')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


DEEP = "[" * 3000 + "]" * 3000  # deeper than the YAML parser's recursion can go


def test_yaml_nested_too_deeply_is_one_config_error_wherever_it_is_read(tmp_path: Path):
    from vadam_rl.config import ConfigError, apply_overrides, load_config_file

    config = load_preset("ddpg-vadam", "Pendulum-v1")
    with pytest.raises(ConfigError, match="hidden_sizes"):
        apply_overrides(config, [f"actor.hidden_sizes={DEEP}"])
    deep = tmp_path / "config.yaml"
    deep.write_text(f"actor: {DEEP}\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config_file(deep)


def test_an_agent_preset_is_a_name_never_a_path(tmp_path: Path):
    from vadam_rl.config import ConfigError, preset_dir

    outside = tmp_path / "mine.yaml"
    outside.write_text("description: not a shipped preset\n")
    up = Path(*[".."] * len(preset_dir().parts))  # from presets/ up to /
    relative = up / str(outside.with_suffix("")).lstrip("/")
    assert (preset_dir() / f"{relative}.yaml").is_file()  # (the file a path would reach)
    for name in (str(relative), str(outside.with_suffix(""))):
        with pytest.raises(ConfigError, match="unknown agent preset"):
            load_preset(name, "Pendulum-v1")


@pytest.mark.parametrize("env_id", [":Foo-v0", ".relative:Foo-v0", "math:"])
def test_a_malformed_module_env_id_is_one_user_error(env_id: str):
    from vadam_rl.envs import make_env
    from vadam_rl.errors import UserError

    with pytest.raises(UserError, match="module:EnvName"):
        make_env(env_id)


@pytest.mark.expensive
def test_a_loss_that_diverges_before_the_first_checkpoint_says_none_is_kept(tmp_path: Path):
    result = run_cli(
        *pendulum_args(tmp_path, "early", steps=5000, checkpoint_every=5000),
        "--set", "learning_starts=200", "--set", "log_every=100", "--set", "critic.lr=1e30",
    )  # fmt: skip
    assert result.returncode == 1
    assert "no checkpoint had been written yet" in one_line_without_traceback(result.stderr)
    rerun = run_cli(*pendulum_args(tmp_path, "early", steps=600))  # starts it again
    assert rerun.returncode == 0, rerun.stderr


@pytest.mark.expensive
def test_paths_that_cannot_be_written_are_one_line(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    result = run_cli(*pendulum_args(a_file, "run", steps=600))
    assert result.returncode == 2 and "a-file" in one_line_without_traceback(result.stderr)
    run_cli(*pendulum_args(tmp_path, "run", steps=600), check=True)
    (tmp_path / "taken.zip").mkdir()
    result = run_cli("export", str(tmp_path / "run"), "-o", str(tmp_path / "taken.zip"))
    assert result.returncode == 2 and "taken.zip" in one_line_without_traceback(result.stderr)


def _without(key: str):
    def mutate(state: dict) -> None:
        del state[key]

    return mutate


def _progress_step(step: object):
    def mutate(state: dict) -> None:
        state["progress"]["step"] = step

    return mutate


def _generator_as_float(state: dict) -> None:
    state["generator"] = state["generator"].float()


def _buffer_position(pos: int):
    def mutate(state: dict) -> None:
        state["buffer"]["pos"] = pos

    return mutate


def _actor_weights(change):
    def mutate(state: dict) -> None:
        state["agent"]["actor"] = {k: change(v) for k, v in state["agent"]["actor"].items()}

    return mutate


DAMAGE = {
    "no generator": (_without("generator"), "no entry 'generator'"),
    "no progress": (_without("progress"), "no entry 'progress'"),
    "a negative step": (_progress_step(-5), "out of range"),
    "a step TensorBoard cannot write": (_progress_step(10**30), "out of range"),
    "a step that is not a number": (_progress_step("abc"), "damaged"),
    "a generator state of floats": (_generator_as_float, "damaged"),
    "a buffer position beyond it": (_buffer_position(10**9), "write position 1000000000"),
    "a negative buffer position": (_buffer_position(-7), "write position -7"),
    "integer actor weights": (_actor_weights(lambda w: w.long()), "not floating point"),
    "NaN actor weights": (_actor_weights(lambda w: w * float("nan")), "non-finite actor"),
}


def _files(run: Path) -> list[tuple[str, int]]:
    """Each file and its modification time; the lock (opened to hold it) aside."""
    return sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*") if p.name != ".lock")


@pytest.mark.expensive
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(tmp_path: Path):
    import shutil

    import torch

    run_cli(*pendulum_args(tmp_path, "run", steps=600), check=True)
    for name, (mutate, message) in DAMAGE.items():
        run = tmp_path / name.replace(" ", "-")
        shutil.copytree(tmp_path / "run", run)
        state = torch.load(run / layout.CHECKPOINT, weights_only=True)
        mutate(state)
        torch.save(state, run / layout.CHECKPOINT)
        before = _files(run)
        result = run_cli("train", "--resume", str(run), "--total-steps", "800", "--no-progress")
        assert result.returncode == 2, (name, result.stderr)
        assert message in one_line_without_traceback(result.stderr), name
        assert _files(run) == before, name


@pytest.mark.expensive
def test_a_damaged_checkpoint_in_a_population_is_one_line_and_changes_nothing(tmp_path: Path):
    """A population resumes every agent through the single-run loader and its checks."""
    import torch

    args = pendulum_args(tmp_path, "unused", steps=600)
    args = [a for a in args if a not in ("--run-name", "unused")]  # the seeds name the runs
    run_cli(*args, "--seeds", "0-1", check=True)
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 2
    state = torch.load(runs[1] / layout.CHECKPOINT, weights_only=True)
    del state["generator"]
    torch.save(state, runs[1] / layout.CHECKPOINT)
    before = [_files(run) for run in runs]
    result = run_cli("train", "--resume", *map(str, runs), "--total-steps", "800", "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "no entry 'generator'" in one_line_without_traceback(result.stderr)
    assert [_files(run) for run in runs] == before


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self.room:
            raise OSError(28, "No space left on device")
        self.room -= size
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def _assert_stopped_by_a_full_disk(stderr: str, run: Path, checkpoint: bytes) -> None:
    line = one_line_without_traceback(stderr)
    assert "the disk is full" in line and f"--resume {run}" in line, line
    assert (run / layout.CHECKPOINT).read_bytes() == checkpoint  # the last one, intact
    assert not [p for p in run.rglob("*") if layout._is_temp_file(p.name)]


@pytest.mark.expensive
def test_a_full_disk_is_one_line_keeps_the_checkpoint_and_the_run_resumes(
    tmp_path: Path, monkeypatch, capsys
):
    """Every write goes through the atomic writers; a disk that fills up during any of them
    (here: the first after the resume starts) stops the run with one line."""
    from vadam_rl.commands.cli import main

    run_cli(*pendulum_args(tmp_path, "run", steps=600), check=True)
    run = tmp_path / "run"
    checkpoint = (run / layout.CHECKPOINT).read_bytes()
    real = layout.open_for_writing
    monkeypatch.setattr(layout, "open_for_writing", lambda fd: _FullDisk(real(fd), room=1000))
    resume = ["train", "--resume", str(run), "--total-steps", "1000", "--no-progress"]
    with pytest.raises(SystemExit) as exit_:
        main(resume)
    assert exit_.value.code == 1
    _assert_stopped_by_a_full_disk(capsys.readouterr().err, run, checkpoint)
    monkeypatch.undo()  # space is back
    run_cli(*resume, check=True)
    assert layout.checkpoint_step(run) == 1000


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 MiB tmpfs, where the machine lets us mount one (root in a container that allows
    it); else the test is skipped and the fault-injecting writer above stands in."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk refuses even one more block."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 4096):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.expensive
def test_a_really_full_disk_is_one_line_and_the_run_resumes_once_space_is_back(small_disk):
    run_cli(*pendulum_args(small_disk, "run", steps=600), check=True)
    run = small_disk / "run"
    checkpoint = (run / layout.CHECKPOINT).read_bytes()
    filler = _fill(small_disk)
    resume = ["train", "--resume", str(run), "--total-steps", "1000", "--no-progress"]
    result = run_cli(*resume)
    assert result.returncode == 1, result.stderr
    _assert_stopped_by_a_full_disk(result.stderr, run, checkpoint)
    filler.unlink()
    run_cli(*resume, check=True)
    assert layout.checkpoint_step(run) == 1000


LONG = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--total-steps", "1.5"], "--total-steps expects an integer, got '1.5'"),
        (["train", "--bogus", "3"], "Unrecognized options: --bogus"),
        (["train", "--device", "tpu"], "invalid choice 'tpu'"),
        (["compare", "--workers", "x"], "--workers expects an integer"),
        (["compare", "--workers", "0"], "workers must be >= 1"),
        (["train", "--total-steps", str(10**30)], "total_steps must be at most"),
        (["compare", "--total-steps", str(10**30)], "total_steps must be in"),
        (["train", "--set", "gradient_steps=1000000"], "gradient_steps must be at most"),
        (["train", "--set", f"actor.hidden_sizes={LONG}"], "(6002 characters)"),
        (
            ["compare", "--backend", "ray", "--ray-address", "127.0.0.1:1"],
            "cannot reach the Ray cluster at 127.0.0.1:1",
        ),
        (["compare", "--backend", "ray", "--ray-address", "head"], "must be auto, HOST:PORT"),
    ],
    ids=lambda value: " ".join(value)[:40] if isinstance(value, list) else None,
)
def test_bad_arguments_are_one_short_line_and_write_nothing(args, message, tmp_path: Path):
    where = ["--runs-dir", str(tmp_path / "runs")] if args[0] == "compare" else []
    where = where or ["--log-dir", str(tmp_path / "runs")]
    result = run_cli(*args, *where, "--env", "Pendulum-v1")
    assert result.returncode == 2, result.stderr
    line = one_line_without_traceback(result.stderr)
    assert message in line and len(line) < 300, line
    assert not (tmp_path / "runs").exists()


def test_a_stop_before_config_yaml_was_written_still_counts_as_unstarted(tmp_path: Path):
    """Stopped between creating the folder (and its lock) and writing config.yaml, a run
    must start again under its name, not be "already exists" for good."""
    run = tmp_path / "run"
    run.mkdir()
    (run / layout.LOCK).write_text("123")
    assert layout.is_unstarted(run)
    (run / "notes.txt").write_text("mine")
    assert not layout.is_unstarted(run)  # (and foreign_files keeps it from being cleared)


@pytest.mark.expensive
@pytest.mark.parametrize(
    ("damage", "commands", "message"),
    [
        ({"actor": 3}, ["eval", "export"], "its actor is not a set of float weights"),
        ({"step": "ten"}, ["export"], "its step is 'ten', not an integer"),
    ],
)
def test_a_damaged_policy_file_is_one_line_for_eval_and_export(
    damage: dict, commands: list[str], message: str, tmp_path: Path
):
    import torch
    from sb3_helpers import make_random_run

    run = make_random_run(tmp_path / "run", "Pendulum-v1", [16, 16], steps=(1000,))
    for policy_path in (tmp_path / "run" / "policies").glob("*.pt"):
        policy = torch.load(policy_path, weights_only=True)
        torch.save({**policy, **damage}, policy_path)
    for command in commands:
        result = run_cli(command, str(run.path))
        assert result.returncode == 2, result.stderr
        assert message in one_line_without_traceback(result.stderr)


def test_eval_refuses_a_negative_seed_in_one_line(tmp_path: Path):
    result = run_cli("eval", str(tmp_path), "--seed", "-1")
    assert result.returncode == 2
    assert "--seed must be in [0, 2**63), got -1" in one_line_without_traceback(result.stderr)
