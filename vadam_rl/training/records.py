"""RUN_DIR/evaluations.csv: one row per evaluation of the mean policy, read and rewritten whole.

Training appends its rows (``write_evaluations``) and a resume reads them back; ``report``
reads the same file through the same function, so both agree on what a valid file is.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from pathlib import Path

from vadam_rl import run_dir as layout
from vadam_rl.errors import UserError

REQUIRED = ("step", "mean_return")


def read_evaluations(run_dir: Path) -> list[dict[str, float]]:
    """The rows of RUN_DIR/evaluations.csv ([] if there is none), numbers by column name
    (empty cells left out); a UserError naming the file for anything but rows of finite
    numbers at increasing steps."""
    path = Path(run_dir) / layout.EVALUATIONS
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as f:
            rows = [_parse(row) for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, ValueError, OverflowError, csv.Error) as err:
        raise UserError(f"{path}: {type(err).__name__}: {err}") from None
    steps = [row["step"] for row in rows]
    if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        raise UserError(f"{path}: steps are not increasing")
    return rows


def _parse(row: dict) -> dict[str, float]:
    if None in row or None in row.values():
        raise ValueError("a row has more or fewer cells than the header")
    missing = [column for column in REQUIRED if not row.get(column)]
    if missing:
        raise ValueError(f"a row has no {', '.join(missing)}")
    parsed = {column: _eval_value(column, text) for column, text in row.items() if text != ""}
    if not all(math.isfinite(value) for value in parsed.values()):
        raise ValueError("holds non-finite values")
    return parsed


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
