"""``vadam-rl report RUNS_DIR``: learning curves, final returns and tables over seeds.

Reads every run directory below RUNS_DIR (see ``run_dir``), groups the runs by (env, method),
where the method is the preset name saved in ``config.yaml`` (``agent``), and writes to
RUNS_DIR/report (or ``out``):

- ``learning_curves.png``: the IQM over seeds of the mean actor's evaluation return vs env
  steps, per method, with a pointwise 95% stratified-bootstrap band (rliable's
  sample-efficiency curve);
- ``final_returns.png``: per method, the final return of every seed (dots) and their IQM with
  its 95% interval;
- ``performance_profiles.png``: per method, the fraction of its runs whose final return is
  above each threshold, with a 95% band (rliable's score distribution);
- ``probability_of_improvement.png``: P(X > Y) of the final returns, with its interval, for
  each comparison;
- ``results.md`` / ``results.csv``: per method seeds, final mean ± std, IQM [CI], mean [CI],
  the area under the evaluation curve (AUC), best, steps, wall-clock, steps/s; for every
  comparison (each method against ``ddpg-adam-plain`` and ``ddpg-adam``, plus the pairs of
  ``COMPARISONS``) the difference of mean final returns, P(X > Y) and the difference of mean
  AUCs, each with its interval; the reference code's published HalfCheetah numbers as
  labelled reference rows. A ``protocol.md`` in RUNS_DIR (what was fixed before the runs)
  is put at the top of results.md.

Definitions, chosen so that a number means the same in every report:

- *final return* of a seed: ``mean_return`` of its last evaluation (the test return of the
  noise-free mean actor at the end of training, as the paper and the reference code report
  it). ``final_evals=k`` averages the last k evaluations instead, which is less noisy but
  mixes in earlier policies; the report states which one it used.
- *curves*: seeds are put on a common grid of env steps, the union of their evaluation
  steps within the range every seed covers, each seed's curve linearly interpolated onto it.
  Runs of one preset normally evaluate at identical steps, and then the grid is exactly those
  steps and nothing is interpolated; with ``num_envs > 1`` or a changed ``eval_every`` the
  steps differ slightly, and interpolation keeps every seed in every point of the band.
- *AUC* of a seed: the trapezoid area under its evaluation curve divided by the steps it
  spans, so it reads as an average return over training (``stats.area_under_curve``).
- *intervals*: 95% stratified percentile bootstrap over seeds, by rliable, 10,000 resamples
  (curves and profiles 2,000), fixed seed (``stats``); ``resamples`` sets both.
- only finished runs (``summary.json``) count unless ``include_unfinished``; the others are
  listed as skipped with the reason, as are unreadable ones (with a warning, no traceback).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro
import yaml

from vadam_rl import run_dir as layout
from vadam_rl import stats
from vadam_rl.commands.options import option
from vadam_rl.config import flat_settings, load_yaml
from vadam_rl.errors import UserError
from vadam_rl.training.records import read_evaluations

LEARNING_CURVES = "learning_curves.png"
FINAL_RETURNS = "final_returns.png"
PERFORMANCE_PROFILES = "performance_profiles.png"
PROBABILITY_OF_IMPROVEMENT = "probability_of_improvement.png"
PROTOCOL = "protocol.md"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
REPORT_DIR = "report"

# Listed in this order in tables and plots; other presets follow alphabetically.
METHOD_ORDER = (
    "ddpg-vadam",
    "ddpg-vadam-adaptive",
    "ddpg-param-noise",
    "ddpg-noisynet",
    "ddpg-vadagrad",
    "ddpg-adam-explore",
    "ddpg-adam",
    "ddpg-adam-plain",
)
# Every other method is compared against each of these that is present.
BASELINES = ("ddpg-adam-plain", "ddpg-adam")
# Further (method, baseline) pairs compared when both are present: does the posterior beat
# the method it is measured against (adaptive parameter noise), and does adapting its scale
# help it.
COMPARISONS = (("ddpg-vadam", "ddpg-param-noise"), ("ddpg-vadam-adaptive", "ddpg-vadam"))

MIN_SEEDS_FOR_INTERVAL = 3
"""Seeds a method needs for a bootstrap interval. A resample of 2 seeds takes one of 3
values, so a 95% percentile interval is the range of those values, and a difference of
2 seeds against 2 "excludes 0" whenever every run of one method ended above every run of
the other: the interval would read as certainty it does not have."""

CSV_COLUMNS = (
    "kind",  # method | difference | reference
    "env_id",
    "method",
    "baseline",  # difference rows: the method subtracted
    "seeds",
    "steps",
    "final_mean",  # difference rows: mean(method) - mean(baseline)
    "final_std",
    "final_se",
    "mean_ci_low",
    "mean_ci_high",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
    "auc_mean",  # difference rows: mean AUC(method) - mean AUC(baseline)
    "auc_std",
    "auc_ci_low",  # difference rows: interval of the AUC difference
    "auc_ci_high",
    "auc_iqm",
    "auc_iqm_ci_low",
    "auc_iqm_ci_high",
    "poi",  # difference rows: P(final of method > final of baseline)
    "poi_ci_low",
    "poi_ci_high",
    "best",
    "wall_clock_s",
    "steps_per_s",
    "note",
)


# --------------------------------------------------------------------------------------------
# Reference numbers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceResult:
    """A published number of the reference code, shown next to ours but never mixed in."""

    method: str
    preset: str
    steps: int
    seeds: int
    final_mean: float
    final_se: float | None
    note: str = ""


REFERENCE_SOURCE = (
    "emtiyaz/vadam, tensorflow_RL (TensorFlow 1.2, gym HalfCheetah-v1, seeds 0-4, test return "
    "of the mean actor over 20 episodes, every 10 training episodes). Numbers as the reference "
    "code reports them; its per-seed result files are not recomputed here. Note that the "
    "shaded band of the reference figure "
    "(plot_halfcheetah.py) is the std over the 20 test episodes of the seed-averaged return, "
    "not a spread over seeds."
)
REFERENCE = (
    ReferenceResult("Vadam", "ddpg-vadam", 3_000_000, 5, 4368.0, 245.0),
    ReferenceResult("Adam-Explore", "ddpg-adam-explore", 3_000_000, 5, 4336.0, 865.0),
    ReferenceResult("VadaGrad", "ddpg-vadagrad", 3_000_000, 5, 3564.0, 383.0),
    ReferenceResult("Adam-Plain", "ddpg-adam-plain", 3_000_000, 5, 3147.0, 1225.0),
    ReferenceResult("Vadam", "ddpg-vadam", 1_000_000, 5, 2999.0, None),
    ReferenceResult("Adam-Plain", "ddpg-adam-plain", 1_000_000, 5, 2328.0, None),
    ReferenceResult(
        "Vadam", "ddpg-vadam", 3_000_000, 5, 4244.0, None, "re-run, same seeds (HalfCheetah-v1_2nd)"
    ),
    ReferenceResult(
        "Adam-Plain",
        "ddpg-adam-plain",
        3_000_000,
        5,
        4571.0,
        None,
        "re-run, same seeds (HalfCheetah-v1_2nd)",
    ),
)
REFERENCE_ENV = "HalfCheetah-v1"


# --------------------------------------------------------------------------------------------
# Loading runs
# --------------------------------------------------------------------------------------------


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
        raise _Unreadable(f"{layout.CONFIG}: {_one_line(err)}") from None
    if not isinstance(config, dict):
        raise _Unreadable(f"{layout.CONFIG} is not a mapping")
    try:
        run.method = str(config["agent"])
        run.env_id = str(config["env_id"])
        run.seed = int(config["seed"])
        run.total_steps = int(config["total_steps"])
    except (KeyError, TypeError, ValueError) as err:
        raise _Unreadable(f"{layout.CONFIG} lacks a valid {_one_line(err)}") from None
    run.config = config
    _read_evaluations(run)
    summary_path = run.path / layout.SUMMARY
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as err:
            raise _Unreadable(f"{layout.SUMMARY}: {_one_line(err)}") from None
        if not isinstance(summary, dict):
            raise _Unreadable(f"{layout.SUMMARY} is not a JSON object")
        run.summary = summary


def _read_evaluations(run: RunRecord) -> None:
    try:
        rows = read_evaluations(run.path)
    except UserError as err:
        raise _Unreadable(_one_line(err)) from None
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


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """One method on one env, aggregated over its seeds."""

    env_id: str
    method: str
    seeds: list[int]
    paths: list[Path]
    final_returns: np.ndarray  # (n_seeds,)
    mean: stats.Estimate
    iqm: stats.Estimate
    std: float
    se: float
    aucs: np.ndarray  # (n_seeds,) area under each seed's evaluation curve, per step
    auc_iqm: stats.Estimate
    best: float  # mean over seeds of each seed's best evaluation
    final_steps: list[int]
    wall_clock_s: float  # mean per run
    steps_per_s: float  # mean per run
    curve_steps: np.ndarray  # (n_grid,)
    curves: np.ndarray  # (n_seeds, n_grid)

    def steps_label(self, thousands: str = "") -> str:
        """The seeds' final env step, or its range when the seeds stopped at different steps."""
        low, high = (f"{s:{thousands}d}" for s in (min(self.final_steps), max(self.final_steps)))
        return low if low == high else f"{low}-{high}"


@dataclass
class Difference:
    """``method`` against ``baseline`` (same env): the difference of mean final returns
    (``estimate``), P(final of method > final of baseline) (``improvement``) and the
    difference of mean AUCs (``auc``)."""

    env_id: str
    method: str
    baseline: str
    estimate: stats.Estimate
    n_method: int
    n_baseline: int
    improvement: stats.Estimate
    auc: stats.Estimate


@dataclass
class ReportResult:
    """What ``write_report`` computed and where it wrote it."""

    out_dir: Path
    methods: list[MethodResult]
    differences: list[Difference]
    skipped: list[RunRecord]
    notes: list[str]
    table: str  # the markdown of results.md
    files: dict[str, Path] = field(default_factory=dict)
    resamples: int = stats.N_RESAMPLES
    curve_resamples: int = stats.CURVE_RESAMPLES


def aligned_curves(runs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Put the seeds' evaluation curves on one grid of env steps.

    The grid is the union of all evaluation steps inside the range every run covers
    (from the latest first evaluation to the earliest last one); each run is linearly
    interpolated onto it. Returns ``(steps: (n_grid,), returns: (n_runs, n_grid))``.
    """
    start = max(float(run.steps[0]) for run in runs)
    stop = min(float(run.steps[-1]) for run in runs)
    grid = np.unique(np.concatenate([run.steps for run in runs]))
    grid = grid[(grid >= start) & (grid <= stop)]
    return grid, np.stack([np.interp(grid, run.steps, run.returns) for run in runs])


def aggregate(
    runs: list[RunRecord], final_evals: int = 1, resamples: int = stats.N_RESAMPLES
) -> MethodResult:
    """Statistics of one (env, method) group of usable runs."""
    runs = sorted(runs, key=lambda run: (run.seed, str(run.path)))
    few = len(runs) < MIN_SEEDS_FOR_INTERVAL
    finals = np.array([run.final_return(final_evals) for run in runs])
    aucs = np.array([stats.area_under_curve(run.steps, run.returns) for run in runs])
    grid, curves = aligned_curves(runs)
    return MethodResult(
        env_id=str(runs[0].env_id),
        method=str(runs[0].method),
        seeds=[int(run.seed or 0) for run in runs],
        paths=[run.path for run in runs],
        final_returns=finals,
        mean=_no_interval_if(few, stats.bootstrap_ci(finals, stats.mean, n_resamples=resamples)),
        iqm=_no_interval_if(few, stats.bootstrap_ci(finals, stats.iqm, n_resamples=resamples)),
        std=stats.sample_std(finals),
        se=stats.standard_error(finals),
        aucs=aucs,
        auc_iqm=_no_interval_if(few, stats.bootstrap_ci(aucs, stats.iqm, n_resamples=resamples)),
        best=float(np.mean([run.returns.max() for run in runs])),
        final_steps=[int(run.steps[-1]) for run in runs],
        wall_clock_s=float(np.mean([run.wall_time_s for run in runs])),
        steps_per_s=float(np.mean([run.steps_per_s for run in runs])),
        curve_steps=grid,
        curves=curves,
    )


def _no_interval_if(too_few_seeds: bool, estimate: stats.Estimate) -> stats.Estimate:
    """``estimate`` without its bounds where there are too few seeds for an interval."""
    return stats.Estimate(estimate.value, np.nan, np.nan) if too_few_seeds else estimate


def method_sort_key(method: str) -> tuple[int, str]:
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return order, method


def compare(
    result: MethodResult, base: MethodResult, resamples: int = stats.N_RESAMPLES
) -> Difference:
    """``result``'s method against ``base``'s, on final returns and AUCs."""
    few = min(len(result.seeds), len(base.seeds)) < MIN_SEEDS_FOR_INTERVAL
    return Difference(
        env_id=result.env_id,
        method=result.method,
        baseline=base.method,
        estimate=_no_interval_if(
            few,
            stats.difference_ci(result.final_returns, base.final_returns, n_resamples=resamples),
        ),
        n_method=len(result.seeds),
        n_baseline=len(base.seeds),
        improvement=_no_interval_if(
            few,
            stats.probability_of_improvement(
                result.final_returns, base.final_returns, n_resamples=resamples
            ),
        ),
        auc=_no_interval_if(
            few, stats.difference_ci(result.aucs, base.aucs, n_resamples=resamples)
        ),
    )


def differences(
    results: list[MethodResult], resamples: int = stats.N_RESAMPLES
) -> list[Difference]:
    """Every method against each baseline present on the same env, then the pairs of
    ``COMPARISONS`` present (each unordered pair once)."""
    out: list[Difference] = []
    done: set[frozenset[str]] = set()
    for env_id in sorted({r.env_id for r in results}):
        by_method = {r.method: r for r in results if r.env_id == env_id}
        pairs = [
            (method, baseline)
            for baseline in BASELINES
            if baseline in by_method
            for method in by_method
        ]
        pairs += [(m, b) for m, b in COMPARISONS if m in by_method and b in by_method]
        for method, baseline in pairs:
            pair = frozenset((method, baseline))
            if method == baseline or pair in done:
                continue
            done.add(pair)
            out.append(compare(by_method[method], by_method[baseline], resamples))
    return out


def config_differences(runs: list[RunRecord]) -> list[str]:
    """Config keys (dotted) whose values differ between runs of one group, seed aside."""
    flat = [flat_settings(run.config) for run in runs]
    keys = sorted(set().union(*flat) - {"seed", "device"})
    return [key for key in keys if len({repr(f.get(key)) for f in flat}) > 1]


def _notes(groups: dict[tuple[str, str], list[RunRecord]], final_evals: int) -> list[str]:
    """What a reader must know to trust the table: mixed configs, repeated seeds, budgets."""
    notes = []
    if final_evals > 1:
        notes.append(f"Final return = mean of each seed's last {final_evals} evaluations.")
    few = [
        f"{method} on {env_id}: {len(runs)}"
        for (env_id, method), runs in groups.items()
        if len(runs) < MIN_SEEDS_FOR_INTERVAL
    ]
    if few:
        notes.append(
            f"Too few seeds for an interval ({'; '.join(few)}): intervals need at least "
            f"{MIN_SEEDS_FOR_INTERVAL} seeds per method, so those methods and their "
            "comparisons have none, and no difference is marked as excluding 0."
        )
    for (env_id, method), runs in groups.items():
        keys = config_differences(runs)
        if keys:
            notes.append(
                f"{method} on {env_id}: the runs differ in {', '.join(keys)}; they are "
                "aggregated together because they share the preset name."
            )
        seeds = [run.seed for run in runs]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=lambda s: s or 0)
        if repeated:
            notes.append(
                f"{method} on {env_id}: seed(s) {', '.join(map(str, repeated))} appear in "
                "more than one run directory; each directory counts as one sample."
            )
    return notes


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _with_ci(estimate: stats.Estimate, signed: bool = False, digits: int = 1) -> str:
    sign = "+" if signed else ""
    value = f"{estimate.value:{sign}.{digits}f}"
    if not math.isfinite(estimate.low):
        return f"{value} [too few seeds]"
    return f"{value} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def _excludes(estimate: stats.Estimate, value: float) -> str:
    if not math.isfinite(estimate.low):
        return "n/a"
    return "yes" if estimate.excludes(value) else "no"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _seeds(seeds: list[int]) -> str:
    return f"{len(seeds)} ({', '.join(map(str, seeds))})"


def render_markdown(
    result: ReportResult, runs_dir: Path, final_evals: int, protocol: str | None = None
) -> str:
    """The text of results.md (also printed to the terminal)."""
    final = "last evaluation" if final_evals == 1 else f"mean of the last {final_evals} evals"
    lines = [f"# Results: {runs_dir}", ""]
    if protocol:
        lines += [protocol.strip(), ""]
    lines += [
        f"Final return: evaluation return of the mean (noise-free) actor, {final}, per seed. "
        "AUC: area under a seed's evaluation curve divided by the steps it spans (an average "
        "return over training). Intervals: 95% stratified percentile bootstrap over seeds, "
        f"rliable ({result.resamples:,} resamples, curves and profiles "
        f"{result.curve_resamples:,}, seed {stats.BOOTSTRAP_SEED}). std: sample std over "
        "seeds. best: mean over seeds of each seed's best evaluation. wall-clock and steps/s: "
        "mean per run.",
    ]
    for env_id in sorted({r.env_id for r in result.methods}):
        lines += [
            "",
            f"## {env_id}",
            "",
            "| method | seeds | final mean ± std | IQM [95% CI] | mean [95% CI] "
            "| AUC mean ± std | AUC IQM [95% CI] | best | steps | wall-clock | steps/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in result.methods if r.env_id == env_id):
            lines.append(
                f"| {r.method} | {_seeds(r.seeds)} | {_num(r.mean.value)} ± {_num(r.std)} "
                f"| {_with_ci(r.iqm)} | {_with_ci(r.mean)} "
                f"| {_num(float(np.mean(r.aucs)))} ± {_num(stats.sample_std(r.aucs))} "
                f"| {_with_ci(r.auc_iqm)} | {_num(r.best)} | {r.steps_label(',')} "
                f"| {_duration(r.wall_clock_s)} | {_num(r.steps_per_s, 0)} |"
            )
        lines += ["", "| method | final return of each seed | AUC of each seed |", "|---|---|---|"]
        for r in (r for r in result.methods if r.env_id == env_id):
            finals = ", ".join(
                f"s{k}: {v:.0f}" for k, v in zip(r.seeds, r.final_returns, strict=True)
            )
            aucs = ", ".join(f"s{k}: {v:.0f}" for k, v in zip(r.seeds, r.aucs, strict=True))
            lines.append(f"| {r.method} | {finals} | {aucs} |")
        diffs = [d for d in result.differences if d.env_id == env_id]
        if diffs:
            lines += [
                "",
                "Comparisons (X − Y; each method's seeds resampled independently): the "
                "difference of mean final returns, P(X > Y) (the chance that a run of X ends "
                "above a run of Y; 0.5: no difference) and the difference of mean AUCs.",
                "",
                "| X − Y | final: difference [95% CI] | excludes 0 | P(X > Y) [95% CI] "
                "| excludes 0.5 | AUC: difference [95% CI] | seeds |",
                "|---|---|---|---|---|---|---|",
            ]
            for d in diffs:
                lines.append(
                    f"| {d.method} − {d.baseline} | {_with_ci(d.estimate, signed=True)} "
                    f"| {_excludes(d.estimate, 0.0)} | {_with_ci(d.improvement, digits=2)} "
                    f"| {_excludes(d.improvement, 0.5)} | {_with_ci(d.auc, signed=True)} "
                    f"| {d.n_method} vs {d.n_baseline} |"
                )
    lines += [
        "",
        f"## Reference: the paper's code on {REFERENCE_ENV} (not measured here)",
        "",
        REFERENCE_SOURCE,
        "",
        "| method (reference) | preset here | env | steps | seeds | final return | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for ref in REFERENCE:
        value = f"{ref.final_mean:.0f}" + (
            f" ± {ref.final_se:.0f} (s.e.)" if ref.final_se is not None else ""
        )
        lines.append(
            f"| {ref.method} | {ref.preset} | {REFERENCE_ENV} | {ref.steps:,} | {ref.seeds} "
            f"| {value} | {ref.note} |"
        )
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    if result.skipped:
        lines += ["", "## Skipped runs", ""]
        lines += [f"- `{run.path}`: {run.skip_reason}" for run in result.skipped]
    return "\n".join(lines) + "\n"


def render_csv(result: ReportResult) -> str:
    """results.csv: one row per method, per difference and per reference number."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in result.methods:
        writer.writerow(
            {
                "kind": "method",
                "env_id": r.env_id,
                "method": r.method,
                "seeds": len(r.seeds),
                "steps": r.steps_label(),
                "final_mean": r.mean.value,
                "final_std": r.std,
                "final_se": r.se,
                "mean_ci_low": r.mean.low,
                "mean_ci_high": r.mean.high,
                "iqm": r.iqm.value,
                "iqm_ci_low": r.iqm.low,
                "iqm_ci_high": r.iqm.high,
                "auc_mean": float(np.mean(r.aucs)),
                "auc_std": stats.sample_std(r.aucs),
                "auc_iqm": r.auc_iqm.value,
                "auc_iqm_ci_low": r.auc_iqm.low,
                "auc_iqm_ci_high": r.auc_iqm.high,
                "best": r.best,
                "wall_clock_s": r.wall_clock_s,
                "steps_per_s": r.steps_per_s,
                "note": "seeds " + " ".join(map(str, r.seeds)),
            }
        )
    for d in result.differences:
        writer.writerow(
            {
                "kind": "difference",
                "env_id": d.env_id,
                "method": d.method,
                "baseline": d.baseline,
                "seeds": f"{d.n_method} vs {d.n_baseline}",
                "final_mean": d.estimate.value,
                "mean_ci_low": d.estimate.low,
                "mean_ci_high": d.estimate.high,
                "auc_mean": d.auc.value,
                "auc_ci_low": d.auc.low,
                "auc_ci_high": d.auc.high,
                "poi": d.improvement.value,
                "poi_ci_low": d.improvement.low,
                "poi_ci_high": d.improvement.high,
                "note": "mean(method) - mean(baseline) of final returns and AUCs; "
                "poi = P(method > baseline); independent bootstrap",
            }
        )
    for ref in REFERENCE:
        writer.writerow(
            {
                "kind": "reference",
                "env_id": REFERENCE_ENV,
                "method": ref.preset,
                "seeds": ref.seeds,
                "steps": ref.steps,
                "final_mean": ref.final_mean,
                "final_se": "" if ref.final_se is None else ref.final_se,
                "note": f"{ref.method}, reference code, as it reports them"
                + (f"; {ref.note}" if ref.note else ""),
            }
        )
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot, no display, no global backend switch)
# --------------------------------------------------------------------------------------------


def _colors(methods: list[MethodResult]) -> dict[str, str]:
    names = sorted({r.method for r in methods}, key=method_sort_key)
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _env_panels(
    methods: list[MethodResult], height: float | None = None
) -> tuple[Any, list[tuple[Any, str, list[MethodResult]]]]:
    """A figure with one panel per env, and each panel's (axes, env, methods on it). Without
    ``height``, tall enough for a row per method."""
    from matplotlib.figure import Figure

    envs = sorted({r.env_id for r in methods})
    groups = [[r for r in methods if r.env_id == env_id] for env_id in envs]
    if height is None:
        height = 1.6 + 0.7 * max(len(group) for group in groups)
    fig = Figure(figsize=(6.4 * len(envs), height), layout="constrained")
    axes = fig.subplots(1, len(envs), squeeze=False)[0]
    return fig, list(zip(axes, envs, groups, strict=True))


def plot_learning_curves(
    methods: list[MethodResult], path: Path, resamples: int = stats.CURVE_RESAMPLES
) -> None:
    """IQM evaluation return vs env steps per method, 95% pointwise band; a panel per env."""
    colors = _colors(methods)
    fig, panels = _env_panels(methods, 4.6)
    for ax, env_id, group in panels:
        for r in group:
            center, low, high = stats.curve_band(r.curves, n_resamples=resamples)
            marker = "o" if r.curve_steps.size <= 20 else None
            ax.plot(
                r.curve_steps,
                center,
                color=colors[r.method],
                marker=marker,
                markersize=3,
                label=f"{r.method} ({len(r.seeds)} seed{'' if len(r.seeds) == 1 else 's'})",
            )
            if len(r.seeds) > 1:
                ax.fill_between(r.curve_steps, low, high, color=colors[r.method], alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return (mean actor)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.suptitle("IQM over seeds with 95% stratified-bootstrap band (pointwise, rliable)")
    _save_png(fig, path)


def _save_png(fig: Any, path: Path) -> None:
    """Render to memory, then write atomically: a killed report leaves no half a PNG."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    layout.atomic_write_bytes(path, png.getvalue())


def plot_final_returns(methods: list[MethodResult], path: Path, final_evals: int = 1) -> None:
    """Per method: every seed's final return (dots) and the IQM with its 95% CI (bar)."""
    colors = _colors(methods)
    fig, panels = _env_panels(methods)
    for ax, env_id, group in panels:
        ys = np.arange(len(group))[::-1]  # first method on top
        for y, r in zip(ys, group, strict=True):
            jitter = np.linspace(-0.18, 0.18, len(r.seeds)) if len(r.seeds) > 1 else [0.0]
            ax.scatter(
                r.final_returns, y + np.asarray(jitter), color=colors[r.method], alpha=0.55, s=22
            )
            xerr = None
            if math.isfinite(r.iqm.low):
                xerr = [[r.iqm.value - r.iqm.low], [r.iqm.high - r.iqm.value]]
            ax.errorbar(
                [r.iqm.value], [y], xerr=xerr, fmt="D", color=colors[r.method],
                markeredgecolor="black", markersize=8, capsize=5, elinewidth=2.5,
            )  # fmt: skip
        ax.set_yticks(ys, labels=[f"{r.method} (n={len(r.seeds)})" for r in group])
        ax.set_ylim(-0.6, len(group) - 0.4)
        which = "last evaluation" if final_evals == 1 else f"mean of last {final_evals} evals"
        ax.set_xlabel(f"final return ({which})")
        ax.set_title(env_id)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Dots: seeds.  Diamond and bar: IQM with 95% bootstrap CI")
    _save_png(fig, path)


def plot_performance_profiles(
    methods: list[MethodResult], path: Path, resamples: int = stats.CURVE_RESAMPLES
) -> None:
    """Fraction of each method's runs with a final return above tau, vs tau, 95% band."""
    colors = _colors(methods)
    fig, panels = _env_panels(methods, 4.6)
    for ax, env_id, group in panels:
        finals = np.concatenate([r.final_returns for r in group])
        span = max(float(finals.max() - finals.min()), 1.0)
        taus = np.linspace(finals.min() - 0.05 * span, finals.max() + 0.05 * span, 201)
        profiles = stats.performance_profiles(
            {r.method: r.final_returns for r in group}, taus, n_resamples=resamples
        )
        for r in group:
            profile, low, high = profiles[r.method]
            ax.plot(taus, profile, color=colors[r.method], label=f"{r.method} (n={len(r.seeds)})")
            if len(r.seeds) > 1:
                ax.fill_between(taus, low, high, color=colors[r.method], alpha=0.15)
        ax.set_title(env_id)
        ax.set_xlabel("final return threshold tau")
        ax.set_ylabel("fraction of runs with final return > tau")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.suptitle("Performance profiles with 95% stratified-bootstrap bands (rliable)")
    _save_png(fig, path)


def plot_probability_of_improvement(differences: list[Difference], path: Path) -> None:
    """P(X > Y) of the final returns with its 95% interval, one bar per comparison."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, max(3.0, 1.4 + 0.45 * len(differences))), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(differences))[::-1]
    for y, d in zip(ys, differences, strict=True):
        p = d.improvement
        xerr = None
        if math.isfinite(p.low):
            xerr = [[p.value - p.low], [p.high - p.value]]
        color = "C2" if p.low > 0.5 else ("C3" if p.high < 0.5 else "C0")
        ax.barh([y], [p.value], color=color, alpha=0.35, height=0.6)
        ax.errorbar([p.value], [y], xerr=xerr, fmt="o", color=color, capsize=4, elinewidth=2)
    several_envs = len({d.env_id for d in differences}) > 1  # else the title names it
    labels = [f"{d.method} > {d.baseline} ({f'{d.env_id}, ' if several_envs else ''}"
              f"n={d.n_method}/{d.n_baseline})" for d in differences]  # fmt: skip
    ax.set_yticks(ys, labels=labels, fontsize="small")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("P(X > Y): the chance that a run of X ends above a run of Y\n(final return)")
    ax.grid(axis="x", alpha=0.3)
    envs = ", ".join(sorted({d.env_id for d in differences}))
    fig.suptitle(f"{envs}: probability of improvement, 95% stratified-bootstrap CI (rliable)")
    _save_png(fig, path)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def summarize(
    runs_dir: Path,
    out_dir: Path | None = None,
    *,
    final_evals: int = 1,
    include_unfinished: bool = False,
    resamples: int | None = None,
) -> ReportResult:
    """Aggregate the runs below ``runs_dir`` into the report's tables; writes nothing.

    ``out_dir`` defaults to ``runs_dir/report``. ``resamples`` sets the bootstrap resamples of
    every interval (default: ``stats.N_RESAMPLES``, curves and profiles
    ``stats.CURVE_RESAMPLES``). Raises ``UserError`` when ``runs_dir`` is not a folder or
    holds no usable run; individual bad runs are skipped, never fatal.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} is not a directory")
    if final_evals < 1:
        raise UserError(f"final_evals must be >= 1, got {final_evals}")
    if resamples is not None and resamples < 100:
        raise UserError(f"resamples must be >= 100 for a 95% interval, got {resamples}")
    n_boot = resamples or stats.N_RESAMPLES
    n_curve = resamples or stats.CURVE_RESAMPLES
    protocol = None
    if (runs_dir / PROTOCOL).is_file():
        try:
            protocol = (runs_dir / PROTOCOL).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read {runs_dir / PROTOCOL}: {_one_line(err)}") from None
    runs = load_runs(runs_dir, include_unfinished=include_unfinished)
    skipped = [run for run in runs if run.skip_reason is not None]
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.skip_reason is None:
            groups[(str(run.env_id), str(run.method))].append(run)
    if not groups:
        why = ""
        if skipped:
            why = f"; {len(skipped)} skipped, e.g. {skipped[0].path}: {skipped[0].skip_reason}"
        raise UserError(f"no usable runs below {runs_dir}{why}")
    keys = sorted(groups, key=lambda key: (key[0], method_sort_key(key[1])))
    methods = [aggregate(groups[key], final_evals, n_boot) for key in keys]
    out_dir = Path(out_dir) if out_dir is not None else runs_dir / REPORT_DIR
    result = ReportResult(
        out_dir=out_dir,
        methods=methods,
        differences=differences(methods, n_boot),
        skipped=skipped,
        notes=_notes({key: groups[key] for key in keys}, final_evals),
        table="",
        resamples=n_boot,
        curve_resamples=n_curve,
    )
    result.table = render_markdown(result, runs_dir, final_evals, protocol)
    return result


def write_report(
    runs_dir: Path,
    out_dir: Path | None = None,
    *,
    final_evals: int = 1,
    include_unfinished: bool = False,
    resamples: int | None = None,
) -> ReportResult:
    """``summarize`` the runs below ``runs_dir`` and write the figures and tables to
    ``out_dir`` (default ``runs_dir/report``)."""
    result = summarize(
        runs_dir,
        out_dir,
        final_evals=final_evals,
        include_unfinished=include_unfinished,
        resamples=resamples,
    )
    out_dir, methods = result.out_dir, result.methods
    n_curve = result.curve_resamples
    out_dir.mkdir(parents=True, exist_ok=True)
    result.files = {
        "learning_curves": out_dir / LEARNING_CURVES,
        "final_returns": out_dir / FINAL_RETURNS,
        "performance_profiles": out_dir / PERFORMANCE_PROFILES,
        "results_md": out_dir / RESULTS_MD,
        "results_csv": out_dir / RESULTS_CSV,
    }
    plot_learning_curves(methods, result.files["learning_curves"], n_curve)
    plot_final_returns(methods, result.files["final_returns"], final_evals)
    plot_performance_profiles(methods, result.files["performance_profiles"], n_curve)
    if result.differences:
        result.files["probability_of_improvement"] = out_dir / PROBABILITY_OF_IMPROVEMENT
        plot_probability_of_improvement(
            result.differences, result.files["probability_of_improvement"]
        )
    layout.atomic_write_text(result.files["results_md"], result.table)
    layout.atomic_write_text(result.files["results_csv"], render_csv(result))
    return result


def report_command(
    runs_dir: Annotated[tyro.conf.Positional[Path], option("RUNS_DIR")],
    out: Annotated[Path | None, option("DIR", "RUNS_DIR/report")] = None,
    final_evals: Annotated[int, option("K")] = 1,
    include_unfinished: bool = False,
    resamples: Annotated[int | None, option("N", "10000; curves and profiles 2000")] = None,
) -> None:
    """Aggregate the runs below RUNS_DIR: learning curves, final returns, tables with CIs.

    Writes learning_curves.png, final_returns.png, performance_profiles.png,
    probability_of_improvement.png, results.md and results.csv and prints the table.
    Intervals are 95% stratified percentile bootstraps over seeds (rliable). A protocol.md
    in RUNS_DIR is put at the top of results.md.

    Args:
        runs_dir: Folder holding run directories (any depth), e.g. runs/compare.
        out: Where to write the report.
        final_evals: Final return = mean of each seed's last K evaluations (1: as the paper).
        include_unfinished: Count unfinished runs at their latest evaluation (a running grid).
        resamples: Bootstrap resamples of every interval (fewer: faster, noisier bounds).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped runs are listed below, with their reason
        result = write_report(
            runs_dir,
            out,
            final_evals=final_evals,
            include_unfinished=include_unfinished,
            resamples=resamples,
        )
    print(result.table)
    for run in result.skipped:
        print(f"skipped {run.path}: {run.skip_reason}", file=sys.stderr)
    print(
        f"report written to {result.out_dir}/ ({', '.join(p.name for p in result.files.values())})"
    )
