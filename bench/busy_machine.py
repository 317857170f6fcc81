"""Training speed alone and beside one busy process, per thread setting.

A shared workstation or cluster node has other work on its cores. This trains the same short
run (``vadam-rl train``, HalfCheetah-v5, 3000 steps of which 2000 update, eager update) with
each thread setting, first on an idle machine, then beside one process that keeps a core
busy, and prints the steps/s the run reports and the busy/idle ratio:

    python bench/busy_machine.py                 # --threads 1 (the default), 2, 2 + passive wait
    python bench/busy_machine.py --steps 5000

The figures depend on the machine: say which CPU they came from.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "--threads 1 (default)": (["--threads", "1"], {}),
    "--threads 2": (["--threads", "2"], {}),
    "--threads 2, OMP_WAIT_POLICY=PASSIVE": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
}
BUSY = "while True: pass"


def steps_per_s(extra: list[str], env: dict[str, str], steps: int, preset: str) -> float:
    """What the run itself reports (training time only, not start-up or the final eval)."""
    log_dir = Path(tempfile.mkdtemp(prefix="vadam-busy-"))
    command = [
        sys.executable, "-m", "vadam_rl.commands.cli", "train", "--agent", preset,
        "--env", "HalfCheetah-v5", "--total-steps", str(steps), "--log-dir", str(log_dir),
        "--no-progress", "--set", f"learning_starts={steps // 3}", "--set", "eval_every=0",
        "--set", "eval_episodes=1", "--set", "compile=false", *extra,
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    try:
        done = subprocess.run(
            command, env={**environ, **env}, capture_output=True, text=True, check=True
        )
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return float(re.search(r"\((\d+) steps/s\)", done.stdout).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--preset", default="ddpg-adam")
    args = parser.parse_args()
    idle = {name: steps_per_s(*s, args.steps, args.preset) for name, s in SETTINGS.items()}
    busy_process = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        busy = {name: steps_per_s(*s, args.steps, args.preset) for name, s in SETTINGS.items()}
    finally:
        busy_process.kill()
    print(f"{args.preset}, HalfCheetah-v5, {args.steps} steps, {os.cpu_count()} CPUs")
    print("| setting | idle steps/s | beside one busy process | busy / idle |")
    print("|---|---:|---:|---:|")
    for name in SETTINGS:
        print(f"| {name} | {idle[name]:.0f} | {busy[name]:.0f} | {busy[name] / idle[name]:.0%} |")


if __name__ == "__main__":
    main()
