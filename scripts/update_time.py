"""Time one learner update, and its actor step alone, for several presets through the learner
training builds (``make_learner`` + ``speed_up``), on HalfCheetah-sized random minibatches.

What VOGN's per-example curvature costs inside an update: the presets take turns for
``--rounds`` rounds (the machine's speed drifts) and the median per call is printed. The
update is the eager one a run of under 20k updates takes (``compile: auto`` stays eager
there; VOGN has no graph mode and is always eager).

    python scripts/update_time.py --presets ddpg-adam ddpg-vadam ddpg-vadam-shaped ddpg-vogn-shaped
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.registry import make_learner
from vadam_rl.config import apply_overrides, load_preset
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators

OBS, ACT = 17, 6  # HalfCheetah-v5


def build(preset: str):
    config = apply_overrides(load_preset(preset, "HalfCheetah-v5"), ["compile=false"])
    generators = AgentGenerators([torch.Generator().manual_seed(0)])
    learner = make_learner(config, OBS, ACT, torch.device("cpu"), [0], generators)
    return learner, speed_up(learner, config).update, config.batch_size


def batch_of(size: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(1, size, OBS, generator=g),
        torch.rand(1, size, ACT, generator=g) * 2 - 1,
        torch.randn(1, size, 1, generator=g),
        torch.randn(1, size, OBS, generator=g),
        torch.zeros(1, size, 1),
    )


def timed(fn, batch: Batch, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(batch)
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", required=True)
    parser.add_argument("--calls", type=int, default=50, help="updates per round and preset")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a run (threads: 1)
    built = {preset: build(preset) for preset in args.presets}
    times: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in args.presets}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for preset, (learner, update, size) in built.items():
            batch = batch_of(size, round_)
            whole = timed(update, batch, args.calls)
            actor = timed(learner.actor_step, batch, args.calls)
            if round_:
                times[preset][0].append(whole)
                times[preset][1].append(actor)
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} rounds x {args.calls} calls\n")
    print("| preset | update (ms) | actor step alone (ms) |")
    print("|---|---:|---:|")
    for preset, (whole, actor) in times.items():
        print(f"| {preset} | {statistics.median(whole):.2f} | {statistics.median(actor):.2f} |")


if __name__ == "__main__":
    main()
