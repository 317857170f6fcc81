"""SIGINT and SIGTERM in a training process: a stop request, never a traceback.

Two scopes, nested:

- ``for_process()`` (the CLI, first thing in ``main``): until the process exits, a signal
  before training starts raises ``KeyboardInterrupt`` at once (a BaseException, so no
  ``except Exception`` on the way swallows it; every file we write is written atomically, so
  nothing is left half done, and the same command starts the run again); once training has
  started, signals are only recorded.
- ``stop_on_signals()`` (around the training loop and the final writes): the loop reads
  ``request.signal`` after each step and stops with a checkpoint; a signal during the final
  checkpoint, policy or model.zip writes waits until they are done.

Once a stop is under way, further signals are only recorded. A grid stopped with Ctrl-C sends
its runs SIGINT (the terminal's process group) and then SIGTERM (from ``compare``); the
second must not kill a run that is printing where its checkpoint is.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vadam_rl.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    signal: int = 0  # the first SIGINT/SIGTERM received, 0 while none
    training: bool = False  # inside stop_on_signals, or after it: record, never raise


_process: StopRequest | None = None


@contextmanager
def for_process() -> Iterator[StopRequest]:
    """SIGINT/SIGTERM for the rest of the process, as the module docstring says."""
    global _process
    request = StopRequest()

    def handler(signum: int, _frame: object) -> None:
        first = not request.signal
        request.signal = request.signal or signum
        if first and not request.training:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    _process = request
    try:
        yield request
    finally:
        _process = None
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """A stop request the training loop checks after each step (checkpoint, then exit).

    Under ``for_process`` it is the process's request, which stays in recording mode after
    this block; called from Python without it, SIGINT/SIGTERM are caught here and given back
    to their previous handlers afterwards.
    """
    if _process is not None:
        _process.training = True
        yield _process
        return
    request = StopRequest(training=True)

    def handler(signum: int, _frame: object) -> None:
        request.signal = request.signal or signum

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def finished_despite(request: StopRequest) -> None:
    """After a run's final writes: a signal that arrived during them is honoured now (exit
    130), with the run complete."""
    if request.signal:
        raise Interrupted(
            f"stopped by signal {request.signal} as the run finished; its outputs are complete"
        )
