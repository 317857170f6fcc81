"""Loading a grid's run directories for the report: config.yaml, evaluations.csv and
summary.json of each run below a folder; unreadable or unfinished runs are kept with the
reason they are skipped."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vadam_rl import run_dir as layout
from vadam_rl.config import load_yaml
from vadam_rl.errors import UserError
from vadam_rl.training.records import read_evaluations


@dataclass
class RunRecord:
    """One run directory as the report sees it.

    ``steps``/``returns`` (``(n_evals,)``) are the evaluation curve of the mean actor;
    ``skip_reason`` is set when the run cannot enter the aggregates (and says why).
    """

    path: Path
    method: str | None = None
    env_id: str | None = None
    seed: int | None = None
    total_steps: int | None = None
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_wall_time_s: float | None = None
    summary: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None

    @property
    def finished(self) -> bool:
        return bool(self.summary and self.summary.get("finished"))

    def final_return(self, final_evals: int = 1) -> float:
        """Mean of the last ``final_evals`` evaluation returns (1: the last evaluation)."""
        return float(np.mean(self.returns[-final_evals:]))

    @property
    def wall_time_s(self) -> float:
        if self.summary and "wall_time_s" in self.summary:
            return float(self.summary["wall_time_s"])
        return float(self.eval_wall_time_s or math.nan)

    @property
    def steps_per_s(self) -> float:
        if self.summary and "steps_per_s" in self.summary:
            return float(self.summary["steps_per_s"])
        return float(self.steps[-1] / self.wall_time_s) if self.wall_time_s else math.nan


class _Unreadable(Exception):
    """A file of the run exists but cannot be parsed."""


def find_run_dirs(runs_dir: Path) -> list[Path]:
    """Every folder at or below ``runs_dir`` holding a config, evaluations or summary file."""
    markers = {layout.CONFIG, layout.EVALUATIONS, layout.SUMMARY}
    found = []
    for root, dirs, files in os.walk(runs_dir):
        if markers & set(files):
            found.append(Path(root))
            dirs.clear()  # a run's own subfolders (policies/) hold no runs
        dirs.sort()
    return sorted(found)


def load_runs(runs_dir: Path, *, include_unfinished: bool = False) -> list[RunRecord]:
    """Read every run directory below ``runs_dir``; unusable ones carry a ``skip_reason``.

    A run without evaluations yet, or (unless ``include_unfinished``) without a finished
    ``summary.json``, is skipped quietly; a run whose files cannot be parsed is skipped with a
    warning. Nothing here raises for a bad run.
    """
    runs = []
    for path in find_run_dirs(Path(runs_dir)):
        run = RunRecord(path)
        try:
            _read_run(run)
        except _Unreadable as err:
            run.skip_reason = f"unreadable: {err}"
            warnings.warn(f"skipping {path}: {run.skip_reason}", stacklevel=2)
        if run.skip_reason is None:
            run.skip_reason = _skip_reason(run, include_unfinished)
        runs.append(run)
    return runs


def _read_run(run: RunRecord) -> None:
    config_path = run.path / layout.CONFIG
    if not config_path.is_file():
        raise _Unreadable(f"no {layout.CONFIG}")
    try:
        config = load_yaml(config_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise _Unreadable(f"{layout.CONFIG}: {error_line(err)}") from None
    if not isinstance(config, dict):
        raise _Unreadable(f"{layout.CONFIG} is not a mapping")
    try:
        run.method = str(config["agent"])
        run.env_id = str(config["env_id"])
        run.seed = int(config["seed"])
        run.total_steps = int(config["total_steps"])
    except (KeyError, TypeError, ValueError) as err:
        raise _Unreadable(f"{layout.CONFIG} lacks a valid {error_line(err)}") from None
    run.config = config
    _read_evaluations(run)
    summary_path = run.path / layout.SUMMARY
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as err:
            raise _Unreadable(f"{layout.SUMMARY}: {error_line(err)}") from None
        if not isinstance(summary, dict):
            raise _Unreadable(f"{layout.SUMMARY} is not a JSON object")
        run.summary = summary


def _read_evaluations(run: RunRecord) -> None:
    try:
        rows = read_evaluations(run.path)
    except UserError as err:
        raise _Unreadable(error_line(err)) from None
    if not rows:
        return
    run.steps = np.array([float(row["step"]) for row in rows])
    run.returns = np.array([float(row["mean_return"]) for row in rows])
    wall = [row["wall_time_s"] for row in rows if "wall_time_s" in row]
    run.eval_wall_time_s = wall[-1] if wall else None


def _skip_reason(run: RunRecord, include_unfinished: bool) -> str | None:
    if run.returns.size == 0:
        return "no evaluations yet"
    if not run.finished and not include_unfinished:
        return (
            f"not finished (last evaluation at step {int(run.steps[-1])} of {run.total_steps}); "
            "resume it or pass --include-unfinished"
        )
    return None


def error_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
