"""Aggregates over seeds with stratified-bootstrap confidence intervals, computed by rliable.

A handful of RL seeds is a small, skewed sample: the reference code's Adam-Plain result moved
from 3147 to 4571 between two runs with the same seeds. So every number the report prints comes
with an interval, from rliable (Agarwal et al., NeurIPS 2021, "Deep RL at the Edge of the
Statistical Precipice"): the interquartile mean (IQM) and the mean with stratified-bootstrap
percentile intervals, the probability of improvement P(X > Y), performance profiles (the
fraction of runs above each return) and IQM curves over training.

rliable draws its resamples from numpy's global generator; every function here seeds it with
``seed`` for the call and puts the caller's state back afterwards, so a report is
reproducible to the digit and leaves other users of ``np.random`` alone.

Inputs are per-seed values ``x: (n_seeds,)`` (curves: ``(n_seeds, n_steps)``): one task, so
rliable's ``(runs, tasks)`` matrices have one column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
CURVE_RESAMPLES = 2_000
BOOTSTRAP_SEED = 0

# An aggregate maps a (runs, tasks, ...) score array to one value per trailing index: a
# (runs, tasks) matrix (rliable's shape) gives a 0-d array, (runs, tasks, steps) a curve.
Aggregate = Callable[[np.ndarray], np.ndarray]


def _runs_first(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    return s.reshape(-1, *s.shape[2:])


def mean(scores: ArrayLike) -> np.ndarray:
    """Mean over runs and tasks: rliable's ``aggregate_mean`` (tested equal)."""
    return _runs_first(scores).mean(axis=0)


def iqm(scores: ArrayLike) -> np.ndarray:
    """Interquartile mean over runs and tasks: rliable's ``aggregate_iqm`` (tested equal).

    rliable calls ``scipy.stats.trim_mean(x, 0.25)``: with n values floor(n/4) are cut from
    each end (n=5 keeps the middle 3, n=6 the middle 4; fewer than 4: the plain mean). This
    sorts along the runs axis instead, so a whole curve's IQM is one vectorised call; a
    bootstrap calls it thousands of times, and scipy's per-call overhead made a 5-method
    report take minutes.
    """
    s = np.sort(_runs_first(scores), axis=0)
    cut = int(0.25 * s.shape[0])
    return s[cut : s.shape[0] - cut].mean(axis=0)


def improvement(scores_x: ArrayLike, scores_y: ArrayLike) -> float:
    """P(X > Y) averaged over tasks: the Mann-Whitney U statistic over n_x * n_y pairs, ties
    counting half; rliable's ``probability_of_improvement`` (tested equal) without its
    per-call scipy test, which dominated the bootstrap's time."""
    x, y = np.asarray(scores_x, dtype=float), np.asarray(scores_y, dtype=float)
    d = x[:, None, :] - y[None, :, :]  # (n_x, n_y, tasks)
    per_task = ((d > 0).sum(axis=(0, 1)) + 0.5 * (d == 0).sum(axis=(0, 1))) / (
        x.shape[0] * y.shape[0]
    )
    return float(per_task.mean())


@dataclass(frozen=True)
class Estimate:
    """A statistic and its bootstrap interval (``nan`` bounds with < 2 seeds)."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def excludes(self, value: float) -> bool:
        return bool(self.low > value or self.high < value)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _column(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1, 1)


def _check(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Invalid confidence level: {confidence}")


def _interval(
    scores: np.ndarray | list[np.ndarray],
    func: Callable[..., np.ndarray],
    reps: int,
    confidence: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """rliable's point estimate and (2, ...) percentile interval of ``func`` on ``scores``
    (a list: several samples, each resampled independently)."""
    from rliable import library as rly  # (its import takes seconds: only the report pays)

    _check(confidence)
    with _seeded(seed):
        points, intervals = rly.get_interval_estimates(
            {"x": scores}, func, reps=reps, confidence_interval_size=confidence
        )
    return np.asarray(points["x"], dtype=float), np.asarray(intervals["x"], dtype=float)


def bootstrap_ci(
    x: ArrayLike,
    statistic: Aggregate = mean,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """``statistic`` of the seeds' values ``x`` with a stratified-bootstrap percentile
    interval (rliable's ``get_interval_estimates``).

    One value says nothing about spread: with fewer than 2 values the bounds are ``nan``
    rather than a zero-width interval that would read as certainty.
    """
    scores = _column(x)
    if scores.shape[0] < 2:
        return Estimate(float(statistic(scores)), np.nan, np.nan)
    point, interval = _interval(
        scores, lambda s: np.array([statistic(s)]), n_resamples, confidence, seed
    )
    return Estimate(float(point[0]), float(interval[0, 0]), float(interval[1, 0]))


def difference_ci(
    a: ArrayLike,
    b: ArrayLike,
    statistic: Aggregate = mean,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """``statistic(a) - statistic(b)`` with a bootstrap interval.

    The two methods' seeds are resampled independently (seed k of one method has nothing to
    do with seed k of the other: different optimizers consume the random streams differently),
    so this is a two-sample bootstrap, not a paired one.
    """
    return _two_samples(
        a, b, lambda x, y: float(statistic(x) - statistic(y)), n_resamples, confidence, seed
    )


def _two_samples(
    x: ArrayLike,
    y: ArrayLike,
    func: Callable[[np.ndarray, np.ndarray], float],
    reps: int,
    confidence: float,
    seed: int,
) -> Estimate:
    """``func(x, y)`` with an interval from resampling x's and y's runs independently."""
    x, y = _column(x), _column(y)
    value = func(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        return Estimate(value, np.nan, np.nan)
    _, interval = _interval([x, y], lambda u, v: np.array([func(u, v)]), reps, confidence, seed)
    return Estimate(value, float(interval[0, 0]), float(interval[1, 0]))


def probability_of_improvement(
    x: ArrayLike,
    y: ArrayLike,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """P(X > Y): the chance that a run of X ends above a run of Y (ties count half; the
    Mann-Whitney U statistic over n_x * n_y), with an interval from resampling each
    method's runs independently (rliable's ``probability_of_improvement``)."""
    return _two_samples(x, y, improvement, n_resamples, confidence, seed)


def curve_band(
    curves: ArrayLike,
    statistic: Aggregate = iqm,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = CURVE_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sample-efficiency curve: ``statistic`` over seeds at each step, with its band.

    ``curves: (n_seeds, n_steps)`` -> ``(center, low, high)``, each ``(n_steps,)``. As in
    rliable's sample-efficiency curves, the band is pointwise: at each step the seeds are
    resampled on their own.
    """
    curves = np.asarray(curves, dtype=float)
    scores = curves[:, None, :]  # (runs, tasks=1, steps)
    center = np.asarray(statistic(scores), dtype=float)
    if curves.shape[0] < 2:
        return center, np.full_like(center, np.nan), np.full_like(center, np.nan)
    _, interval = _interval(scores, statistic, n_resamples, confidence, seed)
    return center, interval[0], interval[1]


def fraction_above(scores: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """The share of all runs' scores strictly above each threshold: rliable's
    ``score_distributions`` (tested equal), vectorised over the thresholds where rliable's
    is an ``np.vectorize`` loop."""
    flat = np.asarray(scores, dtype=float).reshape(-1, 1)
    return (flat > np.asarray(thresholds, dtype=float)[None, :]).mean(axis=0)


def performance_profiles(
    finals: Mapping[str, ArrayLike],
    thresholds: ArrayLike,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = CURVE_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each method, the fraction of its runs whose final return is above each threshold
    (rliable's score distribution), with a pointwise band: ``{method: (profile, low, high)}``.
    """
    from rliable import library as rly

    _check(confidence)
    taus = np.asarray(thresholds, dtype=float)
    out = {}
    for method, values in finals.items():
        scores = _column(values)
        with _seeded(seed):
            profiles, bands = rly.create_performance_profile(
                {method: scores},
                taus,
                custom_profile_func=fraction_above,
                reps=n_resamples,
                confidence_interval_size=confidence,
            )
        profile = np.asarray(profiles[method], dtype=float)
        if scores.shape[0] < 2:
            out[method] = (profile, np.full_like(profile, np.nan), np.full_like(profile, np.nan))
        else:
            band = np.asarray(bands[method], dtype=float)
            out[method] = (profile, band[0], band[1])
    return out


def area_under_curve(steps: ArrayLike, returns: ArrayLike) -> float:
    """The evaluation curve's average height: its trapezoid area over the steps it covers,
    divided by that span (so it reads as a return; a single evaluation is its own value)."""
    steps, returns = np.asarray(steps, dtype=float), np.asarray(returns, dtype=float)
    if steps.size == 1:
        return float(returns[0])
    span = steps[-1] - steps[0]
    return float(np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(steps)) / span)


def standard_error(x: ArrayLike) -> float:
    """Standard error of the mean (sample std with ddof=1 over sqrt(n)); nan below 2 values."""
    x = np.asarray(x, dtype=float)
    return float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size >= 2 else float("nan")


def sample_std(x: ArrayLike) -> float:
    """Sample standard deviation (ddof=1) across seeds; nan below 2 values."""
    x = np.asarray(x, dtype=float)
    return float(np.std(x, ddof=1)) if x.size >= 2 else float("nan")
