"""Aggregates over seeds with percentile-bootstrap confidence intervals (rliable's recipe).

A handful of RL seeds is a small, skewed sample: the reference code's Adam-Plain result moved
from 3147 to 4571 between two runs with the same seeds. So every number the report prints comes
with an interval, computed the way rliable (Agarwal et al., NeurIPS 2021, "Deep RL at the Edge
of the Statistical Precipice") does: resample the seeds with replacement, recompute the
statistic, take the 2.5 and 97.5 percentiles. The resampling uses a fixed seed, so a report is
reproducible to the digit.

All functions take plain arrays of per-seed values ``x: (n_seeds,)`` (curves:
``(n_seeds, n_steps)``) and need only numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

# A statistic maps samples along the last axis to one value each: (..., n) -> (...).
Statistic = Callable[[np.ndarray], np.ndarray]


def mean(x: np.ndarray) -> np.ndarray:
    """Mean along the last axis."""
    return np.mean(x, axis=-1)


def iqm(x: ArrayLike) -> np.ndarray:
    """Interquartile mean along the last axis: the mean of the middle 50% of the values.

    Same convention as rliable (which calls ``scipy.stats.trim_mean(x, 0.25)``): with ``n``
    values, ``floor(0.25 * n)`` are cut from each end and the rest averaged, so a fractional
    cut rounds towards keeping more values (n=5 keeps the middle 3, n=6 the middle 4). Fewer
    than 4 values cut nothing: the IQM is then the plain mean.
    """
    x = np.sort(np.asarray(x, dtype=float), axis=-1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("iqm of an empty sample")
    cut = int(0.25 * n)
    return np.mean(x[..., cut : n - cut], axis=-1)


@dataclass(frozen=True)
class Estimate:
    """A statistic and its percentile-bootstrap interval (``nan`` bounds with < 2 seeds)."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def bootstrap_ci(
    x: ArrayLike,
    statistic: Statistic = mean,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """``statistic(x)`` with a percentile-bootstrap interval over the values (seeds) of ``x``.

    One value says nothing about spread: with fewer than 2 values the bounds are ``nan``
    rather than a zero-width interval that would read as certainty.
    """
    x = np.asarray(x, dtype=float)
    value = float(statistic(x))
    if x.size < 2:
        return Estimate(value, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    resampled = x[rng.integers(0, x.size, size=(n_resamples, x.size))]
    low, high = _percentiles(statistic(resampled), confidence)
    return Estimate(value, float(low), float(high))


def difference_ci(
    a: ArrayLike,
    b: ArrayLike,
    statistic: Statistic = mean,
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
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    value = float(statistic(a) - statistic(b))
    if a.size < 2 or b.size < 2:
        return Estimate(value, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    a_star = a[rng.integers(0, a.size, size=(n_resamples, a.size))]
    b_star = b[rng.integers(0, b.size, size=(n_resamples, b.size))]
    low, high = _percentiles(statistic(a_star) - statistic(b_star), confidence)
    return Estimate(value, float(low), float(high))


def curve_band(
    curves: ArrayLike,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2_000,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over seeds and its pointwise bootstrap band.

    ``curves: (n_seeds, n_steps)`` -> ``(mean, low, high)``, each ``(n_steps,)``. Whole seeds
    are resampled (the same draw for every step), so the band is that of the mean curve.
    """
    curves = np.asarray(curves, dtype=float)
    center = curves.mean(axis=0)
    n_seeds = curves.shape[0]
    if n_seeds < 2:
        return center, np.full_like(center, np.nan), np.full_like(center, np.nan)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    means = curves[picks].mean(axis=1)  # (n_resamples, n_steps)
    low, high = _percentiles(means, confidence, axis=0)
    return center, low, high


def standard_error(x: ArrayLike) -> float:
    """Standard error of the mean (sample std with ddof=1 over sqrt(n)); nan below 2 values."""
    x = np.asarray(x, dtype=float)
    return float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size >= 2 else float("nan")


def sample_std(x: ArrayLike) -> float:
    """Sample standard deviation (ddof=1) across seeds; nan below 2 values."""
    x = np.asarray(x, dtype=float)
    return float(np.std(x, ddof=1)) if x.size >= 2 else float("nan")


def _percentiles(values: np.ndarray, confidence: float, axis: int = 0) -> np.ndarray:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Invalid confidence level: {confidence}")
    tail = 100.0 * (1.0 - confidence) / 2.0
    return np.percentile(values, [tail, 100.0 - tail], axis=axis)
