"""``vadam-rl compare``: a grid of presets x seeds, run to completion, then the report.

Every cell of the grid is an ordinary ``vadam-rl train`` run in its own subprocess, in
``RUNS_DIR/{preset}_{env}_s{seed}`` (TensorBoard, config.yaml, checkpoints, model.zip), with
its output in ``RUNS_DIR/logs/{preset}_{env}_s{seed}.log``. A subprocess per run means a run
that crashes (or diverges) is reported and the others carry on.

Rerunning the same command continues the grid: finished runs are skipped, interrupted runs
(a ``checkpoint.pt`` but no finished ``summary.json``) resume with ``train --resume``, and a
run directory killed before its first checkpoint is cleared and started again. A finished run
with fewer steps than ``--total-steps`` is extended. A run directory trained with other
settings than the ones asked for is an error, not silently mixed into the comparison.

Backends:

- ``local`` (default): at most ``workers`` (default ``os.cpu_count()``) runs at a time on this
  machine, each with one torch/OpenMP thread. Ctrl-C or SIGTERM stops every run at a
  checkpoint (exit code 130); rerun to continue.
- ``ray``: the same subprocesses as Ray tasks (``num_cpus=1``, plus ``gpus_per_run`` GPUs with
  ``--device cuda``), on a local Ray instance or the cluster at ``--ray-address``. On a
  cluster, RUNS_DIR must be on a filesystem every node sees (give an absolute path). Needs
  the ``vadam-rl[ray]`` extra; Ray is imported only here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro
import yaml

from vadam_rl import run_dir as layout
from vadam_rl.commands.options import option
from vadam_rl.commands.train import PARENT_ENV, check_learning_happens, seed_values
from vadam_rl.config import (
    MAX_TOTAL_STEPS,
    apply_overrides,
    flat_settings,
    load_preset,
    load_yaml,
    settings_differences,
    to_dict,
)
from vadam_rl.errors import UserError
from vadam_rl.training import saves as population_saves

DEFAULT_PRESETS = (
    "ddpg-vadam",
    "ddpg-vadam-adaptive",
    "ddpg-param-noise",
    "ddpg-adam",
    "ddpg-adam-plain",
)
TD3_PRESETS = ("td3-vadam", "td3-vadam-adaptive", "td3-param-noise", "td3", "td3-plain")
FAMILIES = {"ddpg": DEFAULT_PRESETS, "td3": TD3_PRESETS}
"""The presets ``compare --algorithm`` runs when no --presets are named."""
LOGS = "logs"
STOP_GRACE_S = 120.0
"""How long a stopped run may take to write its checkpoint before it is killed."""
TAIL_LINES = 15
# Files a run writes before its first checkpoint (error.log: it crashed): a folder holding
# only these may be cleared.
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Job:
    """One cell of the grid: a preset and a seed, trained in ``run_dir``."""

    preset: str
    seed: int
    env_id: str
    total_steps: int
    overrides: tuple[str, ...]
    device: str
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def log_path(self) -> Path:
        return self.run_dir.parent / LOGS / f"{self.name}.log"


@dataclass(frozen=True)
class PopulationJob:
    """Seeds of one preset trained together in one process (``vadam-rl train --seeds``),
    each still in its own run directory ``RUNS_DIR/{preset}_{env}_s{seed}``."""

    jobs: tuple[Job, ...]

    @property
    def name(self) -> str:
        first = self.jobs[0]
        return layout.run_name(first.preset, first.env_id, ",".join(str(j.seed) for j in self.jobs))

    @property
    def log_path(self) -> Path:
        return self.jobs[0].run_dir.parent / LOGS / f"{self.name}.log"


@dataclass(frozen=True)
class Outcome:
    """How one run ended: its exit code, how long it ran, the last lines of its log."""

    job: Job | PopulationJob
    returncode: int
    seconds: float
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def stopped(self) -> bool:
        return self.returncode == 130


# --------------------------------------------------------------------------------------------
# Planning: what each cell of the grid needs
# --------------------------------------------------------------------------------------------


def run_state(job: Job) -> Literal["finished", "resume", "start"]:
    """What to do with the job's run directory as it is on disk now."""
    population_saves.settle(job.run_dir)  # a population save that a kill interrupted
    if layout.is_finished(job.run_dir):
        done = _finished_steps(job.run_dir)
        return "finished" if done >= job.total_steps else "resume"
    if (job.run_dir / layout.CHECKPOINT).is_file():
        return "resume"
    return "start"


def _finished_steps(run_dir: Path) -> int:
    import json

    return int(json.loads((run_dir / layout.SUMMARY).read_text()).get("total_steps", 0))


def plan_grid(
    presets: Sequence[str],
    seeds: Sequence[int],
    env_id: str,
    total_steps: int,
    runs_dir: Path,
    overrides: Sequence[str] = (),
    device: str = "auto",
) -> list[Job]:
    """The grid's jobs, after checking presets, overrides, env and existing run directories.

    Raises ``UserError`` (before anything is written) for an unknown preset or env, a bad
    override, or an existing run directory trained with other settings.
    """
    from vadam_rl.agent.optimizers import check_optimizers  # (torch: only when planning)
    from vadam_rl.envs import make_env

    make_env(env_id).close()  # unknown id or unsupported spaces: say so once, up front
    jobs = []
    for preset in presets:
        for seed in seeds:
            config = load_preset(preset, env_id)
            config.seed, config.total_steps = seed, total_steps
            config.device = device  # type: ignore[assignment]
            apply_overrides(config, list(overrides))
            check_optimizers(config)
            check_learning_happens(config, list(overrides))
            job = Job(
                preset,
                seed,
                env_id,
                total_steps,
                tuple(overrides),
                device,
                runs_dir / layout.run_name(preset, env_id, seed),
            )
            _check_same_settings(job, to_dict(config))
            jobs.append(job)
    return jobs


def _check_same_settings(job: Job, expected: dict[str, Any]) -> None:
    """An existing run must have been trained with the config this grid asks for."""
    path = job.run_dir / layout.CONFIG
    if run_state(job) == "start" or not path.is_file():
        return  # nothing to keep: a fresh start rewrites it
    try:
        saved = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    ignored = {"total_steps", "device"}  # may change between sessions: extend, move to a GPU
    mine, theirs = flat_settings(expected), flat_settings(saved if isinstance(saved, dict) else {})
    if mine.get("compile") == "auto":  # a run saves what auto resolved to, and keeps it
        ignored.add("compile")
    differing = [
        f"{key}: {theirs[key]!r} there, {mine[key]!r} here"
        for key in settings_differences(mine, theirs, ignored)
    ]
    if differing:
        raise UserError(
            f"{job.run_dir} was trained with other settings ({'; '.join(differing[:3])}); "
            "pass the same --set flags or use another --runs-dir"
        )


# --------------------------------------------------------------------------------------------
# Running one job (in this process's thread pool or in a Ray worker)
# --------------------------------------------------------------------------------------------


def group_populations(jobs: Sequence[Job]) -> list[Job | PopulationJob]:
    """Jobs of the same preset in the same state (to start, or to resume from the same step
    with the same saved settings: a population trains in lockstep, one config but the seed)
    become one population; a job alone in its group stays a single run."""
    groups: dict[tuple[str, str, tuple], list[Job]] = {}
    for job in jobs:
        state = run_state(job)
        resumed_with = _lockstep_key(job) if state == "resume" else ()
        groups.setdefault((job.preset, state, resumed_with), []).append(job)
    return [
        PopulationJob(tuple(group)) if len(group) > 1 else group[0] for group in groups.values()
    ]


def _lockstep_key(job: Job) -> tuple:
    """What runs resumed as one population must share: the checkpoint's step and every saved
    setting the resume does not override (``compile: auto`` resolves by run length and
    machine, so runs started at different lengths may differ in it)."""
    try:
        saved = load_yaml((job.run_dir / layout.CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        saved = None  # the run reports it when it loads
    settings = flat_settings(saved) if isinstance(saved, dict) else {}
    for overridden in ("seed", "total_steps", "device"):
        settings.pop(overridden, None)
    return layout.checkpoint_step(job.run_dir), repr(sorted(settings.items()))


def train_argv(job: Job | PopulationJob) -> list[str] | None:
    """``vadam-rl`` arguments that bring the run directory to ``job.total_steps``; None when
    it is there already.

    Decided from the directory as it is when the job starts, so a job that is retried (Ray
    retries tasks whose node died, perhaps after the run finished) or a grid that is rerun
    does the right thing.
    """
    if isinstance(job, PopulationJob):
        return population_argv(job)
    common = ["--total-steps", str(job.total_steps), "--device", job.device, "--no-progress"]
    state = run_state(job)
    if state == "finished":
        return None
    if state == "resume":
        return ["train", "--resume", str(job.run_dir), *common]
    if job.run_dir.exists():
        layout.clear_unstarted_run(job.run_dir)
    sets = [arg for override in job.overrides for arg in ("--set", override)]
    return [
        "train", "--agent", job.preset, "--env", job.env_id, "--seed", str(job.seed),
        "--log-dir", str(job.run_dir.parent), "--run-name", job.name, *common, *sets,
    ]  # fmt: skip


def population_argv(population: PopulationJob) -> list[str] | None:
    jobs = [job for job in population.jobs if run_state(job) != "finished"]
    if len(jobs) < 2:  # a retried task whose population (or all but one) finished
        return train_argv(jobs[0]) if jobs else None
    first = jobs[0]
    common = ["--total-steps", str(first.total_steps), "--device", first.device, "--no-progress"]
    states = {run_state(job) for job in jobs}
    if states == {"resume"}:
        return ["train", "--resume", *(str(job.run_dir) for job in jobs), *common]
    if states != {"start"}:
        raise UserError(
            f"the runs of {PopulationJob(tuple(jobs)).name} are in different states "
            f"({', '.join(sorted(states))}); rerun compare to regroup them"
        )
    for job in jobs:
        if job.run_dir.exists():
            layout.clear_unstarted_run(job.run_dir)
    sets = [arg for override in first.overrides for arg in ("--set", override)]
    seeds = ",".join(str(job.seed) for job in jobs)
    prefix = layout.run_prefix(first.preset, first.env_id)  # train --seeds adds _sSEED
    return [
        "train", "--agent", first.preset, "--env", first.env_id, "--seeds", seeds,
        "--log-dir", str(first.run_dir.parent), "--run-name", prefix, *common, *sets,
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    """The environment of a training subprocess: one CPU thread, unbuffered output, and our
    pid, which it must not outlive (``cli.stop_with_parent``)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env[PARENT_ENV] = str(os.getpid())  # the run stops (with a checkpoint) if we are killed
    return env


def execute(job: Job | PopulationJob, stop: threading.Event | None = None) -> Outcome:
    """Run ``vadam-rl train`` for ``job`` in a subprocess and wait for it.

    Output goes to ``job.log_path`` (appended across sessions). When ``stop`` is set, or this
    call is interrupted (Ctrl-C, or Ray cancelling the task), the run gets SIGTERM, which makes
    it write a checkpoint and exit with code 130; it is killed after ``STOP_GRACE_S``.
    """
    started = time.monotonic()
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        argv = train_argv(job)
    except UserError as err:
        return Outcome(job, 2, 0.0, str(err))
    if argv is None:  # finished meanwhile (a retried task)
        return Outcome(job, 0, 0.0)
    with job.log_path.open("a") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} vadam-rl {' '.join(argv)}\n")
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "vadam_rl.commands.cli", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
        try:
            while process.poll() is None:
                if stop is not None and stop.is_set():
                    _stop(process)
                    break
                time.sleep(0.2)
        except BaseException:
            _stop(process)
            raise
    return Outcome(job, process.wait(), time.monotonic() - started, _tail(job.log_path))


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


class GridInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the grid; finished runs are kept, the others checkpointed."""


@contextmanager
def _sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """A SIGTERM (from a job scheduler, or ``kill``) stops the grid like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_local(jobs: Sequence[Job | PopulationJob], workers: int) -> list[Outcome]:
    """At most ``workers`` runs at a time on this machine; returns outcomes as they finish."""
    stop = threading.Event()
    outcomes: list[Outcome] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vadam-rl-run")
    try:
        with _sigterm_as_keyboard_interrupt():
            futures = [pool.submit(execute, job, stop) for job in jobs]
            for future in as_completed(futures):
                outcomes.append(future.result())
                _print_outcome(outcomes[-1], len(outcomes), len(jobs))
    except KeyboardInterrupt:
        stop.set()
        print("stopping: every running run writes a checkpoint ...", flush=True)
        pool.shutdown(wait=True, cancel_futures=True)
        raise GridInterrupted() from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def run_ray(
    jobs: Sequence[Job | PopulationJob],
    workers: int,
    *,
    num_gpus: float = 0.0,
    address: str | None = None,
) -> list[Outcome]:
    """The same runs as Ray tasks, each asking for one CPU and ``num_gpus`` GPUs.

    Without ``address`` (or ``RAY_ADDRESS``) a local Ray instance with ``workers`` CPUs is
    started and shut down at the end; with it, the grid goes to that cluster (``auto``: the
    one this node belongs to). A Ray already initialised by the caller is used as it is.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'vadam-rl[ray]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, include_dashboard=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot start on {where}: {reason}") from None
    remote_execute = ray.remote(num_cpus=1, num_gpus=num_gpus)(execute)
    pending = {remote_execute.remote(job): job for job in jobs}
    outcomes: list[Outcome] = []
    try:
        with _sigterm_as_keyboard_interrupt():
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except ray.exceptions.RayError as err:  # the worker died, or Ray itself failed
                    outcome = Outcome(job, -1, 0.0, " ".join(str(err).split())[-2000:])
                outcomes.append(outcome)
                _print_outcome(outcome, len(outcomes), len(jobs))
    except KeyboardInterrupt:
        print("stopping: every running run writes a checkpoint ...", flush=True)
        for ref in pending:
            ray.cancel(ref)  # raises KeyboardInterrupt inside the task: execute() stops the run
        ray.wait(list(pending), num_returns=len(pending), timeout=STOP_GRACE_S)
        raise GridInterrupted() from None
    finally:
        if started_here:
            ray.shutdown()
    return outcomes


RAY_CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str) -> None:
    """UserError unless something listens at a Ray address (``host:port`` or
    ``ray://host:port``), so that a wrong address is one line within seconds: ``ray.init``
    itself retries an unreachable one for minutes, printing a warning every few seconds."""
    if address == "auto":
        return  # (the local cluster's address file; ray.init says at once if there is none)
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address must be auto, HOST:PORT or ray://HOST:PORT, got {address}")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address}: {err.strerror or err or 'timed out'}"
        ) from None


def _print_outcome(outcome: Outcome, done: int, total: int) -> None:
    job = outcome.job
    if outcome.ok:
        status = "finished"
    elif outcome.stopped:
        status = "stopped at a checkpoint"
    else:
        status = f"FAILED (exit code {outcome.returncode}), log: {job.log_path}"
    print(f"[{done}/{total}] {job.name}: {status} after {outcome.seconds:.0f} s", flush=True)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def compare_command(
    presets: Annotated[list[str] | None, option("PRESET", "the --algorithm family's five")] = None,
    algorithm: Literal["ddpg", "td3"] = "ddpg",
    seeds: Annotated[str | None, option("LIST", "0-4")] = None,
    num_seeds: Annotated[int | None, option("N", "5")] = None,
    env: Annotated[str, option("ENV_ID")] = "HalfCheetah-v5",
    total_steps: Annotated[int, option("N")] = 1_000_000,
    runs_dir: Annotated[Path, option("DIR")] = Path("runs/compare"),
    backend: Literal["local", "ray"] = "local",
    workers: Annotated[int | None, option("N", "the number of CPU cores")] = None,
    set: Annotated[  # the flag users type is --set, as for train
        list[str], tyro.conf.UseAppendAction, option("KEY=VALUE", "none; repeatable")
    ] = [],  # noqa: B006 - tyro reads the default; it is never mutated
    with_noisynet: bool = False,
    with_vadagrad: bool = False,
    with_adam_explore: bool = False,
    device: Annotated[Device, option("DEVICE")] = "auto",
    ray_address: Annotated[str | None, option("ADDRESS", "a local Ray instance")] = None,
    gpus_per_run: Annotated[float, option("FRACTION")] = 0.25,
    population: Literal["auto", "on", "off"] = "auto",
    report: bool = True,
) -> None:
    """Train presets x seeds (resumable), then write the report of RUNS_DIR.

    Rerun the same command to continue after an interruption: finished runs are skipped,
    interrupted ones resume from their last checkpoint.

    Args:
        presets: Agent presets to compare (see `vadam-rl agents`).
        algorithm: The family compared when no --presets are named: ddpg (ddpg-vadam,
            ddpg-vadam-adaptive, ddpg-param-noise, ddpg-adam, ddpg-adam-plain) or td3 (the
            same five ways to explore on TD3: td3-vadam, ..., td3, td3-plain).
        seeds: The seeds, as for train: 0-4, 0,2,7 or 3 (a list of one).
        num_seeds: Seeds 0, 1, ..., N-1 instead (--num-seeds 5 is --seeds 0-4).
        env: Gymnasium env id.
        total_steps: Environment steps per run.
        runs_dir: Folder of the grid's run directories (and logs/, report/).
        backend: local (a process pool on this machine) or ray (Ray tasks, local or cluster).
        workers: Runs at a time.
        set: Override a config field in every run, e.g. --set batch_size=256.
        with_noisynet: Add the family's noisynet preset (ddpg-noisynet, td3-noisynet).
        with_vadagrad: Add ddpg-vadagrad to the presets.
        with_adam_explore: Add ddpg-adam-explore to the presets.
        device: The device of every run: auto (CUDA if present), cpu or cuda.
        ray_address: Ray cluster to submit to (e.g. auto, or ray://head:10001).
        gpus_per_run: GPUs a Ray task asks for with --device cuda (0.25: four runs share one).
        population: Each preset's seeds as one population (train --seeds); auto: on a GPU only.
        report: Write the report (vadam-rl report RUNS_DIR) when the grid is done.
    """
    family = list(FAMILIES[algorithm]) if presets is None else presets
    extra = _extra_presets(algorithm, with_noisynet, with_vadagrad, with_adam_explore)
    chosen = list(dict.fromkeys([*family, *extra]))
    seed_list = seed_values(seeds, num_seeds, default=5)
    if not chosen:
        raise UserError("the grid is empty: give at least one preset and one seed")
    if not 0 < total_steps <= MAX_TOTAL_STEPS:
        raise UserError(f"total_steps must be in [1, {MAX_TOTAL_STEPS:.0e}], got {total_steps}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if device == "cuda" and backend == "local":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but this machine has no CUDA device")
    runs_dir = runs_dir.absolute()
    jobs = plan_grid(chosen, seed_list, env, total_steps, runs_dir, set, device)
    todo = [job for job in jobs if run_state(job) != "finished"]
    _print_plan(jobs, todo, backend, workers, runs_dir)

    units: list[Job | PopulationJob] = list(todo)
    if _use_population(population, device):
        units = group_populations(todo)
    outcomes: list[Outcome] = []
    if todo:
        try:
            if backend == "ray":
                num_gpus = gpus_per_run if device == "cuda" else 0.0
                outcomes = run_ray(units, workers, num_gpus=num_gpus, address=ray_address)
            else:
                outcomes = run_local(units, min(workers, len(units)))
        except GridInterrupted:
            print(INTERRUPTED.format(runs_dir=runs_dir), file=sys.stderr)
            raise SystemExit(130) from None

    failed = [outcome for outcome in outcomes if not outcome.ok and not outcome.stopped]
    for outcome in failed:
        print(
            f"\n{outcome.job.name} failed with exit code {outcome.returncode} "
            f"(log: {outcome.job.log_path}); last lines:\n{outcome.tail}",
            file=sys.stderr,
        )
    if report:
        _report(runs_dir)
    if any(outcome.stopped for outcome in outcomes):  # a signal reached the runs, not us
        print(INTERRUPTED.format(runs_dir=runs_dir), file=sys.stderr)
        raise SystemExit(130)
    if failed:
        runs = sum(len(o.job.jobs) if isinstance(o.job, PopulationJob) else 1 for o in failed)
        print(f"{runs} of {len(jobs)} runs failed; rerun to retry them", file=sys.stderr)
        if any(isinstance(outcome.job, PopulationJob) for outcome in failed):
            print(POPULATION_FAILED, file=sys.stderr)
        raise SystemExit(1)


POPULATION_FAILED = (
    "a population stops when one of its agents fails (its log names the agent), and a rerun "
    "regroups the same seeds: rerun with --population off to train them one by one from their "
    "checkpoints, so that the others finish"
)


INTERRUPTED = (
    "interrupted; finished runs are kept, the others resume from their checkpoint when you "
    "rerun the same command (runs in {runs_dir})"
)


def _report(runs_dir: Path) -> None:
    """The report of what finished; a grid with no finished run yet has nothing to report."""
    from vadam_rl.commands.report import report_command

    print()
    try:
        report_command(runs_dir)
    except UserError as err:
        print(f"no report: {err}", file=sys.stderr)


def _use_population(mode: str, device: str) -> bool:
    if mode != "auto":
        return mode == "on"
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device == "cuda"


def _extra_presets(
    algorithm: str, with_noisynet: bool, with_vadagrad: bool, with_adam_explore: bool
) -> list[str]:
    if algorithm != "ddpg" and (with_vadagrad or with_adam_explore):
        raise UserError("--with-vadagrad and --with-adam-explore have ddpg presets only")
    return [
        name
        for name, wanted in (
            (f"{algorithm}-noisynet", with_noisynet),
            ("ddpg-vadagrad", with_vadagrad),
            ("ddpg-adam-explore", with_adam_explore),
        )
        if wanted
    ]


def _print_plan(
    jobs: Sequence[Job], todo: Sequence[Job], backend: str, workers: int, runs_dir: Path
) -> None:
    presets = list(dict.fromkeys(job.preset for job in jobs))
    seeds = list(dict.fromkeys(job.seed for job in jobs))
    resume = sum(run_state(job) == "resume" for job in todo)
    print(
        f"grid: {len(presets)} presets x {len(seeds)} seeds on {jobs[0].env_id}, "
        f"{jobs[0].total_steps:,} steps each = {len(jobs)} runs in {runs_dir}\n"
        f"      {len(jobs) - len(todo)} finished (skipped), {resume} to resume, "
        f"{len(todo) - resume} to start; {backend} backend, {workers} workers; "
        f"logs in {runs_dir / LOGS}",
        flush=True,
    )
