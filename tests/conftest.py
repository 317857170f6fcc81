"""Shared fixtures: running the real CLI in a subprocess, small-network overrides."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# Tests run on 2 cores next to each other's subprocesses: one thread avoids oversubscription.
torch.set_num_threads(1)

# Small networks and budgets for CLI runs: behaviour, not learning, is under test there.
TINY = [
    "--set", "actor.hidden_sizes=[32,32]",
    "--set", "critic.hidden_sizes=[32,32]",
    "--set", "eval_episodes=2",
]  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``expensive`` tests (10 s or more each) first, the others in their usual order.

    ``make test`` runs two xdist workers that hold at most two tests at a time
    (``--maxschedchunk 1``), so the long tests start at once on both and the short ones fill
    the gaps; in file order the last long test kept one worker busy for minutes while the
    other had nothing left to do.
    """
    items.sort(key=lambda item: item.get_closest_marker("expensive") is None)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(
    *args: str, timeout: float = 300, check: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``vadam-rl ARGS`` in a fresh Python process, as a user would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "vadam_rl.commands.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"vadam-rl {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def popen_cli(*args: str, log: Path) -> subprocess.Popen:
    """Start ``vadam-rl ARGS`` in the background, stdout+stderr into ``log``."""
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "vadam_rl.commands.cli", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=cli_env(),
        start_new_session=True,
    )


def wait_for(log: Path, text: str, timeout: float = 120) -> None:
    """Poll ``log`` (a background CLI's output) until ``text`` appears."""
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in {log}:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY)


def tensors(tree: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested dict (a state_dict, a checkpoint) by its key path."""
    if isinstance(tree, dict):
        out: dict[str, torch.Tensor] = {}
        for key, value in tree.items():
            out.update(tensors(value, f"{prefix}/{key}"))
        return out
    return {prefix: tree} if isinstance(tree, torch.Tensor) else {}


def pendulum_args(
    log_dir: Path, name: str, steps: int = 4000, checkpoint_every: int = 1000
) -> list[str]:
    """``train`` arguments for a tiny ddpg-vadam run on Pendulum."""
    return [
        "train", "--agent", "ddpg-vadam", "--env", "Pendulum-v1", "--total-steps", str(steps),
        "--log-dir", str(log_dir), "--run-name", name, "--no-progress", *TINY,
        "--set", "learning_starts=500", "--set", "eval_every=500",
        "--set", f"checkpoint_every={checkpoint_every}",
    ]  # fmt: skip
