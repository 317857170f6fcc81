"""The ``vadam-rl`` command line (tyro subcommands).

Bad input of any kind ends in one line on stderr and exit code 2, before anything is written;
a non-finite loss ends with exit code 1 and the last good checkpoint kept; Ctrl-C / SIGTERM
writes a checkpoint and exits with code 130.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from vadam_rl import signals
from vadam_rl.errors import Crashed, Interrupted, NonFiniteError, UserError


def commands() -> dict[str, Callable[..., object]]:
    """The subcommands. Imported only once the signal handlers are in place (a Ctrl-C during
    these imports is one line too); heavy or optional libraries (SB3, matplotlib, rliable,
    Ray) are imported inside the commands that use them, so every subcommand is always
    listed and `vadam-rl train` starts quickly."""
    from vadam_rl.commands.compare import compare_command
    from vadam_rl.commands.report import report_command
    from vadam_rl.commands.sb3 import eval_command, export_command
    from vadam_rl.commands.train import ImportArgs, TrainArgs

    return {
        "agents": lambda: agents_command(),
        "compare": compare_command,
        "eval": eval_command,
        "export": export_command,
        "import-sb3": ImportArgs,
        "report": report_command,
        "train": TrainArgs,
    }


def agents_command() -> None:
    """List the agent presets shipped in agents/."""
    from vadam_rl.config import list_presets

    presets = list_presets()
    width = max(map(len, presets), default=0)
    for name, description in presets.items():
        print(f"{name:<{width}}  {description}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with signals.for_process() as stop:
        try:
            _main(args)
        except KeyboardInterrupt:  # (signals.for_process: not yet training, or not a run)
            starting = args[:1] in (["train"], ["import-sb3"])
            where = " before training started; the same command starts it again"
            print(
                f"vadam-rl: stopped by signal {stop.signal or 2}{where * starting}", file=sys.stderr
            )
            raise SystemExit(130) from None


def _main(args: list[str]) -> None:
    import tyro

    from vadam_rl.commands.train import PARENT_ENV, TrainArgs, run_train, stop_with_parent
    from vadam_rl.config import ConfigError

    parent = os.environ.pop(PARENT_ENV, "")  # (not inherited by what this process starts)
    if parent.isdigit() and args[:1] == ["train"]:  # a run that vadam-rl compare started
        stop_with_parent(int(parent))
    try:
        parsed = tyro.extras.subcommand_cli_from_dict(commands(), prog="vadam-rl", args=args)
        if isinstance(parsed, TrainArgs):
            run_train(parsed)
    except (UserError, ConfigError) as err:
        print(f"vadam-rl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        if err.filename is None:  # (not a path the user gave us, or their file system)
            raise
        # A path that cannot be written or read (--log-dir a file, -o a folder, a full
        # disk outside training, which has its own message): one line, like bad input.
        print(f"vadam-rl: error: {err.filename}: {err.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    except (Crashed, Interrupted, NonFiniteError) as err:
        print(f"vadam-rl: {err}", file=sys.stderr)
        raise SystemExit(130 if isinstance(err, Interrupted) else 1) from None


if __name__ == "__main__":
    main()
