"""Vadam-DDPG against plain-Adam DDPG on HalfCheetah over seeds, then the report.

The same command as ``vadam-rl compare`` (the logic lives in ``vadam_rl.commands.compare``);
every flag is overridable, e.g. a budget that fits a laptop:

    python scripts/compare_halfcheetah.py --total-steps 100000 --num-seeds 3

Rerun the same command to continue an interrupted grid.
"""

from __future__ import annotations

import sys

import tyro

from vadam_rl.commands.compare import compare_command
from vadam_rl.config import ConfigError
from vadam_rl.errors import UserError

if __name__ == "__main__":
    try:
        tyro.cli(compare_command)
    except (UserError, ConfigError) as err:
        print(f"compare_halfcheetah: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
