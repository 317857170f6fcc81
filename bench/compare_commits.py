"""Before/after: the same bench parts from another commit and from this tree, alternating.

The machine's speed drifts by 10% or more between bench runs minutes apart, so a speed-up
measured against yesterday's table is mostly noise. This runs one part (a fresh process, as
``bench/run.py`` does) from a git worktree of ``COMMIT``, then from this tree, ``--rounds``
times, and prints every rate and the ratio of the means:

    python bench/compare_commits.py 69825a4                      # ours:ddpg-adam, ours:ddpg-vadam
    python bench/compare_commits.py HEAD~3 --parts ours:ddpg-adam --rounds 3

Short-mode settings (2000 timed steps after 1500). Both sides use this tree's virtual
environment; the other commit's ``bench/run.py`` must have the ``--part`` interface.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import SHORT, Settings

ROOT = Path(__file__).resolve().parent.parent


@cache
def settings_fields(tree: Path) -> list[str]:
    """The ``Settings`` fields that tree's bench knows (older ones know fewer)."""
    code = (
        "import dataclasses, json, sys; sys.path.insert(0, 'bench'); import run; "
        "print(json.dumps([f.name for f in dataclasses.fields(run.Settings)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=tree_env(tree), capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"cannot read {tree}/bench/run.py's Settings:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def tree_env(tree: Path) -> dict[str, str]:
    # The tree's own package first, ahead of this tree's editable install.
    return {**os.environ, "PYTHONPATH": str(tree)}


def run_part(tree: Path, part: str, settings: dict) -> float:
    """Steps/s of one bench part, run from ``tree`` in a fresh interpreter. A "preset" value
    (compile) is left out: each tree runs its presets as they are (older benches had
    compile=false, a bool, as their default)."""
    known = settings_fields(tree)
    with tempfile.TemporaryDirectory(prefix="vadam-ab-") as tmp:
        out = Path(tmp) / "part.json"
        command = [
            sys.executable,
            "bench/run.py",
            "--part",
            part,
            "--part-out",
            str(out),
            "--part-settings",
            json.dumps({k: v for k, v in settings.items() if k in known and v != "preset"}),
        ]
        done = subprocess.run(command, cwd=tree, env=tree_env(tree), capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"{part} failed in {tree}:\n{done.stderr.decode()[-3000:]}")
        return json.loads(out.read_text())["steps_per_s"]


def add_worktree(commit: str, where: Path) -> None:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=ROOT, check=True)
    # The editable install maps the presets package to this tree's agents/; give the other
    # tree's package its own presets so its PYTHONPATH import finds them first (under the
    # package's name then and now).
    for name in ("agents", "presets"):
        link = where / "vadam_rl" / name
        if not link.exists():
            link.symlink_to(where / "agents", target_is_directory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the commit to compare against (e.g. a hash, HEAD~3)")
    parser.add_argument("--parts", nargs="+", default=["ours:ddpg-adam", "ours:ddpg-vadam"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = dataclasses.asdict(dataclasses.replace(Settings(), **SHORT))
    with tempfile.TemporaryDirectory(prefix="vadam-ab-") as tmp:
        other = Path(tmp) / "other"
        add_worktree(args.commit, other)
        try:
            for part in args.parts:
                rates: dict[str, list[float]] = {args.commit: [], "this tree": []}
                for _ in range(args.rounds):
                    rates[args.commit].append(run_part(other, part, settings))
                    rates["this tree"].append(run_part(ROOT, part, settings))
                for name, values in rates.items():
                    shown = ", ".join(f"{v:.1f}" for v in values)
                    print(f"{part:18s} {name:12s} steps/s: {shown}", flush=True)
                ratio = statistics.mean(rates["this tree"]) / statistics.mean(rates[args.commit])
                print(f"{part:18s} this tree / {args.commit}: {ratio:.2f}x", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT)


if __name__ == "__main__":
    main()
