"""How far each exploration kind's behaviour actions are from the mean policy's, over a run.

Reads the TensorBoard files of the run directories in RUNS_DIR (a `vadam-rl compare` grid,
``{preset}_{env}_s{seed}``) and prints one markdown table: ``explore/action_distance`` (the
mean L2 distance between behaviour and mean actions over the env steps since the previous
log), ``explore/adapt_distance`` (the root-mean-square distance the adaptation measures on
replayed states, which it steers to ``target_action_distance``), ``explore/scale``
(parameter noise's sigma, the adaptive posterior's kappa),
``posterior/at_floor_fraction`` and the last evaluation's return. Then, for every run whose
actor has a variational optimizer, the posterior's shape at its checkpoint: per actor layer
the 10th, 50th and 90th percentile of sigma, their ratio p90/p10 (1.0 = isotropic) and the
share of weights at the precision floor (``vadam_rl.posterior_stats``; TensorBoard logs the
same as ``posterior/sigma_p10/<param>`` and friends), and the share whose prior precision
lambda is at least the data's part N*s (where the prior, not the data, sets sigma). The grid
it was written for:

    vadam-rl compare --presets ddpg-vadam ddpg-vadam-adaptive ddpg-param-noise \\
        ddpg-noisynet ddpg-adam --num-seeds 1 --total-steps 20000 --runs-dir RUNS_DIR --no-report
    python scripts/exploration_scales.py RUNS_DIR --at 1000 5000 10000 20000
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.config import load_config_file
from vadam_rl.optim.base import VariationalOptimizer
from vadam_rl.posterior_stats import group_floor_precision, layer_sigma_stats
from vadam_rl.run_dir import CHECKPOINT, CONFIG, load_records


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def value_at(series: list[tuple[int, float]] | None, step: int) -> str:
    """The last value logged at or before ``step`` ("-" where the run logs none)."""
    if not series:
        return "-"
    before = [value for at, value in series if at <= step]
    return f"{before[-1]:.3g}" if before else "-"


def final_return(run_dir: Path) -> str:
    with (run_dir / "evaluations.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return f"{float(rows[-1]['mean_return']):.0f} ({rows[-1]['step']})" if rows else "-"


def posterior_shape(run_dir: Path) -> list[tuple[str, dict[str, float]]] | None:
    """Per actor parameter, ``layer_sigma_stats`` of the actor optimizer's posterior in the
    run's checkpoint; None for a run without one (no checkpoint, or not variational)."""
    if not (run_dir / CHECKPOINT).is_file():
        return None
    agent = load_records(run_dir / CHECKPOINT)["agent"]
    actor, saved = agent["actor"], agent["actor_optimizer"]
    # The optimizer as the run built it, on stand-ins of the actor's shapes: its own
    # posterior_std() turns the saved state into sigma, whichever optimizer it is.
    names = [name.removeprefix("mu.") for name in actor]
    stand_ins = [torch.zeros_like(value, requires_grad=True) for value in actor.values()]
    if len(stand_ins) != sum(len(group["params"]) for group in saved["param_groups"]):
        return None  # an actor with buffers: parameters and optimizer state do not pair up
    config = load_config_file(run_dir / CONFIG)
    optimizer = build_optimizer(stand_ins, config.actor.optimizer)
    if not isinstance(optimizer, VariationalOptimizer):
        return None
    optimizer.load_state_dict(saved)
    groups = [g for g in optimizer.param_groups for _ in g["params"]]
    sigmas = optimizer.posterior_std()
    shapes = []
    for name, sigma, group in zip(names, sigmas, groups, strict=True):
        floor = group_floor_precision(group)
        stats = {key: value.item() for key, value in layer_sigma_stats(sigma, floor).items()}
        # The prior dominates where the data's part N*s of the precision N*s + lambda + c is
        # at most lambda: 1/sigma^2 <= 2*lambda + c.
        prior = float(group.get("prior_precision", 0.0))
        stats["prior_dominated"] = (
            (sigma.double().square() * (2 * prior + floor) >= 1).double().mean().item()
            if prior > 0
            else 0.0
        )
        shapes.append((name, stats))
    return shapes


def print_posterior_shapes(runs: list[Path]) -> None:
    shapes = [(run, posterior_shape(run)) for run in runs]
    shapes = [(run, layers) for run, layers in shapes if layers]
    if not shapes:
        return
    print()
    print(
        "| run (checkpoint step) | actor layer | sigma p10 | p50 | p90 | p90/p10 | at floor "
        "| prior-dominated |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for run, layers in shapes:
        step = load_records(run / CHECKPOINT)["progress"]["step"]
        for name, s in layers:
            print(
                f"| {run.name} ({step}) | {name} | {s['p10']:.3g} | {s['p50']:.3g} | "
                f"{s['p90']:.3g} | {s['p90_over_p10']:.3g} | {s['at_floor']:.3g} | "
                f"{s['prior_dominated']:.3g} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--at", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    args = parser.parse_args()
    runs = sorted(p for p in args.runs_dir.iterdir() if (p / "evaluations.csv").is_file())
    if not runs:
        sys.exit(f"exploration_scales: no run directories in {args.runs_dir}")
    steps = " / ".join(f"{s // 1000}k" for s in args.at)
    print(
        f"| run | action distance (L2) at {steps} | adapt distance (RMS) at {steps} "
        f"| scale at {steps} | at floor (last) | eval return (step) |"
    )
    print("|---|---|---|---|---:|---:|")
    for run in runs:
        tags = scalars(run)
        distance = " / ".join(value_at(tags.get("explore/action_distance"), s) for s in args.at)
        adapt = " / ".join(value_at(tags.get("explore/adapt_distance"), s) for s in args.at)
        scale = " / ".join(value_at(tags.get("explore/scale"), s) for s in args.at)
        floor = value_at(tags.get("posterior/at_floor_fraction"), max(args.at))
        print(f"| {run.name} | {distance} | {adapt} | {scale} | {floor} | {final_return(run)} |")
    print_posterior_shapes(runs)


if __name__ == "__main__":
    main()
