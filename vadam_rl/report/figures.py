"""The report's four figures, with matplotlib's object API (no pyplot, no display, no global
backend switch): learning curves, final returns, performance profiles and the
probability of improvement."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from vadam_rl import run_dir as layout
from vadam_rl import stats
from vadam_rl.report.statistics import Difference, MethodResult, method_sort_key


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
    _save_png(probability_of_improvement_figure(differences), path)


# What the bars' colours say, as the legend words it.
IMPROVEMENT_COLORS = {
    "C2": "interval above 0.5: X ends higher",
    "C3": "interval below 0.5: Y ends higher",
    "C0": "interval includes 0.5, or too few seeds",
}


def probability_of_improvement_figure(differences: list[Difference]) -> Any:
    """The figure of ``plot_probability_of_improvement``, bars coloured by what their
    interval says, with a legend for the colours."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(7.2, max(3.0, 1.4 + 0.45 * len(differences))), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(differences))[::-1]
    for y, d in zip(ys, differences, strict=True):
        p = d.improvement
        xerr = None
        if math.isfinite(p.low):
            xerr = [[p.value - p.low], [p.high - p.value]]
        color = color_of(p)
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
    used = list(dict.fromkeys(color_of(d.improvement) for d in differences))
    handles = [Patch(color=c, alpha=0.35, label=IMPROVEMENT_COLORS[c]) for c in used]
    fig.legend(handles=handles, loc="outside lower center", fontsize="small", ncols=len(used))
    return fig


def color_of(p: Any) -> str:
    """The bar colour of P(X > Y) ``p``: see ``IMPROVEMENT_COLORS``."""
    return "C2" if p.low > 0.5 else ("C3" if p.high < 0.5 else "C0")
