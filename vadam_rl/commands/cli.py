"""The ``vadam-rl`` command line (tyro subcommands).

Bad input of any kind ends in one line on stderr and exit code 2, before anything is written;
a non-finite loss ends with exit code 1 and the last good checkpoint kept; Ctrl-C / SIGTERM
writes a checkpoint and exits with code 130.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import re
import sys
import threading
from collections.abc import Callable

from vadam_rl import signals
from vadam_rl.errors import Crashed, Interrupted, NonFiniteError, UserCodeError, UserError


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
        "agents": agents_command,
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
    threading.excepthook = _quiet_when_disk_full
    with signals.for_process() as stop:
        try:
            _main(args)
        except BrokenPipeError:  # (`vadam-rl agents | head`): the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
        except KeyboardInterrupt:  # (signals.for_process: not yet training, or not a run)
            starting = args[:1] in (["train"], ["import-sb3"])
            where = " before training started; the same command starts it again"
            print(
                f"vadam-rl: stopped by signal {stop.signal or 2}{where * starting}", file=sys.stderr
            )
            raise SystemExit(130) from None


def _quiet_when_disk_full(hook_args: threading.ExceptHookArgs) -> None:
    """A full disk seen by a writer thread (TensorBoard's) is told once, by the main thread
    that trips over it next, not as a thread's traceback."""
    from vadam_rl.run_dir import is_disk_full

    if hook_args.exc_value is None or not is_disk_full(hook_args.exc_value):
        threading.__excepthook__(hook_args)


def _main(args: list[str]) -> None:
    import tyro

    from vadam_rl.commands.train import PARENT_ENV, TrainArgs, run_train, stop_with_parent
    from vadam_rl.config import ConfigError

    parent = os.environ.pop(PARENT_ENV, "")  # (not inherited by what this process starts)
    if parent.isdigit() and args[:1] == ["train"]:  # a run that vadam-rl compare started
        stop_with_parent(int(parent))
    try:
        parsed = _parse(tyro, args)
        if isinstance(parsed, TrainArgs):
            run_train(parsed)
    except (UserError, ConfigError) as err:
        print(f"vadam-rl: error: {one_line(str(err))}", file=sys.stderr)
        if isinstance(err, UserCodeError):  # (their code raised: they need its traceback)
            print(err.trace, end="", file=sys.stderr)
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


def _parse(tyro, args: list[str]) -> object:
    """tyro's parse, with its multi-line error box (``--total-steps 1.5``, an unknown option)
    told as one line. Only the parse is captured: tyro then calls a function subcommand
    (compare, eval, ...), whose own messages go straight to stderr."""
    real, captured = sys.stderr, io.StringIO()

    def running(command: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(command)  # (tyro reads the signature and docstring through it)
        def run(*positional: object, **options: object) -> object:
            sys.stderr = real
            return command(*positional, **options)

        return run

    subcommands = {
        name: running(command) if inspect.isfunction(command) else command
        for name, command in commands().items()
    }
    sys.stderr = captured
    try:
        return tyro.extras.subcommand_cli_from_dict(subcommands, prog="vadam-rl", args=args)
    except SystemExit as exit_:
        parsing = sys.stderr is captured
        sys.stderr = real
        text = captured.getvalue()
        if not parsing or exit_.code != 2 or not text.strip():
            real.write(text)
            raise
        command = args[0] if args[:1] and args[0] in subcommands else None
        help_hint = f"see vadam-rl {command + ' ' if command else ''}--help"
        print(f"vadam-rl: error: {parse_error_line(text)} ({help_hint})", file=real)
        raise SystemExit(2) from None
    finally:
        if sys.stderr is captured:
            real.write(captured.getvalue())
        sys.stderr = real


_LONG_WORD = re.compile(r"\S{121,}")


def one_line(message: str) -> str:
    """A message as one line, with any value longer than 120 characters cut (a 6,000-char
    --set value is quoted by its start and length, not in full)."""

    def cut(match: re.Match[str]) -> str:
        word = match.group(0)
        return f"{word[:60]}... ({len(word)} characters)"

    return _LONG_WORD.sub(cut, " ".join(message.split()))


_BORDER = re.compile(r"^[\s│╭╮╰╯─]+|[\s│╭╮╰╯─]+$")
_TYPES = {"int": "an integer", "float": "a number", "bool": "True or False", "Path": "a path"}


def parse_error_line(box: str) -> str:
    """One line from tyro's error box: the message sections, without the help text."""
    sections: list[list[str]] = [[]]
    for raw in box.splitlines()[1:-1]:  # (the first line is the title, the last the border)
        line = _BORDER.sub("", raw)
        if line:
            sections[-1].append(line)
        elif "──" in raw:  # a rule between sections
            sections.append([])
    kept = [" ".join(s) for s in sections if s and not s[0].startswith(("For full", "Argument"))]
    text = "; ".join(kept)
    value = re.match(r"Error parsing (\S+): no type matching .* from \[(.*?)\]\.", text)
    if value:  # tyro tries each type of the union and lists why each one failed
        types = [t for t in re.findall(r"<class '(\w+)'>", text) if t != "NoneType"]
        wanted = " or ".join(_TYPES.get(t, t) for t in types) or "another value"
        return f"{value.group(1)} expects {wanted}, got {value.group(2)}"
    return text


if __name__ == "__main__":
    main()
