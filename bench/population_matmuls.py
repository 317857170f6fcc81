"""How fast a population's batched matmuls run, by number of agents K.

A population's update multiplies K agents' minibatches by their own weights in one batched
call (``torch.bmm``/``baddbmm``, weights (K, in, out), inputs (K, 100, in)). This times
exactly the matmuls of one DDPG update (``run.update_matmuls``: the [400, 300] actor and
critic at batch 100, HalfCheetah's sizes) batched over K agents, and prints GFLOP/s per K,
so one can see whether per-agent throughput depends on K on this machine, e.g. when a CPU's
threads split the batch between them and K is not a multiple of their number.

    python bench/population_matmuls.py               # K = 1..10, torch's thread count
    python bench/population_matmuls.py --agents 4 5 6 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from run import flops, update_matmuls


def seconds(run, calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` calls, after a warm-up."""
    for _ in range(max(calls // 10, 1)):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def batched_update_matmuls(agents: int, calls: int, repeats: int) -> float:
    """GFLOP/s of one update's matmuls, each batched over ``agents`` agents."""
    shapes = update_matmuls(minimal=True)
    pairs = [(torch.randn(agents, m, k), torch.randn(agents, k, n)) for m, k, n in shapes]

    def run() -> None:
        for a, b in pairs:
            torch.bmm(a, b)

    return agents * flops(shapes) / seconds(run, calls, repeats) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("agents  GFLOP/s  ms per agent-update")
    for agents in args.agents:
        rate = batched_update_matmuls(agents, args.calls, args.repeats)
        per_agent_ms = flops(update_matmuls(minimal=True)) / rate / 1e6
        print(f"{agents:>6}  {rate:7.1f}  {per_agent_ms:8.2f}")


if __name__ == "__main__":
    main()
