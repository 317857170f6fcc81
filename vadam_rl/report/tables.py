"""The report's tables: ``results.md`` (also printed) and ``results.csv``, with the reference
code's published numbers as labelled rows."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vadam_rl import stats
from vadam_rl.report.statistics import ReportResult

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
