"""``train(config, run_dir)``: one DDPG agent to ``config.total_steps`` environment steps.

It leaves a complete run directory (see ``vadam_rl.run_dir``), can be stopped at any point
(Ctrl-C, SIGTERM, SIGKILL) and continued with ``train(config, run_dir, resume=True)``.
"""

from __future__ import annotations

import shlex
import traceback
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor
from tqdm import tqdm

from vadam_rl import run_dir as layout
from vadam_rl.agent.optimizers import check_optimizers
from vadam_rl.config import ConfigError, TrainConfig, load_config_file, save_config, validate
from vadam_rl.device import resolve_device
from vadam_rl.errors import Crashed, Interrupted, NonFiniteError
from vadam_rl.fast import compiled
from vadam_rl.signals import finished_despite, stop_on_signals
from vadam_rl.training.build import Run, build_run
from vadam_rl.training.checkpoint import (
    load_checkpoint,
    load_initial_policy,
    save_checkpoint,
)
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
    with layout.RunLocks() as locks:
        return _train(config, Path(run_dir), locks, resume, progress_bar, initial_policy)


def _train(
    config: TrainConfig,
    run_dir: Path,
    locks: layout.RunLocks,
    resume: bool,
    progress_bar: bool,
    initial_policy: dict | None,
) -> dict:
    validate(config)
    check_optimizers(config)
    if not resume:
        config = compiled.resolve_auto(config, resolve_device(config.device))
    run = build_run(config, run_dir)
    if initial_policy is not None:
        load_initial_policy(run.agent, initial_policy)
    # Locked after the envs are built (forked env workers would inherit the lock) and
    # before anything is read (a live run may be mid-save).
    if resume:
        locks.hold(run_dir)
        load_checkpoint(run)
        (run_dir / layout.SUMMARY).unlink(missing_ok=True)  # extending a finished run
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        locks.hold(run_dir)
        save_config(config, run_dir / layout.CONFIG)
    logger: RunLogger | None = None
    try:
        # (inside the try: opening the events file is the first write a full disk refuses)
        logger = RunLogger(run_dir, purge_step=run.progress.step if resume else None)
        if not resume:
            logger.config(config)
        with stop_on_signals() as stop:  # (a signal during the final writes waits for them)
            run_loop(SingleLearner(run, logger), stop, progress_bar)
            summary = finish(run, logger)
    except Exception as err:
        raise told_in_one_line(err, [run_dir], config) from None
    finally:
        if logger is not None:
            logger.close()
        run.collector.envs.close()
        run.eval_env.close()
    finished_despite(stop)
    return summary


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
    ``--total-steps`` or ``--device`` does not rewrite it)."""
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


class SingleLearner:
    """The loop's view of one run and its logger."""

    def __init__(self, run: Run, logger: RunLogger) -> None:
        self.run, self.logger = run, logger
        self.config, self.progress, self.collector = run.config, run.progress, run.collector

    def update(self) -> dict[str, Tensor]:
        batch = self.run.buffer.sample(self.config.batch_size)
        metrics = self.run.agent.update(batch)
        self.run.collector.exploration.after_update(batch.obs)
        return metrics

    def log(self, metrics: Metrics, fps: float, bar: tqdm) -> None:
        log_training(self.run, self.logger, metrics, fps)
        bar.set_postfix(bar_returns(self.run), refresh=False)

    def evaluate(self, bar: tqdm) -> None:
        run_evaluation(self.run, self.logger, bar)

    def checkpoint(self, snapshot: bool) -> None:
        # The policy file first: killed between the two writes, the resume starts from the
        # previous checkpoint and writes this step's policy again (the same weights, bit
        # for bit); the other way round it would never be written.
        if snapshot:
            save_policy_snapshot(self.run)
        save_checkpoint(self.run)


def finish(run: Run, logger: RunLogger) -> dict:
    """Final evaluation (if the last one is stale), checkpoint, SB3 export, summary.json."""
    final_evaluation(run, logger)
    save_checkpoint(run)
    return write_final_outputs(run)
