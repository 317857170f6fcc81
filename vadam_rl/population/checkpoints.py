"""A population's K checkpoints, saved as one: a resume finds all K at the same step.

Each agent's checkpoint is the single-run file in its own run directory, and K files cannot be
replaced in one atomic step: a population killed while writing them one after another would
leave some runs at the new step and some at the old one, which no longer resume together.
So ``save_together`` writes every agent's new checkpoint next to its current one
(``checkpoint.pending.pt``, itself written atomically and tagged with the save) and renames
them over the old ones only once all K are on disk; ``vadam_rl.population_saves.settle``
completes or drops a save that a kill interrupted. While a save runs, each run directory
holds two checkpoints (replay buffer included): plan disk space for it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence

from vadam_rl import population_saves
from vadam_rl import run_dir as layout
from vadam_rl.train import NonFiniteError, Run, check_finite_weights, save_checkpoint


def save_together(runs: Sequence[Run]) -> None:
    """Every run's checkpoint at its current step, committed only when all are written."""
    check_all_finite(runs)  # before any write: the last good checkpoints stay as they are
    save_id = uuid.uuid4().hex
    members = [run.run_dir.absolute() for run in runs]
    pending = [run.run_dir / layout.PENDING_CHECKPOINT for run in runs]
    try:
        for run, path, member in zip(runs, pending, members, strict=True):
            tag = population_saves.tag(member, members, save_id)
            save_checkpoint(run, path, extra={population_saves.TAG: tag})
    except BaseException:
        for path in pending:
            with contextlib.suppress(OSError):  # (a broken directory must not stop the rest)
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
