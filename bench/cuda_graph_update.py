"""How fast is one DDPG update as a CUDA graph? Eager vs ``cuda_graph=true``, on CUDA.

On a GPU an eager DDPG update is launch-bound: many small kernels, each costing more host
time than device time. ``cuda_graph=true`` captures the whole update once (critic step,
actor step, Polyak) and replays it (``vadam_rl.fast.cuda_graph``). Two agents start equal and
see the same minibatches: one updated eagerly, one graphed (its timing includes copying the
batch in and, for Vadam, drawing the noise before each replay). Printed per preset and
population size: ms per update (median over alternating rounds) and how far the two
agents' actors are apart afterwards (Adam: bit-identical; Vadam's graph mode forms its
step's scalars differently, so float rounding separates them).

    python bench/cuda_graph_update.py                    # ddpg-adam and ddpg-vadam, K = 1, 10
    python bench/cuda_graph_update.py --agents 1 --presets ddpg-adam
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import BATCH_SIZE, Settings, fill_buffer, ours_config

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.agent.registry import make_learner
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.buffer import AgentBuffer

OBS_DIM, ACT_DIM = 17, 6
CAPACITY = 20_000
WARMUP = 5  # > GraphedUpdate's 3 eager updates: the capture is in the warm-up


def generators(agents: int, device: torch.device, seed: int) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(seed + k) for k in range(agents)]


def build(
    preset: str, agents: int, device: torch.device, cuda_graph: bool
) -> tuple[ActorCritic, list[torch.Generator]]:
    """A learner (one agent, or a population of ``agents``) and its noise generators."""
    graph = f"cuda_graph={str(cuda_graph).lower()}"
    config = ours_config(preset, Settings(device=str(device), overrides=[graph]))
    gens = generators(agents, device, seed=0)
    agent = make_learner(
        config, OBS_DIM, ACT_DIM, device, list(range(agents)), AgentGenerators(gens)
    )
    agent.speed_ups = speed_up(agent, config)  # type: ignore[attr-defined]
    return agent, gens


def filled_buffer(agents: int, device: torch.device) -> AgentBuffer:
    """Random transitions (an update's cost does not depend on their values)."""
    gens = generators(agents, device, seed=1000)
    buffer = AgentBuffer(CAPACITY, OBS_DIM, ACT_DIM, device, AgentGenerators(gens))
    fill_buffer(buffer, CAPACITY, device, agents=agents)
    return buffer


def compare(preset: str, agents: int, updates: int, rounds: int, device: torch.device) -> dict:
    eager, _ = build(preset, agents, device, cuda_graph=False)
    graphed, _ = build(preset, agents, device, cuda_graph=True)
    if not graphed.speed_ups.graphed:
        raise RuntimeError(f"{preset}: no graphed update ({graphed.speed_ups.eager_reason})")
    buffer = filled_buffer(agents, device)
    per_round = updates // rounds
    batches = [buffer.sample(BATCH_SIZE) for _ in range(WARMUP + per_round * rounds)]
    started = time.perf_counter()
    for batch in batches[:WARMUP]:  # the graphed agent's eager updates, then its capture
        eager.speed_ups.update(batch)
        graphed.speed_ups.update(batch)
    torch.cuda.synchronize()
    capture_s = time.perf_counter() - started

    def run_eager(chunk: list[Batch]) -> None:
        for batch in chunk:
            eager.speed_ups.update(batch)

    def run_graph(chunk: list[Batch]) -> None:
        for batch in chunk:
            graphed.speed_ups.update(batch)

    times: dict[str, list[float]] = {"eager": [], "graph": []}
    for r in range(rounds):
        chunk = batches[WARMUP + r * per_round : WARMUP + (r + 1) * per_round]
        for name, run in (("eager", run_eager), ("graph", run_graph)):
            torch.cuda.synchronize()
            started = time.perf_counter()
            run(chunk)
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - started) / per_round * 1e3)
    drift = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
        for a, b in zip(graphed.actor.parameters(), eager.actor.parameters(), strict=True)
    )
    eager_ms, graph_ms = statistics.median(times["eager"]), statistics.median(times["graph"])
    return {
        "preset": preset,
        "agents": agents,
        "eager_ms": eager_ms,
        "graph_ms": graph_ms,
        "speedup": eager_ms / graph_ms,
        "warmup_and_capture_s": capture_s,
        "updates": WARMUP + per_round * rounds,
        "actor_relative_drift": drift,
        "rounds_ms": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["ddpg-adam", "ddpg-vadam"])
    parser.add_argument("--agents", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_graph_update.py needs a CUDA device")
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    results = []
    for preset in args.presets:
        for agents in args.agents:
            try:
                row = compare(preset, agents, args.updates, args.rounds, device)
            except Exception as error:  # an experiment: report and go on with the next one
                row = {"preset": preset, "agents": agents, "error": repr(error)[:2000]}
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "rounds_ms"}), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| preset | K | eager ms/update | graph ms/update | speed-up | actor drift |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in results:
        if "error" in row:
            print(f"| {row['preset']} | {row['agents']} | failed: {row['error'][:80]} | | | |")
            continue
        print(
            f"| {row['preset']} | {row['agents']} | {row['eager_ms']:.3f} | {row['graph_ms']:.3f} "
            f"| {row['speedup']:.1f}x | {row['actor_relative_drift']:.1e} |"
        )


if __name__ == "__main__":
    main()
