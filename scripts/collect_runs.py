"""Copy a grid's small per-run files into a folder that can be committed.

    python scripts/collect_runs.py RUNS_DIR DEST

For every run directory below RUNS_DIR, copies config.yaml, evaluations.csv and (when the
run has finished) summary.json to DEST/<run name>/, plus RUNS_DIR/protocol.md; checkpoints,
replay buffers, policies and TensorBoard files stay behind. `vadam-rl report DEST` then
rebuilds the report from the copies alone (`--include-unfinished` while the grid is still
running).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from vadam_rl import run_dir as layout
from vadam_rl.commands.report import PROTOCOL
from vadam_rl.report.loading import find_run_dirs

SMALL_FILES = (layout.CONFIG, layout.EVALUATIONS, layout.SUMMARY)


def collect(runs_dir: Path, dest: Path) -> list[Path]:
    copied = []
    for run in find_run_dirs(runs_dir):
        if run == runs_dir:
            continue
        target = dest / run.relative_to(runs_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            if (run / name).is_file():
                # copy then rename: a reader never sees half a file
                tmp = target / f".{name}.tmp"
                shutil.copyfile(run / name, tmp)
                tmp.replace(target / name)
                copied.append(target / name)
    if (runs_dir / PROTOCOL).is_file():
        shutil.copyfile(runs_dir / PROTOCOL, dest / PROTOCOL)
        copied.append(dest / PROTOCOL)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    if not args.runs_dir.is_dir():
        print(f"error: {args.runs_dir} is not a directory", file=sys.stderr)
        return 2
    copied = collect(args.runs_dir, args.dest)
    runs = {p.parent for p in copied if p.name != PROTOCOL}
    print(f"copied {len(copied)} files of {len(runs)} runs to {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
