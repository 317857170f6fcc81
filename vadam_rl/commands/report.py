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

import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import tyro

from vadam_rl import run_dir as layout
from vadam_rl import stats
from vadam_rl.commands.options import option
from vadam_rl.errors import UserError
from vadam_rl.report.figures import (
    plot_final_returns,
    plot_learning_curves,
    plot_performance_profiles,
    plot_probability_of_improvement,
)
from vadam_rl.report.loading import RunRecord, error_line, load_runs
from vadam_rl.report.statistics import (
    ReportResult,
    aggregate,
    differences,
    method_sort_key,
    reader_notes,
)
from vadam_rl.report.tables import render_csv, render_markdown

LEARNING_CURVES = "learning_curves.png"
FINAL_RETURNS = "final_returns.png"
PERFORMANCE_PROFILES = "performance_profiles.png"
PROBABILITY_OF_IMPROVEMENT = "probability_of_improvement.png"
PROTOCOL = "protocol.md"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
REPORT_DIR = "report"


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
            raise UserError(f"cannot read {runs_dir / PROTOCOL}: {error_line(err)}") from None
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
        notes=reader_notes({key: groups[key] for key in keys}, final_evals),
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
