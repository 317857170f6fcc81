"""A population's K checkpoints, saved as one: a resume finds all K at the same step.

Each agent's checkpoint is the single-run file in its own run directory, and K files cannot be
replaced in one atomic step: a population killed while writing them one after another would
leave some runs at the new step and some at the old one, which no longer resume together.
So ``save_together`` writes every agent's new checkpoint next to its current one
(``checkpoint.pending.pt``, itself written atomically) and renames them over the old ones only
once all K are on disk. ``settle_pending``, before a population resumes, finishes a save that
was killed while renaming and drops one killed while writing. An agent's directory resumed
alone uses its checkpoint.pt and leaves a pending file where it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from vadam_rl import run_dir as layout
from vadam_rl.train import NonFiniteError, Run, check_finite_weights, save_checkpoint


def save_together(runs: Sequence[Run]) -> None:
    """Every run's checkpoint at its current step, committed only when all are written."""
    check_all_finite(runs)  # before any write: the last good checkpoints stay as they are
    pending = [run.run_dir / layout.PENDING_CHECKPOINT for run in runs]
    try:
        for run, path in zip(runs, pending, strict=True):
            save_checkpoint(run, path)
    except BaseException:
        for path in pending:
            path.unlink(missing_ok=True)
        raise
    for run, path in zip(runs, pending, strict=True):
        os.replace(path, run.run_dir / layout.CHECKPOINT)


def check_all_finite(runs: Sequence[Run]) -> None:
    """One NonFiniteError naming every run whose weights are not finite."""
    errors: list[NonFiniteError] = []
    for run in runs:
        try:
            check_finite_weights(run.agent, run.progress.step, str(run.run_dir))
        except NonFiniteError as err:
            errors.append(err)
    if errors:
        raise NonFiniteError(
            "; ".join(map(str, errors)), runs=[r for err in errors for r in err.runs]
        )


def settle_pending(run_dirs: Sequence[Path]) -> None:
    """Complete or drop an interrupted ``save_together`` of these runs.

    The save reached step S if every run has either a pending checkpoint at S or, already
    renamed, a checkpoint at S: then the pending ones replace the older checkpoints.
    Otherwise it was killed before all K were written and every run still holds the
    previous save's checkpoint: the pending files are deleted.
    """
    dirs = [Path(d) for d in run_dirs]
    pending = {d: d / layout.PENDING_CHECKPOINT for d in dirs}
    pending = {d: path for d, path in pending.items() if path.is_file()}
    if not pending:
        return
    pending_steps = {d: saved_step(path) for d, path in pending.items()}
    current_steps = {d: saved_step(d / layout.CHECKPOINT) for d in dirs}
    target = max((step for step in pending_steps.values() if step is not None), default=None)
    reached = target is not None and all(
        target in (pending_steps.get(d), current_steps[d]) for d in dirs
    )
    for d, path in pending.items():
        newer = pending_steps[d] == target and (current_steps[d] or -1) < target
        if reached and newer:
            os.replace(path, d / layout.CHECKPOINT)
        else:
            path.unlink()


def saved_step(path: Path) -> int | None:
    """The env step a checkpoint was saved at; None if it is missing or unreadable."""
    try:
        # mmap: only the small progress record is read, not the replay buffer.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["progress"]["step"])
    except Exception:  # missing, truncated or foreign: not a save to complete
        return None
