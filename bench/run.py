"""Training speed on HalfCheetah-v5: ours vs Stable-Baselines3 (DDPG, TD3) vs the compute bound.

One run, one machine, the same settings for everybody: batch 100, [400, 300] actor and
critic, one gradient step per env step, ``learning_starts`` uniformly random steps first.
Measured, each in a fresh Python process (so peak memory belongs to one thing and one
measurement cannot warm up or slow down the next):

- **ours**: ``vadam_rl.training.run.train`` (the real loop: collector, buffer, update, logging) for
  the ``ddpg-adam`` preset (Gaussian noise 0.1: SB3's algorithm) and ``ddpg-vadam`` (or the
  ``--presets`` named, e.g. ``td3 td3-vadam``). The
  loop logs at every ``log_every`` steps, after reading its metrics (a host sync on CUDA);
  the TensorBoard wall time of those log events at steps s1 < s2, both past ``learning_starts``
  plus a warm-up, gives (s2 - s1) / (t2 - t1). Set-up, the random phase, the final
  evaluation and the checkpoint are outside that window.
- **SB3**: ``stable_baselines3.DDPG`` (``TD3`` for TD3 presets, with TD3's delay and target
  smoothing) with the same hyperparameters, timed by a callback at the same steps s1 and s2
  (synchronising CUDA there). Each preset's "vs SB3" is against SB3's same algorithm.
- **update alone**: the update training runs (``build_runs``' learner and replay buffer,
  ``speed_ups.update(buffer.sample(100))``) on a filled buffer (ours), and
  ``model.train(1, 100)`` (SB3) after its run; **env alone**: HalfCheetah-v5 steps with
  random actions. Loop time minus both is acting, noise, buffer writes and Python.
- **compute bound**: the FLOPs of one update (2*m*k*n per matmul: target actor + critic
  forward, critic forward + backward, actor forward + backward through the critic; backward
  counted as dX and dW, i.e. 2x forward) over the measured speed of exactly those matmuls
  (``torch.mm`` at each shape, back to back). Bias adds, activations and optimizer steps are
  left out. This is the issue's count (about 0.29 GFLOP); an update that skips the gradients
  nobody needs (the frozen critic's dW in the actor step, the inputs' dX) does ~10% fewer
  (``flops_per_update_minimal``), so a ratio slightly above 100% is not impossible.

- **population** (``--population K``): K seeds of each preset as one population
  (``train_population``), against the same K seeds as K concurrent single-run processes
  (``cores // K`` threads each). Aggregate steps/s = K x the per-agent rate.

    python bench/run.py --short               # ~2 minutes on a 2-core CPU
    python bench/run.py --short --rounds 3    # every part 3 times, alternating: medians
    python bench/run.py --short --population 5    # + K=5 populations vs 5 processes (~15 min)
    python bench/run.py                       # longer, more precise
    python bench/run.py --device cuda --out bench/results/gpu
    python bench/run.py --compile false       # ours eager (the presets compile on a CPU)
    python bench/run.py --device cuda --compile true --population 10   # compiled on CUDA
    python bench/run.py --device cuda --no-cuda-graph     # ddpg-adam's update eager on CUDA
    python bench/run.py --device cuda --set cuda_graph=true   # ddpg-vadam graphed as well
    python bench/run.py --device cuda --population 10 --population-set async_envs=true
    python bench/run.py --short --rounds 3 --presets td3 td3-vadam   # against SB3's TD3
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ENV_ID = "HalfCheetah-v5"
OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah-v5
BATCH_SIZE = 100
HIDDEN = [400, 300]
PRESETS = ("ddpg-adam", "ddpg-vadam")
"""The presets timed unless ``--presets`` names others."""


def algorithm_of(preset: str) -> str:
    from vadam_rl.config import load_preset

    return load_preset(preset).algorithm


def sb3_part(preset: str) -> str:
    """The SB3 part a preset is compared with: ``sb3`` (DDPG) or ``sb3-td3``."""
    return "sb3" if algorithm_of(preset) == "ddpg" else "sb3-td3"


def parts_order(presets: list[str]) -> tuple[str, ...]:
    """What ``--rounds`` repeats, in this order, each in its own process: the
    micro-benchmarks (update alone, env alone, the bound's matmuls) too, since one slow
    minute would otherwise set every "vs bound"; each SB3 algorithm after the first preset
    it is compared with, so that a drifting machine load does not favour one side."""
    order: list[str] = ["micro"]
    for preset in presets:
        order.append(f"ours:{preset}")
        if sb3_part(preset) not in order:
            order.append(sb3_part(preset))
    return tuple(order)


@dataclasses.dataclass
class Settings:
    """How much to measure; ``--short`` and the default differ only here."""

    device: str = "cpu"
    threads: int | None = None
    """torch.set_num_threads in every part (None: torch's default)."""
    compile: str = "preset"
    """Ours with ``compile`` as the preset resolves it for a run of its own length ("preset":
    ``auto`` compiles 3M-step runs on a CPU), or forced "true" / "false"."""
    cuda_graph: bool = True
    """False: ours with ``cuda_graph=false`` (ddpg-adam ships with it on; on CPU it does
    nothing)."""
    presets: list[str] = dataclasses.field(default_factory=lambda: list(PRESETS))
    """Our presets to time."""
    overrides: list[str] = dataclasses.field(default_factory=list)
    """More ``KEY=VALUE`` config overrides for ours (every preset), applied last."""
    population_overrides: list[str] = dataclasses.field(default_factory=list)
    """Overrides for the populations only (e.g. async_envs=true: their K envs in parallel)."""
    learning_starts: int = 1000
    warmup: int = 1000
    """Training steps after learning_starts that are not timed (lazy state, caches)."""
    steps: int = 10_000
    """Timed training steps per run."""
    log_every: int = 1000
    """The loop's log interval: the resolution of the timing window."""
    update_steps: int = 2000
    """Timed updates for 'update alone'."""
    env_steps: int = 20_000
    """Timed env steps for 'env alone'."""
    matmul_repeats: int = 200
    """Timed repetitions of one update's matmuls."""

    @property
    def total_steps(self) -> int:
        """learning_starts + warmup + steps, rounded up to a log point."""
        total = self.learning_starts + self.warmup + self.steps
        return -(-total // self.log_every) * self.log_every

    @property
    def timed_from(self) -> int:
        """The first log point at or after learning_starts + warmup."""
        start = self.learning_starts + self.warmup
        return -(-start // self.log_every) * self.log_every


SHORT = {
    "warmup": 500,
    "steps": 2000,
    "log_every": 500,
    "update_steps": 300,
    "env_steps": 5000,
    "matmul_repeats": 50,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak resident set size of this process and, on CUDA, peak allocated GPU memory."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mib": rss_kib / 1024, "cuda_max_allocated_mib": cuda}


def timing_marks(settings: Settings) -> list[int]:
    """The steps at which the clock is read: every log point of the timed window."""
    return list(range(settings.timed_from, settings.total_steps + 1, settings.log_every))


def window_rate(times: dict[int, float], settings: Settings) -> dict:
    """Steps/s over the timed window, and the spread of its log intervals' own rates."""
    marks = timing_marks(settings)
    if any(step not in times for step in marks):
        raise RuntimeError(f"clock read at steps {sorted(times)}, expected {marks}")
    start, end = marks[0], marks[-1]
    seconds = times[end] - times[start]
    intervals = [(b - a) / (times[b] - times[a]) for a, b in itertools.pairwise(marks)]
    return {
        "steps_per_s": (end - start) / seconds,
        "timed_steps": end - start,
        "timed_seconds": seconds,
        "interval_steps_per_s": {
            "min": min(intervals),
            "median": statistics.median(intervals),
            "max": max(intervals),
        },
    }


def per_second(run: Callable[[], object], calls: int, device: torch.device) -> float:
    """Calls per second: the median of 3 timed rounds of ``calls // 3``, after a warm-up."""
    for _ in range(max(calls // 10, 5)):
        run()
    rounds = []
    n = max(calls // 3, 1)
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            run()
        sync(device)
        rounds.append(n / (time.perf_counter() - start))
    return statistics.median(rounds)


# ------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------


def ours_config(preset: str, settings: Settings):
    """The preset with the shared benchmark settings (SB3's critic layout for both)."""
    from vadam_rl.config import apply_overrides, load_preset
    from vadam_rl.fast.compiled import compile_wanted

    config = load_preset(preset, ENV_ID)
    graph = settings.cuda_graph and config.cuda_graph  # the preset's own choice, or off
    # The preset's choice for its own (full-length) run, not for the bench's short one.
    compile_ = settings.compile
    if compile_ == "preset":
        compile_ = str(compile_wanted(config, torch.device(settings.device))).lower()
    return apply_overrides(
        config,
        [
            f"total_steps={settings.total_steps}",
            f"learning_starts={settings.learning_starts}",
            f"batch_size={BATCH_SIZE}",
            "tau=0.005",
            f"actor.hidden_sizes={HIDDEN}",
            f"critic.hidden_sizes={HIDDEN}",
            # Both presets get the input-layer action (SB3's layout), so both do the FLOPs
            # the bound counts; ddpg-vadam's own layout (action_layer=1) is a little cheaper.
            "critic.action_layer=0",
            "eval_every=0",
            "eval_episodes=1",
            "checkpoint_every=1000000000",
            f"log_every={settings.log_every}",
            f"device={settings.device}",
            f"compile={compile_}",
            f"cuda_graph={str(graph).lower()}",
            *settings.overrides,
        ],
    )


def log_times(run_dir: Path) -> dict[int, float]:
    """Step -> wall time of the loop's log events (TensorBoard's ``time/fps`` tag)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {event.step: event.wall_time for event in events.Scalars("time/fps")}


def bench_ours(preset: str, settings: Settings) -> dict:
    """Steps/s of ``train`` between two log points past learning_starts + warmup."""
    from vadam_rl.fast.compiled import compile_wanted
    from vadam_rl.training.run import train

    config = ours_config(preset, settings)
    with tempfile.TemporaryDirectory(prefix="vadam-bench-") as tmp:
        summary = train(config, Path(tmp) / preset, progress_bar=False)
        times = log_times(Path(tmp) / preset)
    return {
        **window_rate(times, settings),
        "whole_loop_steps_per_s": summary["steps_per_s"],  # random phase included
        "compile": compile_wanted(config, torch.device(settings.device)),
        **peak_memory(torch.device(settings.device)),
    }


def bench_population(preset: str, agents: int, settings: Settings) -> dict:
    """Per-agent and aggregate steps/s of ``train_population`` with seeds 0..agents-1."""
    from vadam_rl.config import apply_overrides
    from vadam_rl.training.run import train_population

    configs = []
    for seed in range(agents):
        config = apply_overrides(ours_config(preset, settings), settings.population_overrides)
        config.seed = seed
        configs.append(config)
    with tempfile.TemporaryDirectory(prefix="vadam-bench-") as tmp:
        run_dirs = [Path(tmp) / f"{preset}_s{seed}" for seed in range(agents)]
        train_population(configs, run_dirs, progress_bar=False)
        rate = window_rate(log_times(run_dirs[0]), settings)
    return {
        **rate,
        "agents": agents,
        "aggregate_steps_per_s": agents * rate["steps_per_s"],
        **peak_memory(torch.device(settings.device)),
    }


def bench_processes(preset: str, agents: int, settings: Settings) -> dict:
    """The alternative to a population: ``agents`` single runs as concurrent processes,
    each with ``cores // agents`` threads (at least 1). Their timed windows overlap only
    approximately (they start together and run the same schedule)."""
    threads = max((os.cpu_count() or 1) // agents, 1)
    each = dataclasses.replace(settings, threads=threads)
    with ThreadPoolExecutor(max_workers=agents) as pool:
        runs = list(pool.map(lambda _: spawn_part(f"ours:{preset}", each), range(agents)))
    rates = [run["steps_per_s"] for run in runs]
    return {
        "agents": agents,
        "threads_each": threads,
        "steps_per_s_each": rates,
        "aggregate_steps_per_s": sum(rates),
    }


def fill_buffer(buffer, n: int, device: torch.device, agents: int = 0) -> None:
    """``n`` random transitions (the update's cost does not depend on their values); for
    each of ``agents`` agents of a population buffer when ``agents`` > 0."""
    lead = (agents,) if agents else ()
    buffer.add(
        torch.randn(*lead, n, OBS_DIM, device=device),
        torch.rand(*lead, n, ACT_DIM, device=device) * 2 - 1,
        torch.randn(*lead, n, device=device),
        torch.randn(*lead, n, OBS_DIM, device=device),
        torch.zeros(*lead, n, device=device),
    )


def bench_ours_update(preset: str, settings: Settings) -> float:
    """Updates/s of the loop's training step as training builds it: the learner and replay
    buffer of ``build_runs`` (one agent), ``speed_ups.update(buffer.sample(100))``."""
    from vadam_rl.training.build import build_runs

    device = torch.device(settings.device)
    config = ours_config(preset, settings)
    with tempfile.TemporaryDirectory(prefix="vadam-bench-") as tmp:
        runs = build_runs([config], [Path(tmp) / preset])
    try:
        fill_buffer(runs.buffer, 10_000, device, agents=1)
        update = runs.speed_ups.update
        return per_second(
            lambda: update(runs.buffer.sample(BATCH_SIZE)), settings.update_steps, device
        )
    finally:
        runs.close()


# ------------------------------------------------------------------------------------------
# Stable-Baselines3
# ------------------------------------------------------------------------------------------


def bench_sb3(settings: Settings, algorithm: str = "ddpg") -> dict:
    """SB3 DDPG's (or TD3's) steps/s between the same two steps as ours, then its update
    alone."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DDPG, TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    device = torch.device(settings.device)
    marks = set(timing_marks(settings))

    class StepClock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.times: dict[int, float] = {}

        def _on_step(self) -> bool:
            if self.num_timesteps in marks:
                sync(device)
                self.times[self.num_timesteps] = time.perf_counter()
            return True

    env = gym.make(ENV_ID)
    # TD3: SB3's defaults are the paper's delay 2, target noise 0.2 clipped at 0.5.
    model = (DDPG if algorithm == "ddpg" else TD3)(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=settings.learning_starts,
        batch_size=BATCH_SIZE,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        action_noise=NormalActionNoise(np.zeros(ACT_DIM), 0.1 * np.ones(ACT_DIM)),
        policy_kwargs={"net_arch": HIDDEN},
        device=settings.device,
        seed=0,
    )
    clock = StepClock()
    model.learn(total_timesteps=settings.total_steps, callback=clock)
    result = {
        **window_rate(clock.times, settings),
        **peak_memory(device),
    }
    result["update_per_s"] = per_second(
        lambda: model.train(gradient_steps=1, batch_size=BATCH_SIZE),
        settings.update_steps,
        device,
    )
    env.close()
    return result


# ------------------------------------------------------------------------------------------
# Env alone and the compute bound
# ------------------------------------------------------------------------------------------


def bench_env(settings: Settings) -> float:
    """HalfCheetah-v5 steps/s with precomputed uniform random actions, resets included."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(ENV_ID)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (settings.env_steps, ACT_DIM))
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    seconds = time.perf_counter() - start
    env.close()
    return settings.env_steps / seconds


def update_matmuls(minimal: bool = False) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul in one DDPG update at batch 100 (critic action at the input).

    Per Linear(k -> n) on B rows: forward (B,k)@(k,n), input gradient dX (B,n)@(n,k), weight
    gradient dW (n,B)@(B,k). ``minimal`` drops what an update need not compute: dX of a
    network's input in the critic step and of the actor's input, and the critic's dW in the
    actor step (ours freezes the critic there).
    """
    actor = list(zip([OBS_DIM, *HIDDEN], [*HIDDEN, ACT_DIM], strict=True))
    critic = list(zip([OBS_DIM + ACT_DIM, *HIDDEN], [*HIDDEN, 1], strict=True))
    B = BATCH_SIZE

    def forward(layers):
        return [(B, k, n) for k, n in layers]

    def backward(layers, input_grad: bool, weight_grad: bool):
        shapes = []
        for i, (k, n) in enumerate(layers):
            if i > 0 or input_grad or not minimal:
                shapes.append((B, n, k))  # dX
            if weight_grad or not minimal:
                shapes.append((n, B, k))  # dW
        return shapes

    return [
        *forward(actor),  # target actor
        *forward(critic),  # target critic
        *forward(critic),  # critic regression ...
        *backward(critic, input_grad=False, weight_grad=True),
        *forward(actor),  # actor ascent on Q ...
        *forward(critic),
        *backward(critic, input_grad=True, weight_grad=False),
        *backward(actor, input_grad=False, weight_grad=True),
    ]


def flops(shapes: list[tuple[int, int, int]]) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def bench_bound(settings: Settings) -> dict:
    """Updates/s if an update cost only its matmuls, each at the speed torch.mm runs it."""
    device = torch.device(settings.device)

    def timed_matmuls(shapes: list[tuple[int, int, int]]) -> float:
        operands = [
            (
                torch.randn(m, k, device=device),
                torch.randn(k, n, device=device),
                torch.empty(m, n, device=device),
            )
            for m, k, n in shapes
        ]

        def run() -> None:
            for a, b, out in operands:
                torch.mm(a, b, out=out)

        return 1.0 / per_second(run, settings.matmul_repeats, device)

    shapes = update_matmuls()
    seconds = timed_matmuls(shapes)
    peak_shape = [(BATCH_SIZE, HIDDEN[0], HIDDEN[1])]
    peak_seconds = timed_matmuls(peak_shape * 10) / 10
    return {
        "flops_per_update": flops(shapes),
        "flops_per_update_minimal": flops(update_matmuls(minimal=True)),
        "matmuls_per_update": len(shapes),
        "matmul_gflops": flops(shapes) / seconds / 1e9,
        "peak_gflops_100x400x300": flops(peak_shape) / peak_seconds / 1e9,
        "updates_per_s": 1.0 / seconds,
    }


# ------------------------------------------------------------------------------------------
# Parts and the report
# ------------------------------------------------------------------------------------------


def run_part(part: str, settings: Settings) -> dict:
    """One measurement, in this process."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    if part == "micro":
        result = {
            "env_steps_per_s": bench_env(settings),
            "bound": bench_bound(settings),
            "update_per_s": {p: bench_ours_update(p, settings) for p in settings.presets},
        }
    elif part.startswith("ours:"):
        result = bench_ours(part.removeprefix("ours:"), settings)
    elif part.startswith("population:"):
        _, preset, agents = part.split(":")
        result = bench_population(preset, int(agents), settings)
    elif part == "sb3":
        result = bench_sb3(settings)
    elif part == "sb3-td3":
        result = bench_sb3(settings, "td3")
    else:
        raise ValueError(f"unknown part {part!r}")
    result["torch_threads"] = torch.get_num_threads()
    return result


def median_run(runs: list[dict]) -> dict:
    """The run with the median steps/s (the lower one of the middle two for an even count),
    with every run's rate in ``rounds_steps_per_s``; a single run as it is."""
    if len(runs) == 1:
        return runs[0]
    ranked = sorted(runs, key=lambda run: run["steps_per_s"])
    return {
        **ranked[(len(ranked) - 1) // 2],
        "rounds_steps_per_s": [run["steps_per_s"] for run in runs],
    }


def median_micro(runs: list[dict]) -> dict:
    """The micro part over rounds: every timing's own median (the lower middle one for an
    even count), with the number of rounds; a single run as it is. The bound's
    ``matmul_gflops`` and ``updates_per_s`` grow with the same timing, so their medians come
    from one round; the other timings' may come from others."""
    if len(runs) == 1:
        return runs[0]
    return {**_median_leaves(runs), "rounds": len(runs)}


def _median_leaves(values: list):
    first = values[0]
    if isinstance(first, dict):
        return {key: _median_leaves([value[key] for value in values]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median_low(values)
    return first


def spawn_part(part: str, settings: Settings) -> dict:
    """``run_part`` in a fresh interpreter; its JSON comes back through a temporary file."""
    with tempfile.TemporaryDirectory(prefix="vadam-bench-") as tmp:
        out = Path(tmp) / "part.json"
        command = [
            sys.executable,
            __file__,
            "--part",
            part,
            "--part-out",
            str(out),
            "--part-settings",
            json.dumps(dataclasses.asdict(settings)),
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"bench part {part} failed:\n{done.stderr[-4000:]}")
        result = json.loads(out.read_text())
    print(f"  {part:16s} done in {time.perf_counter() - started:5.1f} s", flush=True)
    return result


def machine_info(settings: Settings) -> dict:
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": settings.device,
        "gpu": None,
    }
    if settings.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    try:
        from importlib.metadata import version

        info["stable_baselines3"] = version("stable-baselines3")
        info["gymnasium"] = version("gymnasium")
        info["mujoco"] = version("mujoco")
    except Exception:  # only informational
        pass
    return info


def assemble(parts: dict[str, dict], settings: Settings, mode: str) -> dict:
    micro = parts["micro"]
    bound = micro["bound"]
    machine = machine_info(settings)
    machine["torch_threads"] = micro["torch_threads"]
    result: dict = {
        "mode": mode,
        "machine": machine,
        "settings": {
            **dataclasses.asdict(settings),
            "env_id": ENV_ID,
            "batch_size": BATCH_SIZE,
            "hidden_sizes": HIDDEN,
            "total_steps": settings.total_steps,
            "timed_from_step": settings.timed_from,
        },
        "env_alone": {"steps_per_s": micro["env_steps_per_s"]},
        "micro_rounds": micro.get("rounds", 1),
        "bound": bound,
        **{key.replace("-", "_"): parts[key] for key in ("sb3", "sb3-td3") if key in parts},
        "ours": {},
        "ratios": {},
    }
    for key, value in parts.items():
        if key.startswith(("population:", "processes:")):
            kind, preset, agents = key.split(":")
            entry = result.setdefault("population", {}).setdefault(f"{preset}:{agents}", {})
            entry[kind] = value
            entry["one_agent_steps_per_s"] = parts[f"ours:{preset}"]["steps_per_s"]
    for preset in settings.presets:
        ours = dict(parts[f"ours:{preset}"])
        ours["update_per_s"] = micro["update_per_s"][preset]
        result["ours"][preset] = ours
        sb3 = parts[sb3_part(preset)]
        result["ratios"][f"{preset}/{sb3_part(preset)}"] = ours["steps_per_s"] / sb3["steps_per_s"]
        result["ratios"][f"{preset}/bound"] = ours["steps_per_s"] / bound["updates_per_s"]
    return result


def markdown(result: dict) -> str:
    """The result as a Markdown table, with the machine named above it."""
    m, env_rate = result["machine"], result["env_alone"]["steps_per_s"]
    bound = result["bound"]
    device = m["gpu"] or f"{m['cpu']}, {m['cores']} cores"
    lines = [
        f"HalfCheetah-v5, batch {BATCH_SIZE}, [400, 300], 1 update per step, "
        f"{result['settings']['steps']} timed steps ({result['mode']} mode). "
        f"Device {m['device']} ({device}), torch {m['torch']}, {m['torch_threads']} threads"
        f"{_compile_note(result)}"
        f"{'' if result['settings']['cuda_graph'] else ', ours with cuda_graph=false'}"
        f"{_overrides_note(result['settings'])}.",
        "",
        "| | steps/s | per-interval range | ms/step | update alone (ms) | env alone (ms) "
        "| rest (ms) | vs SB3 | vs bound | peak RSS (MiB) | CUDA peak (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    presets = result["settings"]["presets"]
    sb3_rows = {"sb3": ("SB3 DDPG", "sb3"), "sb3-td3": ("SB3 TD3", "sb3_td3")}
    rows = [(f"ours {p}", result["ours"][p], sb3_rows[sb3_part(p)][1]) for p in presets]
    rows += [(name, result[key], key) for name, key in sb3_rows.values() if key in result]
    for name, row, against in rows:
        sb3_rate = result[against]["steps_per_s"]
        step_ms, update_ms = 1e3 / row["steps_per_s"], 1e3 / row["update_per_s"]
        env_ms = 1e3 / env_rate
        cuda = row["cuda_max_allocated_mib"]
        spread = row["interval_steps_per_s"]
        lines.append(
            f"| {name} | {row['steps_per_s']:.0f} | {spread['min']:.0f}-{spread['max']:.0f} "
            f"| {step_ms:.2f} | {update_ms:.2f} "
            f"| {env_ms:.3f} | {step_ms - update_ms - env_ms:.2f} "
            f"| {row['steps_per_s'] / sb3_rate:.2f}x "
            f"| {row['steps_per_s'] / bound['updates_per_s']:.0%} "
            f"| {row['peak_rss_mib']:.0f} | {'-' if cuda is None else f'{cuda:.0f}'} |"
        )
    lines.append(
        f"| compute bound | {bound['updates_per_s']:.0f} | | {1e3 / bound['updates_per_s']:.2f} "
        f"| | | | | 100% | | |"
    )
    lines += _rounds_lines([(name, row) for name, row, _ in rows])
    lines += _population_lines(result)
    lines += [
        "",
        f"Compute bound: {bound['flops_per_update'] / 1e6:.0f} MFLOP per update "
        f"({bound['matmuls_per_update']} matmuls) at {bound['matmul_gflops']:.1f} GFLOP/s "
        f"(torch.mm at the update's shapes; {bound['peak_gflops_100x400x300']:.1f} GFLOP/s at "
        f"100x400x300). Env alone: {env_rate:.0f} steps/s. Rest = loop - update - env: "
        f"acting, noise, buffer writes, Python.{_micro_rounds_note(result)}",
    ]
    return "\n".join(lines) + "\n"


def _rounds_lines(rows: list[tuple[str, dict]]) -> list[str]:
    if "rounds_steps_per_s" not in rows[0][1]:
        return []
    rates = [
        f"{name} {', '.join(f'{rate:.0f}' for rate in row['rounds_steps_per_s'])}"
        for name, row in rows
    ]
    count = len(rows[0][1]["rounds_steps_per_s"])
    return [
        "",
        f"Each row is the median of {count} rounds, run alternating "
        f"(steps/s per round: {'; '.join(rates)}).",
    ]


def _micro_rounds_note(result: dict) -> str:
    rounds = result.get("micro_rounds", 1)
    return (
        f" Update alone, env alone and the bound: medians of {rounds} rounds." if rounds > 1 else ""
    )


def _compile_note(result: dict) -> str:
    compiled = [p for p in result["settings"]["presets"] if result["ours"][p].get("compile")]
    if not compiled:
        return ", ours eager (compile=false)"
    return f", ours compiled (compile=true: {', '.join(compiled)})"


def _overrides_note(settings: dict) -> str:
    ours = [f", --set {o}" for o in settings.get("overrides", [])]
    populations = [
        f", populations with --set {o}" for o in settings.get("population_overrides", [])
    ]
    return "".join(ours + populations)


def _population_lines(result: dict) -> list[str]:
    if "population" not in result:
        return []
    bound = result["bound"]["updates_per_s"]
    lines = [
        "",
        "| K agents | how | aggregate steps/s | per agent | vs one agent alone | vs bound |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, entry in result["population"].items():
        preset, agents = key.split(":")
        one = entry["one_agent_steps_per_s"]
        rows = [("one population, 1 process", entry.get("population"))]
        rows.append((f"{agents} processes", entry.get("processes")))
        for how, row in rows:
            if row is None:
                continue
            total = row["aggregate_steps_per_s"]
            lines.append(
                f"| {agents} x {preset} | {how} | {total:.0f} | {total / int(agents):.1f} "
                f"| {total / one:.2f}x | {total / bound:.0%} |"
            )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="quick check (~2 min on 2 cores)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results",
        help="folder for result.json and result.md",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--presets",
        nargs="+",
        default=list(PRESETS),
        metavar="PRESET",
        help="our presets to time (default: %(default)s), e.g. ddpg-vadam ddpg-param-noise",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed training steps per run (scales the other budgets too)",
    )
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every part this many times, alternating; report ours' and SB3's median runs "
        "and each micro-benchmark's median (a machine whose speed drifts by 10%% within "
        "minutes needs 3 or more)",
    )
    parser.add_argument(
        "--compile",
        choices=["preset", "true", "false"],
        default="preset",
        help="ours with compile as the preset resolves it for its own run length (default; "
        "on a CPU: compiled), or forced",
    )
    parser.add_argument(
        "--no-cuda-graph",
        action="store_true",
        help="ours with cuda_graph=false (ddpg-adam's preset has it on; CUDA only)",
    )
    overrides = (
        ("--set", "overrides", "ours, both presets", "cuda_graph=true"),
        ("--population-set", "population_overrides", "the populations only", "async_envs=true"),
    )
    for flag, dest, whose, example in overrides:
        parser.add_argument(
            flag,
            dest=dest,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"config override for {whose} (repeatable), e.g. {example}",
        )
    parser.add_argument(
        "--no-processes",
        action="store_true",
        help="with --population: skip the K separate processes it is compared with",
    )
    parser.add_argument(
        "--population",
        type=int,
        default=0,
        metavar="K",
        help="also time K agents of each preset as one population and as K processes",
    )
    # Internal: one part in this process (see spawn_part).
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part-settings", help=argparse.SUPPRESS)
    return parser.parse_args()


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings(
        device=args.device,
        threads=args.threads,
        learning_starts=args.learning_starts,
        compile=args.compile,
        cuda_graph=not args.no_cuda_graph,
        presets=args.presets,
        overrides=args.overrides,
        population_overrides=args.population_overrides,
    )
    if args.short:
        settings = dataclasses.replace(settings, **SHORT)
    if args.steps is not None:
        # Tiny runs (tests): every budget shrinks with the timed steps.
        if args.steps < 4:
            raise SystemExit("--steps must be >= 4")
        unit = min(settings.log_every, args.steps // 4)
        settings = dataclasses.replace(
            settings,
            steps=args.steps,
            warmup=unit,
            log_every=unit,
            update_steps=min(settings.update_steps, args.steps),
            env_steps=min(settings.env_steps, 10 * args.steps),
            matmul_repeats=min(settings.matmul_repeats, args.steps),
        )
    return settings


def main() -> None:
    args = parse_args()
    if args.part is not None:
        settings = Settings(**json.loads(args.part_settings))
        args.part_out.write_text(json.dumps(run_part(args.part, settings)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    settings = settings_from(args)
    mode = "short" if args.short else "full"
    print(
        f"bench: {ENV_ID}, device {settings.device}, {mode} mode, "
        f"{settings.steps} timed steps after step {settings.timed_from}",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    # Each finished part is kept in parts.json at once: a run stopped midway keeps them.
    parts: dict[str, dict] = {}

    def measure(name: str, run: Callable[[], dict]) -> None:
        parts[name] = run()
        (args.out / "parts.json").write_text(json.dumps(parts, indent=2) + "\n")

    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    order = parts_order(settings.presets)
    runs: dict[str, list[dict]] = {part: [] for part in order}
    for _ in range(args.rounds):
        for part in order:
            runs[part].append(spawn_part(part, settings))
            combine = median_micro if part == "micro" else median_run
            measure(part, lambda part=part, combine=combine: combine(runs[part]))
    for preset in settings.presets if args.population else ():
        key = f"{preset}:{args.population}"
        measure(f"population:{key}", lambda key=key: spawn_part(f"population:{key}", settings))
        if not args.no_processes:
            measure(
                f"processes:{key}",
                lambda preset=preset: bench_processes(preset, args.population, settings),
            )
    result = assemble(parts, settings, mode)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "result.md").write_text(table)
    print()
    print(table)
    for name, ratio in result["ratios"].items():
        print(f"{name:22s} {ratio:6.2f}")
    print(f"wrote {args.out / 'result.json'} and {args.out / 'result.md'}")


if __name__ == "__main__":
    main()
