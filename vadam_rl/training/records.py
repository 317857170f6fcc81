"""RUN_DIR/evaluations.csv: one row per evaluation of the mean policy, read and rewritten whole."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vadam_rl import run_dir as layout


def read_evaluations(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / layout.EVALUATIONS
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: _eval_value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _eval_value(column: str, text: str) -> float:
    # Counts stay integers so that a resumed run rewrites the file byte for byte.
    return int(float(text)) if column in ("step", "episodes") else float(text)


def write_evaluations(run_dir: Path, rows: list[dict[str, float]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=layout.EVAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in layout.EVAL_COLUMNS})
    layout.atomic_write_text(Path(run_dir) / layout.EVALUATIONS, out.getvalue())
