"""How far each exploration kind's behaviour actions are from the mean policy's, over a run.

Reads the TensorBoard files of the run directories in RUNS_DIR (a `vadam-rl compare` grid,
``{preset}_{env}_s{seed}``) and prints one markdown table: ``explore/action_distance`` (the
mean L2 distance between behaviour and mean actions over the env steps since the previous
log), ``explore/adapt_distance`` (the root-mean-square distance the adaptation measures on
replayed states, which it steers to ``target_action_distance``), ``explore/scale``
(parameter noise's sigma, the adaptive posterior's kappa),
``posterior/at_floor_fraction`` and the last evaluation's return. The grid it was written for:

    vadam-rl compare --presets ddpg-vadam ddpg-vadam-adaptive ddpg-param-noise \\
        ddpg-noisynet ddpg-adam --num-seeds 1 --total-steps 20000 --runs-dir RUNS_DIR --no-report
    python scripts/exploration_scales.py RUNS_DIR --at 1000 5000 10000 20000
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


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


if __name__ == "__main__":
    main()
