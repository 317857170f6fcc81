"""The ``vadam-rl`` command line (tyro subcommands).

Bad input of any kind ends in one line on stderr and exit code 2, before anything is written;
a non-finite loss ends with exit code 1 and the last good checkpoint kept; Ctrl-C / SIGTERM
writes a checkpoint and exits with code 130.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import tyro

from vadam_rl.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    list_presets,
    load_config_file,
    load_preset,
)
from vadam_rl.errors import UserError

# Subcommands defined outside this module, imported only when used (SB3, matplotlib and Ray
# are slow to import and not needed to train).
EXTERNAL_COMMANDS = {
    "eval": "vadam_rl.sb3_bridge:eval_command",
    "export": "vadam_rl.sb3_bridge:export_command",
    "import-sb3": "vadam_rl.cli_import:import_command",
    "report": "vadam_rl.report:report_command",
    "compare": "vadam_rl.compare:compare_command",
}


def train_command(
    agent: str = "ddpg-vadam",
    env: str | None = None,
    seed: int | None = None,
    total_steps: int | None = None,
    log_dir: Path = Path("runs"),
    run_name: str | None = None,
    set: Annotated[  # the flag users type is --set
        list[str], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="KEY=VALUE")
    ] = [],  # noqa: B006 - tyro reads the default; it is never mutated
    device: Literal["auto", "cpu", "cuda"] | None = None,
    resume: Path | None = None,
    progress: bool = True,
) -> None:
    """Train a DDPG agent from a preset (see `vadam-rl agents`).

    Args:
        agent: Preset name from agents/ (ddpg-vadam, ddpg-adam, ddpg-adam-plain, ...).
        env: Gymnasium env id with a Box action space (default: the preset's, HalfCheetah-v5).
        seed: Random seed (default: the preset's, 0).
        total_steps: Environment steps to train for (default: the preset's).
        log_dir: Folder that receives the run directory.
        run_name: Name of the run directory (default: AGENT_ENV_sSEED, made unique).
        set: Override any config field, e.g. --set actor.optimizer.lr=3e-4 (repeatable).
        device: auto (CUDA if present), cpu or cuda (default: the preset's, auto).
        resume: Continue the interrupted run in this directory (other flags except
            --total-steps and --device are taken from its config.yaml).
        progress: Show a progress bar.
    """
    from vadam_rl import run_dir as layout
    from vadam_rl.train import train

    if resume is not None:
        config = _resume_config(resume, total_steps, device)
        if config is None:
            return
        run_dir = resume
    else:
        config = load_preset(agent, env)
        if seed is not None:
            config.seed = seed
        if total_steps is not None:
            config.total_steps = total_steps
        if device is not None:
            config.device = device
        apply_overrides(config, list(set))
        run_dir = _new_run_dir(log_dir, run_name, config)
    print(f"run directory: {run_dir}\nwatch it:      tensorboard --logdir {run_dir.parent}")
    summary = train(config, run_dir, resume=resume is not None, progress_bar=progress)
    print(
        f"finished {summary['total_steps']} steps in {summary['wall_time_s']:.0f} s "
        f"({summary['steps_per_s']:.0f} steps/s); final eval return "
        f"{summary['final_eval_return']:.1f}"
    )
    if (run_dir / layout.MODEL_ZIP).is_file():
        print(f"SB3 model:     {run_dir / layout.MODEL_ZIP}")


def _resume_config(
    run_dir: Path, total_steps: int | None, device: str | None
) -> TrainConfig | None:
    from vadam_rl import run_dir as layout

    config_path = run_dir / layout.CONFIG
    if not run_dir.is_dir():
        raise UserError(f"cannot resume: {run_dir} is not a directory")
    if not config_path.is_file():
        raise UserError(f"cannot resume: {run_dir} has no {layout.CONFIG} (not a run directory)")
    config = load_config_file(config_path)
    if total_steps is not None:
        config.total_steps = total_steps
    if device is not None:
        config.device = device  # type: ignore[assignment]
    if layout.is_finished(run_dir):
        import json

        done = json.loads((run_dir / layout.SUMMARY).read_text())["total_steps"]
        if config.total_steps <= done:
            print(f"{run_dir} already finished ({done} steps); nothing to do")
            return None
        (run_dir / layout.SUMMARY).unlink()
    if not (run_dir / layout.CHECKPOINT).is_file():
        raise UserError(f"cannot resume: {run_dir} has no checkpoint yet")
    return config


def _new_run_dir(log_dir: Path, run_name: str | None, config: TrainConfig) -> Path:
    if run_name is not None:
        path = log_dir / run_name
        if path.exists():
            raise UserError(
                f"run directory {path} already exists; use --resume {path} or another --run-name"
            )
        return path
    base = f"{config.agent}_{config.env_id}_s{config.seed}"
    path, n = log_dir / base, 1
    while path.exists():
        n += 1
        path = log_dir / f"{base}_{n}"
    return path


def agents_command() -> None:
    """List the agent presets shipped in agents/."""
    presets = list_presets()
    width = max(map(len, presets), default=0)
    for name, description in presets.items():
        print(f"{name:<{width}}  {description}")


def _load(spec: str) -> Callable[..., None]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _commands(wanted: str | None) -> dict[str, Callable[..., None]]:
    commands: dict[str, Callable[..., None]] = {
        "train": train_command,
        "agents": agents_command,
    }
    for name, spec in EXTERNAL_COMMANDS.items():
        if wanted is None or wanted == name:
            try:
                commands[name] = _load(spec)
            except (ImportError, AttributeError):
                continue  # an optional part that is not installed
    return dict(sorted(commands.items()))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    wanted = args[0] if args and not args[0].startswith("-") else None
    try:
        tyro.extras.subcommand_cli_from_dict(_commands(wanted), prog="vadam-rl", args=args)
    except (UserError, ConfigError) as err:
        print(f"vadam-rl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except _training_errors() as err:
        print(f"vadam-rl: {err}", file=sys.stderr)
        raise SystemExit(130 if type(err).__name__ == "Interrupted" else 1) from None


def _training_errors() -> tuple[type[Exception], ...]:
    from vadam_rl.train import Interrupted, NonFiniteError

    return (Interrupted, NonFiniteError)


if __name__ == "__main__":
    main()
