"""Errors that reach the user: ``UserError`` (bad input, exit code 2) and the ways training stops
(``NonFiniteError`` exit 1, ``Interrupted`` exit 130, ``Crashed`` exit 1), each one line."""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """Bad input from the user (env id, preset, config key, run dir, file): say it in one line.

    Raise it *before* anything is written, so a rejected command leaves no files behind.
    """


class UserCodeError(UserError):
    """The user's own code (their environment module or class) raised: one line, then
    ``trace``, the traceback of their code alone (our frames and gymnasium's left out)."""

    def __init__(self, message: str, trace: str) -> None:
        super().__init__(message)
        self.trace = trace


class NonFiniteError(RuntimeError):
    """A loss or weight became NaN/inf; the last good checkpoint is kept.

    ``runs``: in a population, the labels (run directories) of the agents that went
    non-finite, so the message can say how the others continue.
    """

    def __init__(self, message: str, runs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.runs = tuple(runs)


class Interrupted(Exception):
    """Training stopped by a signal after writing a checkpoint."""


class Crashed(RuntimeError):
    """An unexpected error stopped training; its traceback is in RUN_DIR/error.log."""
