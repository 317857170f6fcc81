"""Training: ``train(config, run_dir)`` for one run, ``train_population(configs, run_dirs)``
for K seeds of one preset in one process (``--seeds 0-4``); both are the same path, a single
run being a population of one.

Each run leaves a complete run directory (see ``vadam_rl.run_dir``), can be stopped at any
point (Ctrl-C, SIGTERM, SIGKILL) and continued with ``resume=True``. A population's run
directories are ordinary ones, which ``report`` and ``compare`` read like any others and
which can even be resumed one by one.
"""

from __future__ import annotations

import shlex
import traceback
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor
from tqdm import tqdm

from vadam_rl import run_dir as layout
from vadam_rl.agent.learner import check_stackable
from vadam_rl.agent.optimizers import check_optimizers
from vadam_rl.config import (
    ConfigError,
    TrainConfig,
    flat_settings,
    load_config_file,
    save_config,
    settings_differences,
    to_dict,
    validate,
)
from vadam_rl.device import resolve_device
from vadam_rl.errors import Crashed, Interrupted, NonFiniteError
from vadam_rl.fast import compiled
from vadam_rl.signals import finished_despite, stop_on_signals
from vadam_rl.training.build import Runs, build_runs
from vadam_rl.training.checkpoint import load_checkpoints, save_together
from vadam_rl.training.logger import RunLogger
from vadam_rl.training.loop import Metrics, run_loop
from vadam_rl.training.outputs import (
    bar_returns,
    final_evaluation,
    log_training,
    run_evaluation,
    save_policy_snapshot,
    write_final_outputs,
)


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    initial_policy: dict | None = None,
) -> dict:
    """Train to ``config.total_steps``; returns the summary written to summary.json.

    ``initial_policy`` (a policy file's dict: actor, critic and their targets) replaces the
    freshly initialised networks, e.g. weights imported from Stable-Baselines3. The run
    directory is locked while it trains (``layout.RunLocks``).
    """
    return train_population(
        [config], [run_dir], resume=resume, progress_bar=progress_bar, initial_policy=initial_policy
    )[0]


def train_population(
    configs: Sequence[TrainConfig],
    run_dirs: Sequence[Path],
    *,
    resume: bool = False,
    progress_bar: bool = True,
    initial_policy: dict | None = None,
) -> list[dict]:
    """Train ``configs`` (one preset, distinct seeds) together; one summary per run. The
    run directories are locked while they train (``layout.RunLocks``)."""
    if len(configs) != len(run_dirs) or not configs:
        raise ValueError("one run directory per config, at least one")
    with layout.RunLocks() as locks:
        dirs = [Path(d) for d in run_dirs]
        return _train(list(configs), dirs, locks, resume, progress_bar, initial_policy)


def _train(
    configs: list[TrainConfig],
    run_dirs: list[Path],
    locks: layout.RunLocks,
    resume: bool,
    progress_bar: bool,
    initial_policy: dict | None,
) -> list[dict]:
    for config in configs:
        validate(config)
        check_optimizers(config)
    if not resume:
        device = resolve_device(configs[0].device)
        configs = [compiled.resolve_auto(config, device) for config in configs]
    if len(configs) > 1:
        check_same_settings(configs)
        check_stackable(configs[0])
    runs = build_runs(configs, run_dirs, initial_policy)
    # Locked after the envs are built (forked env workers would inherit the locks), before
    # anything is read (a live run may be mid-save) or written.
    if not resume:
        for run_dir in run_dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
    for run_dir in run_dirs:
        locks.hold(run_dir)
    try:
        if resume:
            load_checkpoints(runs)
            for run_dir in run_dirs:
                (run_dir / layout.SUMMARY).unlink(missing_ok=True)  # extending a finished run
        else:
            for config, run_dir in zip(configs, run_dirs, strict=True):
                save_config(config, run_dir / layout.CONFIG)
    except BaseException:
        runs.close()
        raise
    loggers: list[RunLogger] = []
    try:
        # (inside the try: opening the events files is the first write a full disk refuses)
        purge = runs.progress.step if resume else None
        loggers += [RunLogger(run_dir, purge_step=purge) for run_dir in run_dirs]
        if not resume:
            for config, logger in zip(configs, loggers, strict=True):
                logger.config(config)
        with stop_on_signals() as stop:  # (a signal during the final writes waits for them)
            labels = None if runs.single else [str(d) for d in run_dirs]
            description = None if runs.single else f"{len(run_dirs)} agents"
            run_loop(RunsTrainer(runs, loggers), stop, progress_bar, Metrics(labels), description)
            summaries = finish(runs, loggers)
    except Exception as err:
        raise told_in_one_line(err, run_dirs, configs[0]) from None
    finally:
        for logger in loggers:
            logger.close()
        runs.close()
    finished_despite(stop)
    return summaries


def check_same_settings(configs: Sequence[TrainConfig]) -> None:
    """The agents of a population may differ in their seed only."""
    reference = flat_settings(to_dict(configs[0]))
    for config in configs[1:]:
        differing = settings_differences(reference, flat_settings(to_dict(config)), ["seed"])
        if differing:
            raise ConfigError(
                f"a population's runs must share every setting but the seed; they differ in "
                f"{', '.join(differing)}"
            )
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"a population needs distinct seeds, got {seeds}")


def told_in_one_line(err: Exception, run_dirs: Sequence[Path], config: TrainConfig) -> Exception:
    """What stopped the training of ``run_dirs``, as the one line the CLI prints: what is
    kept and the command that continues. An unexpected error's traceback goes to each
    run's error.log, for the bug report."""
    many = len(run_dirs) > 1
    resume = resume_command(run_dirs, config)
    if not all((Path(d) / layout.CHECKPOINT).is_file() for d in run_dirs):
        kept = "no checkpoint had been written yet"
    else:
        kept = (
            "the last good checkpoints are kept"
            if many
            else (f"the last good checkpoint in {run_dirs[0]} is kept")
        )
    if isinstance(err, NonFiniteError):
        others = [d for d in run_dirs if str(d) not in err.runs]
        go_on = (
            f"; the other runs continue with: {resume_command(others, config)}"
            if err.runs and others
            else ""
        )
        return NonFiniteError(f"{err}; training stopped and {kept}{go_on}", runs=err.runs)
    if isinstance(err, Interrupted):
        return Interrupted(f"{err}; continue with: {resume}")
    if layout.is_disk_full(err):  # (no error.log: it would not fit either)
        path = err.filename if isinstance(err, OSError) and err.filename else None
        then = (
            f"free some space, then continue with: {resume}"
            if "no checkpoint" not in kept
            else "free some space and run the same command again"
        )
        writing = f" (writing {path})" if path else ""
        return Crashed(f"training stopped: the disk is full{writing}; {kept}: {then}")
    trace = traceback.format_exc()
    for run_dir in run_dirs:
        layout.atomic_write_text(Path(run_dir) / layout.ERROR_LOG, trace)
    return Crashed(
        f"training stopped by an unexpected {type(err).__name__}: {err}. The last "
        f"checkpoint{'s are' if many else ' in ' + str(run_dirs[0]) + ' is'} kept (continue "
        f"with: {resume}); the traceback is in {Path(run_dirs[0]) / layout.ERROR_LOG}"
    )


def resume_command(run_dirs: Sequence[Path], config: TrainConfig) -> str:
    """The shell command that continues these runs as ``config`` says; it names the total
    steps and the device where their config.yaml holds others (a resume with
    ``--total-steps`` or ``--device`` does not rewrite it). A run that ``make train``
    started continues with the make command, which the Makefile passes in
    ``VADAM_RL_CONTINUE`` (vadam-rl itself may not be on that user's PATH)."""
    import os

    started_by = os.environ.get("VADAM_RL_CONTINUE", "").strip()
    if started_by and len(run_dirs) == 1:
        return started_by
    words = ["vadam-rl", "train", "--resume", *map(str, run_dirs)]
    try:
        saved: TrainConfig | None = load_config_file(Path(run_dirs[0]) / layout.CONFIG)
    except ConfigError:
        saved = None
    if saved is None or saved.total_steps != config.total_steps:
        words += ["--total-steps", str(config.total_steps)]
    if saved is None or saved.device != config.device:
        words += ["--device", config.device]
    return shlex.join(words)


class RunsTrainer:
    """What the loop drives (``loop.Trainer``): one update for all agents; logging,
    evaluation and checkpoints fan out to the run directories."""

    def __init__(self, runs: Runs, loggers: list[RunLogger]) -> None:
        self.runs, self.loggers = runs, loggers
        self.config, self.progress, self.collector = runs.config, runs.progress, runs.collector

    def update(self) -> dict[str, Tensor]:
        batch = self.runs.buffer.sample(self.config.batch_size)
        metrics = self.runs.speed_ups.update(batch)
        self.runs.exploration.after_update(batch.obs)
        return metrics

    def log(self, metrics: Metrics, fps: float, bar: tqdm) -> None:
        log_training(self.runs, self.loggers, metrics, fps)
        if self.runs.single:
            bar.set_postfix(bar_returns(self.runs), refresh=False)

    def evaluate(self, bar: tqdm) -> None:
        for run, logger in zip(self.runs.runs, self.loggers, strict=True):
            label = "" if self.runs.single else f"seed {run.config.seed}: "
            run_evaluation(self.runs, run, logger, bar, label=label)

    def checkpoint(self, snapshot: bool) -> None:
        # The policy files first: killed between the two writes, the resume starts from the
        # previous checkpoint and writes this step's policy again (the same weights, bit
        # for bit); the other way round it would never be written.
        if snapshot:
            for run in self.runs.runs:
                save_policy_snapshot(self.runs, run)
        save_together(self.runs)


def finish(runs: Runs, loggers: list[RunLogger]) -> list[dict]:
    """Final evaluations (where the last one is stale), the checkpoints (K saved as one),
    SB3 export, summary.json."""
    for run, logger in zip(runs.runs, loggers, strict=True):
        final_evaluation(runs, run, logger)
    save_together(runs)
    return [write_final_outputs(runs, run) for run in runs.runs]
