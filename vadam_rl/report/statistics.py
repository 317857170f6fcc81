"""The report's aggregates: per (env, method) group of runs, final returns, IQM, AUC and
curves over seeds with bootstrap intervals (``vadam_rl.stats``), and the comparisons
between methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vadam_rl import stats
from vadam_rl.config import flat_settings
from vadam_rl.report.loading import RunRecord

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


def reader_notes(groups: dict[tuple[str, str], list[RunRecord]], final_evals: int) -> list[str]:
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
