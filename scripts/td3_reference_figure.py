"""Our td3 runs' evaluation curves beside SB3's TD3 and the TD3 paper's figure at 150k steps.

Reads the runs' ``evaluations.csv`` (vadam-rl run directories) and the CSVs written by
``scripts/sb3_td3_reference.py``; writes a PNG and prints a table of the returns at the last
common step. The paper's anchor: Fujimoto et al. 2018 (TD3, HalfCheetah-v1, 10 seeds),
6239 ± 513 at 150k steps, from sfujim/TD3's published learning curves.

    python scripts/td3_reference_figure.py --runs RUNS/td3_HalfCheetah-v5_s* \\
        --sb3 RUNS/sb3_td3_s0.csv --out docs/results/td3-halfcheetah-150k/curves.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

PAPER_150K = (150_000, 6239.0, 513.0)
"""TD3 paper, HalfCheetah-v1: mean ± std over 10 seeds at 150k steps (sfujim/TD3)."""


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([int(float(row["step"])) for row in rows])
    returns = np.array([float(row["mean_return"]) for row in rows])
    return steps, returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--sb3", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    final = {}
    for label, paths, color in (
        ("vadam-rl td3", [p / "evaluations.csv" for p in args.runs], "tab:blue"),
        ("SB3 TD3, same settings", list(args.sb3), "tab:orange"),
    ):
        for i, path in enumerate(paths):
            steps, returns = read_curve(path)
            ax.plot(steps, returns, color=color, alpha=0.8, label=label if i == 0 else None)
            final[
                f"{label} ({path.parent.name if path.name == 'evaluations.csv' else path.stem})"
            ] = (
                int(steps[-1]),
                float(returns[-1]),
            )
    step, mean, std = PAPER_150K
    ax.errorbar([step], [mean], yerr=[std], fmt="o", color="black", capsize=4,
                label="TD3 paper at 150k (HalfCheetah-v1, 10 seeds)")  # fmt: skip
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean actor)")
    ax.set_title("TD3 on HalfCheetah-v5")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    for name, (last, value) in final.items():
        print(f"{name:55s} step {last:>7,}  return {value:8.1f}")


if __name__ == "__main__":
    main()
