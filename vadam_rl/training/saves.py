"""Settling a population save that a kill interrupted.

A population (``vadam_rl.training.checkpoint.save_together``) writes its K new checkpoints
as RUN_DIR/checkpoint.pending.pt, each tagged with the save's id and the K run directories
(relative to that run directory, so runs moved or copied together keep their tags), and
renames them over RUN_DIR/checkpoint.pt only once all K exist. A save is therefore complete as
soon as one member's checkpoint.pt carries its id or every member holds its pending file: its
pending files are renamed in. Otherwise it was killed while writing, every member still holds
its previous checkpoint, and the pending files are deleted. ``settle`` runs wherever a run
directory is resumed or planned, so the K runs go on from one step whichever of them is
resumed first, alone or together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from vadam_rl import run_dir as layout
from vadam_rl.errors import UserError

TAG = "population_save"
"""The checkpoint record ``{"id": str, "runs": [member dirs relative to this run dir]}``."""

log = logging.getLogger(__name__)


def tag(run_dir: Path, members: Sequence[Path], save_id: str) -> dict:
    """``run_dir``'s tag for the save ``save_id`` of ``members`` (absolute paths)."""
    return {"id": save_id, "runs": [os.path.relpath(m, run_dir) for m in members]}


def settle(run_dir: Path) -> None:
    """Commit or drop the interrupted population saves that ``run_dir`` takes part in.

    Not while a process trains ``run_dir`` or a member (``layout.RunLocks``): its pending
    files may be a save in progress, not an interrupted one.
    """
    run_dir = Path(run_dir)
    if layout.locked_elsewhere(run_dir):
        return
    committed = _tag(run_dir / layout.CHECKPOINT, strict=False)
    if committed is not None and not _busy(_members(run_dir, committed)):
        _commit(run_dir, committed)  # complete: members' pending files of it belong in too
    if not (run_dir / layout.PENDING_CHECKPOINT).is_file():
        return
    pending = _tag(run_dir / layout.PENDING_CHECKPOINT, strict=True)
    if pending is None:  # no tag: nothing says whether its save was complete
        _remove(run_dir / layout.PENDING_CHECKPOINT)
        log.warning("%s: removed an untagged %s", run_dir, layout.PENDING_CHECKPOINT)
        return
    members = _members(run_dir, pending)
    busy = _busy(members)
    if busy and layout.held_here(run_dir):  # about to train from a checkpoint it may replace
        raise UserError(
            f"{run_dir} holds a population save that a kill interrupted, shared with {busy[0]},"
            " which another process is training now; resume this run after it"
        )
    if busy:
        return
    complete = any(_holds(m / layout.CHECKPOINT, pending, strict=False) for m in members) or all(
        _holds(m / layout.PENDING_CHECKPOINT, pending, strict=True) for m in members
    )
    if complete:
        _commit(run_dir, pending)
    else:
        dropped = [m for m in members if _holds(m / layout.PENDING_CHECKPOINT, pending, True)]
        for member in dropped:
            _remove(member / layout.PENDING_CHECKPOINT)
        log.warning(
            "dropped a population save killed before all its checkpoints were written "
            "(%s); these runs keep their previous checkpoints, if they have any",
            ", ".join(map(str, dropped)),
        )


def _commit(run_dir: Path, save: dict) -> None:
    renamed = []
    for member in _members(run_dir, save):
        pending = member / layout.PENDING_CHECKPOINT
        if _holds(pending, save, strict=True):
            try:
                os.replace(pending, member / layout.CHECKPOINT)
            except OSError as err:
                raise UserError(f"cannot complete the population save in {member}: {err}") from None
            renamed.append(member)
    if renamed:
        log.warning(
            "completed a population save that was killed while renaming (%s)",
            ", ".join(map(str, renamed)),
        )


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise UserError(f"cannot remove the interrupted save {path}: {err}") from None


def _busy(members: Sequence[Path]) -> list[Path]:
    """The members another process trains now: their files are not ours to settle."""
    return [member for member in members if layout.locked_elsewhere(member)]


def _members(run_dir: Path, save: dict) -> list[Path]:
    return [Path(os.path.normpath(run_dir / member)) for member in save["runs"]]


def _holds(path: Path, save: dict, strict: bool) -> bool:
    found = _tag(path, strict)
    return found is not None and found["id"] == save["id"]


def _tag(path: Path, strict: bool) -> dict | None:
    """The save tag of a checkpoint file; None if the file is absent or has none.

    An unreadable file is an error when ``strict`` (pending files, which are only ever
    written whole) and counts as untagged otherwise (a corrupt checkpoint.pt is reported
    when the run loads it).
    """
    if not path.is_file():
        return None
    try:
        state = layout.load_records(path)
    except Exception as err:  # torch raises several types for truncated or foreign files
        if strict:
            raise UserError(
                f"cannot read {path} ({type(err).__name__}: {err}); move it away and rerun"
            ) from None
        return None
    found = state.get(TAG) if isinstance(state, dict) else None
    valid = isinstance(found, dict) and isinstance(found.get("runs"), list) and "id" in found
    return found if valid else None
