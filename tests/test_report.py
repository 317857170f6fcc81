"""The report and its statistics, on synthetic run directories whose answers are known."""

import csv
import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli
from matplotlib.image import imread

from vadam_rl import run_dir as layout
from vadam_rl import stats
from vadam_rl.commands.report import summarize, write_report
from vadam_rl.config import TrainConfig, save_config
from vadam_rl.errors import UserError
from vadam_rl.report.loading import RunRecord, load_runs
from vadam_rl.report.statistics import aggregate, aligned_curves, compare
from vadam_rl.report.tables import render_csv

# Final returns per seed chosen so that mean and IQM differ: the IQM drops the outlier 100.
VADAM_FINALS = [10.0, 20.0, 30.0, 40.0, 100.0]  # mean 40, IQM mean(20, 30, 40) = 30
PLAIN_FINALS = [0.0, 5.0, 10.0, 15.0, 20.0]  # mean 10, IQM 10
# Reports in tests resample little: the values tested are exact, the intervals only bracket.
FEW = 200


def make_run(
    root: Path,
    method: str,
    seed: int,
    returns: list[float],
    *,
    steps: list[int] | None = None,
    env_id: str = "Pendulum-v1",
    finished: bool = True,
) -> Path:
    """A run directory as training leaves it: config.yaml, evaluations.csv, summary.json."""
    steps = steps or [1000 * (i + 1) for i in range(len(returns))]
    path = root / f"{method}_{env_id}_s{seed}"
    path.mkdir(parents=True)
    total = steps[-1] if finished else steps[-1] + 1000
    save_config(
        TrainConfig(agent=method, env_id=env_id, seed=seed, total_steps=total),
        path / layout.CONFIG,
    )
    with (path / layout.EVALUATIONS).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(layout.EVAL_COLUMNS)
        for step, value in zip(steps, returns, strict=True):
            writer.writerow([step, value, 1.0, 200, 2, step / 100])
    if finished:
        summary = {
            "finished": True,
            "total_steps": steps[-1],
            "wall_time_s": steps[-1] / 100,
            "steps_per_s": 100.0,
            "final_eval_return": returns[-1],
            "best_eval_return": max(returns),
        }
        (path / layout.SUMMARY).write_text(json.dumps(summary))
    return path


def make_grid(root: Path) -> None:
    """ddpg-vadam and ddpg-adam-plain, 5 seeds each; the curves rise to the known finals."""
    for method, finals in (("ddpg-vadam", VADAM_FINALS), ("ddpg-adam-plain", PLAIN_FINALS)):
        for seed, final in enumerate(finals):
            make_run(root, method, seed, [-50.0, final / 2, final])


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([100, 1, 3, 2, 4], 3.0),  # n=5: floor(1.25) = 1 cut per side -> mean(2, 3, 4)
        ([1, 60, 2, 3, 4, 5], 3.5),  # n=6: floor(1.5) = 1 -> mean(2, 3, 4, 5)
        ([8, 7, 6, 5, 4, 3, 2, 1], 4.5),  # n=8: 2 cut per side -> mean(3, 4, 5, 6)
        ([1, 2, 9], 4.0),  # n=3: nothing cut -> plain mean
    ],
)
def test_iqm_is_the_trimmed_mean_with_rliables_rounding(values: list[float], expected: float):
    assert stats.iqm(values) == pytest.approx(expected)


def test_bootstrap_with_a_fixed_seed_is_reproducible():
    x = np.random.default_rng(1).normal(size=10)
    assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(x, seed=3)
    assert stats.bootstrap_ci(x, seed=3) != stats.bootstrap_ci(x, seed=4)


def test_mean_ci_of_a_large_sample_contains_the_true_mean_with_the_textbook_width():
    x = np.random.default_rng(0).normal(5.0, 2.0, size=2000)
    ci = stats.bootstrap_ci(x, stats.mean)
    assert ci.low < 5.0 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(2000), rel=0.15)


def test_mean_ci_covers_the_true_mean_in_about_95_percent_of_samples():
    rng = np.random.default_rng(7)
    covered = []
    for i in range(300):
        ci = stats.bootstrap_ci(rng.normal(0.0, 1.0, size=30), n_resamples=500, seed=i)
        covered.append(ci.low < 0.0 < ci.high)
    # The percentile bootstrap undercovers at n=30: about 0.93 (a plain-numpy simulation of
    # 4000 samples gives 0.933). 300 draws: s.d. 0.015; the bounds are 4 s.d. either side.
    assert 0.87 <= np.mean(covered) <= 0.99


def test_iqm_ci_brackets_the_iqm():
    x = np.array(VADAM_FINALS)
    ci = stats.bootstrap_ci(x, stats.iqm)
    assert ci.value == pytest.approx(30.0)
    assert ci.low <= 30.0 <= ci.high and ci.low >= 10.0 and ci.high <= 100.0


def test_difference_ci_resamples_each_method_independently():
    rng = np.random.default_rng(2)
    a, b = rng.normal(10.0, 1.0, size=400), rng.normal(7.0, 2.0, size=100)
    diff = stats.difference_ci(a, b)
    assert diff.value == pytest.approx(a.mean() - b.mean())
    assert diff.low < 3.0 < diff.high and diff.excludes_zero()
    # Two independent samples: var = 1/400 + 4/100.
    assert diff.high - diff.low == pytest.approx(2 * 1.96 * np.sqrt(1 / 400 + 4 / 100), rel=0.15)


def test_difference_of_equal_methods_includes_zero():
    rng = np.random.default_rng(3)
    diff = stats.difference_ci(rng.normal(size=20), rng.normal(size=20))
    assert diff.low < 0.0 < diff.high and not diff.excludes_zero()


def test_one_seed_gives_a_value_but_no_interval():
    ci = stats.bootstrap_ci([4.0])
    assert ci.value == 4.0 and np.isnan(ci.low) and np.isnan(ci.high)
    assert np.isnan(stats.difference_ci([1.0], [2.0, 3.0]).low)


def test_curve_band_is_the_mean_curve_with_a_band_around_it():
    curves = np.array([[0.0, 10.0], [2.0, 20.0], [4.0, 30.0]])
    center, low, high = stats.curve_band(curves)
    assert center.tolist() == [2.0, 20.0]
    assert np.all(low <= center) and np.all(center <= high) and np.all(high - low > 0)
    assert np.all(low >= curves.min(axis=0)) and np.all(high <= curves.max(axis=0))


# --------------------------------------------------------------------------------------------
# Loading and aligning runs
# --------------------------------------------------------------------------------------------


def test_aggregates_equal_rliables_own_functions():
    from rliable import metrics

    rng = np.random.default_rng(7)
    for n in range(1, 13):
        scores = rng.normal(size=(n, 1))
        # Same values summed in another order: equal to a few ulps of the sum's magnitude.
        tol = 8 * n * np.finfo(float).eps * np.abs(scores).max()
        assert abs(stats.iqm(scores) - metrics.aggregate_iqm(scores)) <= tol
        assert abs(stats.mean(scores) - metrics.aggregate_mean(scores)) <= tol


def test_probability_of_improvement_counts_pairs_with_ties_as_half():
    from rliable import metrics

    x, y = [3.0, 1.0, 2.0, 2.0], [2.0, 0.0, 5.0]
    # pairs x > y: 3>2, 3>0, 1>0, 2>0, 2>0 = 5; ties 2=2 twice = 1; over 12 pairs
    assert stats.improvement(np.c_[x], np.c_[y]) == pytest.approx(6 / 12, abs=0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.integers(0, 4, size=(5, 1)), rng.integers(0, 4, size=(6, 1))
        assert stats.improvement(a, b) == pytest.approx(
            metrics.probability_of_improvement(a, b), abs=1e-15
        )
    estimate = stats.probability_of_improvement(x, y, n_resamples=500)
    assert estimate.value == 0.5 and 0.0 <= estimate.low < 0.5 < estimate.high <= 1.0


def test_separated_methods_have_an_improvement_interval_away_from_a_half():
    rng = np.random.default_rng(0)
    better, worse = rng.normal(10, 1, size=10), rng.normal(0, 1, size=10)
    estimate = stats.probability_of_improvement(better, worse, n_resamples=500)
    assert estimate.value == 1.0 and estimate.excludes(0.5)


def test_performance_profile_is_the_fraction_of_runs_above_each_threshold():
    from rliable import library

    finals = np.array([1.0, 2.0, 3.0, 4.0])
    taus = np.array([0.0, 1.0, 2.5, 4.0])
    (profile, low, high) = stats.performance_profiles({"m": finals}, taus, n_resamples=300)["m"]
    np.testing.assert_array_equal(profile, [1.0, 0.75, 0.5, 0.0])  # strictly above
    np.testing.assert_array_equal(
        stats.fraction_above(finals[:, None], taus),
        library.score_distributions(finals[:, None], taus),
    )
    assert np.all(low <= profile) and np.all(profile <= high)


def test_area_under_curve_is_the_trapezoid_average_over_the_span():
    steps, returns = [0, 10, 30], [0.0, 10.0, 20.0]
    # (0+10)/2*10 + (10+20)/2*20 = 50 + 300 = 350 over 30 steps
    assert stats.area_under_curve(steps, returns) == pytest.approx(350 / 30, rel=1e-15)
    assert stats.area_under_curve([5], [7.0]) == 7.0


def test_resampling_is_reproducible_and_leaves_numpys_global_state_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    x = [1.0, 5.0, 2.0, 8.0, 3.0]
    first = stats.bootstrap_ci(x, stats.iqm, n_resamples=300)
    assert stats.bootstrap_ci(x, stats.iqm, n_resamples=300) == first
    stats.probability_of_improvement(x, [2.0, 3.0], n_resamples=300)
    stats.curve_band(np.array([x, x[::-1]]).T, n_resamples=300)
    assert np.random.random() == expected


def test_curve_band_is_the_iqm_at_each_step():
    curves = np.array([[0.0, 1.0], [1.0, 100.0], [2.0, 3.0], [3.0, 4.0], [4.0, 5.0]])
    center, low, high = stats.curve_band(curves, n_resamples=300)
    np.testing.assert_allclose(center, [2.0, 4.0], rtol=1e-15)  # middle 3 of each column
    assert np.all(low <= center) and np.all(center <= high)


def test_load_runs_reads_method_seed_env_curve_and_summary(tmp_path: Path):
    make_run(tmp_path, "ddpg-vadam", 3, [1.0, 2.0, 5.0])
    (run,) = load_runs(tmp_path)
    assert (run.method, run.seed, run.env_id, run.skip_reason) == (
        "ddpg-vadam",
        3,
        "Pendulum-v1",
        None,
    )
    assert run.steps.tolist() == [1000, 2000, 3000] and run.returns.tolist() == [1.0, 2.0, 5.0]
    assert run.finished and run.summary["best_eval_return"] == 5.0
    assert run.final_return() == 5.0 and run.final_return(2) == 3.5


def test_curves_evaluated_at_different_steps_are_interpolated_onto_a_common_grid():
    early = RunRecord(
        Path("a"), steps=np.array([0.0, 1000, 2000, 3000]), returns=np.array([0.0, 1, 2, 3])
    )
    shifted = RunRecord(
        Path("b"), steps=np.array([500.0, 1500, 2500]), returns=np.array([5.0, 15, 25])
    )
    grid, curves = aligned_curves([early, shifted])
    # Only steps both runs cover (500..2500), from either run's evaluations.
    assert grid.tolist() == [500, 1000, 1500, 2000, 2500]
    assert curves[0].tolist() == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert curves[1].tolist() == [5.0, 10.0, 15.0, 20.0, 25.0]


def test_identical_evaluation_steps_are_used_as_they_are():
    a = RunRecord(Path("a"), steps=np.array([1000.0, 2000]), returns=np.array([1.0, 2.0]))
    b = RunRecord(Path("b"), steps=np.array([1000.0, 2000]), returns=np.array([3.0, 7.0]))
    grid, curves = aligned_curves([a, b])
    assert grid.tolist() == [1000, 2000] and curves.tolist() == [[1.0, 2.0], [3.0, 7.0]]


def test_unusable_runs_are_skipped_with_their_reason(tmp_path: Path):
    make_run(tmp_path, "ddpg-vadam", 0, [1.0, 2.0])
    make_run(tmp_path, "ddpg-vadam", 1, [1.0, 2.0], finished=False)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    save_config(TrainConfig(agent="ddpg-vadam"), fresh / layout.CONFIG)
    broken_config = make_run(tmp_path, "ddpg-vadam", 2, [1.0])
    (broken_config / layout.CONFIG).write_text("agent: [unclosed\n")
    broken_csv = make_run(tmp_path, "ddpg-vadam", 3, [1.0])
    (broken_csv / layout.EVALUATIONS).write_text("step,mean_return\n1000,not-a-number\n")

    with pytest.warns(UserWarning, match="unreadable") as caught:
        runs = {run.path.name: run for run in load_runs(tmp_path)}
    assert len(caught) == 2  # only the two unreadable runs warn
    assert runs["ddpg-vadam_Pendulum-v1_s0"].skip_reason is None
    assert "not finished" in runs["ddpg-vadam_Pendulum-v1_s1"].skip_reason
    assert runs["fresh"].skip_reason == "no evaluations yet"
    assert "config.yaml" in runs[broken_config.name].skip_reason
    assert "evaluations.csv" in runs[broken_csv.name].skip_reason


def test_include_unfinished_counts_a_running_seed_at_its_latest_evaluation(tmp_path: Path):
    make_run(tmp_path, "ddpg-vadam", 0, [1.0, 2.0], finished=False)
    (run,) = load_runs(tmp_path, include_unfinished=True)
    assert run.skip_reason is None and run.final_return() == 2.0


# --------------------------------------------------------------------------------------------
# The written report
# --------------------------------------------------------------------------------------------


def test_report_tables_hold_the_known_means_iqms_and_difference(tmp_path: Path):
    make_grid(tmp_path)
    result = write_report(tmp_path, resamples=FEW)
    assert result.out_dir == tmp_path / "report"

    rows = read_csv_rows(tmp_path / "report" / "results.csv")
    by_method = {row["method"]: row for row in rows if row["kind"] == "method"}
    vadam, plain = by_method["ddpg-vadam"], by_method["ddpg-adam-plain"]
    assert float(vadam["final_mean"]) == pytest.approx(40.0)
    assert float(vadam["iqm"]) == pytest.approx(30.0)
    assert float(vadam["final_std"]) == pytest.approx(np.std(VADAM_FINALS, ddof=1))
    assert float(vadam["iqm_ci_low"]) <= 30.0 <= float(vadam["iqm_ci_high"])
    assert float(vadam["best"]) == pytest.approx(40.0)  # each seed's best is its final
    assert (vadam["seeds"], vadam["steps"], float(vadam["steps_per_s"])) == ("5", "3000", 100.0)
    assert float(plain["final_mean"]) == pytest.approx(10.0)

    (diff,) = [row for row in rows if row["kind"] == "difference"]
    assert (diff["method"], diff["baseline"]) == ("ddpg-vadam", "ddpg-adam-plain")
    assert float(diff["final_mean"]) == pytest.approx(30.0)
    assert float(diff["mean_ci_low"]) < 30.0 < float(diff["mean_ci_high"])

    reference = {
        (r["method"], r["steps"], r["final_mean"]) for r in rows if r["kind"] == "reference"
    }
    assert ("ddpg-vadam", "3000000", "4368.0") in reference
    assert ("ddpg-adam-plain", "1000000", "2328.0") in reference


def test_results_md_shows_methods_difference_and_labelled_reference(tmp_path: Path):
    make_grid(tmp_path)
    text = write_report(tmp_path, resamples=FEW).table
    assert (tmp_path / "report" / "results.md").read_text() == text
    assert "| ddpg-vadam | 5 (0, 1, 2, 3, 4) | 40.0 ± 35.4 | 30.0 [" in text
    assert "| ddpg-vadam − ddpg-adam-plain | +30.0 [" in text
    assert "Reference" in text and "not measured here" in text
    assert "4368 ± 245 (s.e.)" in text and "as the reference code reports them" in text


def test_every_method_is_compared_with_each_adam_baseline_once(tmp_path: Path):
    for method in ("ddpg-vadam", "ddpg-adam", "ddpg-adam-plain"):
        for seed in range(2):
            make_run(tmp_path, method, seed, [float(seed)])
    pairs = [(d.method, d.baseline) for d in write_report(tmp_path, resamples=FEW).differences]
    assert pairs == [
        ("ddpg-vadam", "ddpg-adam-plain"),
        ("ddpg-adam", "ddpg-adam-plain"),
        ("ddpg-vadam", "ddpg-adam"),
    ]


def test_named_comparisons_carry_improvement_and_auc_differences(tmp_path: Path):
    # vadam's seeds end above every plain seed but one; AUCs follow from the known curves.
    for method, finals in (
        ("ddpg-vadam", VADAM_FINALS),
        ("ddpg-param-noise", PLAIN_FINALS),
        ("ddpg-vadam-adaptive", VADAM_FINALS),
    ):
        for seed, final in enumerate(finals):
            make_run(tmp_path, method, seed, [-50.0, final / 2, final])
    result = write_report(tmp_path, resamples=FEW)
    pairs = {(d.method, d.baseline): d for d in result.differences}
    assert set(pairs) == {("ddpg-vadam", "ddpg-param-noise"), ("ddpg-vadam-adaptive", "ddpg-vadam")}
    d = pairs[("ddpg-vadam", "ddpg-param-noise")]
    wins = sum((a > b) + 0.5 * (a == b) for a in VADAM_FINALS for b in PLAIN_FINALS)
    assert d.improvement.value == pytest.approx(wins / 25, abs=1e-15)
    # AUC of a curve -50, f/2, f at steps 1000, 2000, 3000: ((-50 + f/2) + (f/2 + f)) / 4
    auc = lambda f: (-50 + f / 2 + f / 2 + f) / 4  # noqa: E731
    expected = np.mean([auc(f) for f in VADAM_FINALS]) - np.mean([auc(f) for f in PLAIN_FINALS])
    assert d.auc.value == pytest.approx(expected, rel=1e-12)
    same = pairs[("ddpg-vadam-adaptive", "ddpg-vadam")]
    assert same.improvement.value == 0.5 and same.estimate.value == 0.0
    rows = read_csv_rows(result.files["results_csv"])
    (row,) = [r for r in rows if r["kind"] == "difference" and r["baseline"] == "ddpg-param-noise"]
    assert float(row["poi"]) == pytest.approx(wins / 25)
    assert float(row["poi_ci_low"]) <= float(row["poi"]) <= float(row["poi_ci_high"])
    (vadam,) = [r for r in rows if r["kind"] == "method" and r["method"] == "ddpg-vadam"]
    assert float(vadam["auc_mean"]) == pytest.approx(np.mean([auc(f) for f in VADAM_FINALS]))
    assert "| ddpg-vadam − ddpg-param-noise |" in result.table
    assert "s4: 100" in result.table  # per-seed values stay in the tables


def test_figures_are_pngs_that_load_as_images(tmp_path: Path):
    make_grid(tmp_path)
    result = write_report(tmp_path, tmp_path / "out", resamples=FEW)
    for name in (
        "learning_curves",
        "final_returns",
        "performance_profiles",
        "probability_of_improvement",
    ):
        image = imread(result.files[name])
        height, width = image.shape[:2]
        assert height >= 300 and width >= 600
        assert image[..., :3].std() > 0.01  # something is drawn on the white canvas


def test_a_report_killed_while_drawing_leaves_the_previous_figures_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from matplotlib.figure import Figure

    make_grid(tmp_path)
    result = write_report(tmp_path, tmp_path / "out", resamples=FEW)
    before = {name: Path(result.files[name]).read_bytes() for name in ("learning_curves",)}

    def killed_midway(self, fname, *args, **kwargs):
        half = b"\x89PNG\r\n half a figure"
        if hasattr(fname, "write"):
            fname.write(half)
        else:
            Path(fname).write_bytes(half)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, tmp_path / "out", resamples=FEW)
    for name, data in before.items():
        assert Path(result.files[name]).read_bytes() == data
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_report_lists_skipped_runs_and_uses_the_others(tmp_path: Path):
    make_grid(tmp_path)
    make_run(tmp_path, "ddpg-vadam", 9, [1.0], finished=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unfinished run is no reason to warn
        result = write_report(tmp_path, resamples=FEW)
    assert [run.path.name for run in result.skipped] == ["ddpg-vadam_Pendulum-v1_s9"]
    assert "## Skipped runs" in result.table and "_s9`: not finished" in result.table
    assert len(result.methods[0].seeds) == 5


def test_final_evals_averages_the_last_k_evaluations(tmp_path: Path):
    make_run(tmp_path, "ddpg-vadam", 0, [0.0, 10.0, 20.0])
    make_run(tmp_path, "ddpg-vadam", 1, [0.0, 30.0, 40.0])
    (method,) = write_report(tmp_path, final_evals=2, resamples=FEW).methods
    assert method.final_returns.tolist() == [15.0, 35.0]


def test_runs_of_one_preset_with_different_settings_are_flagged(tmp_path: Path):
    make_run(tmp_path, "ddpg-vadam", 0, [1.0])
    other = make_run(tmp_path, "ddpg-vadam", 1, [2.0])
    config = TrainConfig(agent="ddpg-vadam", env_id="Pendulum-v1", seed=1, total_steps=1000)
    config.actor.optimizer.lr = 0.5
    save_config(config, other / layout.CONFIG)
    notes = write_report(tmp_path, resamples=FEW).notes
    assert any("actor.optimizer.lr" in note for note in notes)


def test_a_folder_without_usable_runs_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="no usable runs"):
        write_report(tmp_path, resamples=FEW)
    with pytest.raises(UserError, match="not a directory"):
        write_report(tmp_path / "missing", resamples=FEW)


def test_report_command_prints_the_table_and_writes_the_files(tmp_path: Path):
    make_grid(tmp_path)
    (tmp_path / "protocol.md").write_text("## Protocol\n\nFixed before the runs.\n")
    result = run_cli(
        "report", str(tmp_path), "--out", str(tmp_path / "rep"), "--resamples", "200", check=True
    )
    assert "| ddpg-vadam |" in result.stdout and "report written to" in result.stdout
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {
        "learning_curves.png", "final_returns.png", "performance_profiles.png",
        "probability_of_improvement.png", "results.md", "results.csv",
    }  # fmt: skip
    text = (tmp_path / "rep" / "results.md").read_text()
    assert text.index("Fixed before the runs.") < text.index("| method | seeds |")
    assert "200 resamples" in text


def test_report_command_refuses_too_few_resamples_in_one_line(tmp_path: Path):
    make_grid(tmp_path)
    result = run_cli("report", str(tmp_path), "--resamples", "10")
    assert result.returncode == 2 and "resamples must be >= 100" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_report_command_on_an_empty_folder_says_so_in_one_line(tmp_path: Path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2 and "no usable runs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_run_saved_before_a_config_field_existed_has_the_same_settings(tmp_path: Path):
    from vadam_rl.config import load_preset, to_dict
    from vadam_rl.report.statistics import config_differences

    new = to_dict(load_preset("ddpg-vadam"))
    old = to_dict(load_preset("ddpg-vadam"))
    del old["actor"]["optimizer"]["num_samples"]  # as written before the field existed
    runs = [SimpleNamespace(config=new), SimpleNamespace(config=old)]
    assert config_differences(runs) == []
    old["actor"]["optimizer"]["num_samples"] = 3
    assert config_differences(runs) == ["actor.optimizer.num_samples"]


COMMITTED = Path(__file__).parent.parent / "docs" / "results" / "halfcheetah-150k"


def _same_row(new: dict[str, str], old: dict[str, str], columns: list[str]) -> None:
    # Floats to 1e-9 relative: far above the ~1e-15 by which another CPU's summation order
    # can move a mean of 25 float64 values, far below the 0.1 the tables print.
    for column in columns:
        try:
            expected = float(old[column])
        except ValueError:
            assert new[column] == old[column], column
        else:
            assert float(new[column]) == pytest.approx(expected, rel=1e-9, nan_ok=True), column


def test_the_committed_grid_report_is_rebuilt_from_its_committed_run_files():
    """Anyone can rebuild the experiment's results.csv from the repository alone. Every
    point value of every row is recomputed; the intervals (rliable's bootstrap loops in
    Python, ~2 s each) for ddpg-vadam and its difference from ddpg-adam-plain: each interval
    is seeded on its own, so those two rows stand for the rest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unfinished runs of a grid in progress are skipped
        result = summarize(COMMITTED / "runs", resamples=100)
    committed = read_csv_rows(COMMITTED / "results.csv")
    rebuilt = list(csv.DictReader(io.StringIO(render_csv(result))))
    assert [(r["kind"], r["method"], r["baseline"]) for r in rebuilt] == [
        (r["kind"], r["method"], r["baseline"]) for r in committed
    ]
    points = [c for c in committed[0] if not c.endswith(("_ci_low", "_ci_high"))]
    for new, old in zip(rebuilt, committed, strict=True):
        _same_row(new, old, points)

    runs = [r for r in load_runs(COMMITTED / "runs") if r.skip_reason is None]
    vadam, plain = (aggregate([r for r in runs if r.method == m]) for m in METHODS_COMPARED)
    result.methods, result.differences = [vadam], [compare(vadam, plain)]
    full = {(r["kind"], r["method"]): r for r in csv.DictReader(io.StringIO(render_csv(result)))}
    checked = 0
    for old in committed:
        new = full.get((old["kind"], old["method"]))
        if old["kind"] != "reference" and new and old["baseline"] in ("", "ddpg-adam-plain"):
            _same_row(new, old, list(old))
            checked += 1
    assert checked == 2


METHODS_COMPARED = ("ddpg-vadam", "ddpg-adam-plain")


def test_a_comparison_of_two_seeds_has_no_interval_and_is_not_marked_as_excluding_0(
    tmp_path: Path,
):
    # Both vadam runs end above both plain runs: a 2-seed bootstrap's interval would be
    # the range of those few values, and would exclude 0.
    for seed in (0, 1):
        make_run(tmp_path, "ddpg-vadam", seed, [-50.0, 100.0 + seed])
        make_run(tmp_path, "ddpg-adam-plain", seed, [-50.0, 10.0 + seed])
    result = summarize(tmp_path, resamples=FEW)
    [diff] = result.differences
    assert not diff.estimate.excludes_zero() and not diff.improvement.excludes(0.5)
    row = next(line for line in result.table.splitlines() if line.startswith("| ddpg-vadam −"))
    assert "[too few seeds]" in row and "| yes |" not in row
    assert any(note.startswith("Too few seeds for an interval") for note in result.notes)


def test_the_probability_of_improvement_chart_has_a_legend_for_its_bar_colours(tmp_path: Path):
    from vadam_rl.report.figures import IMPROVEMENT_COLORS, probability_of_improvement_figure

    make_grid(tmp_path)
    result = summarize(tmp_path, resamples=FEW)
    [legend] = probability_of_improvement_figure(result.differences).legends
    texts = {text.get_text() for text in legend.get_texts()}
    assert texts and texts <= set(IMPROVEMENT_COLORS.values())
