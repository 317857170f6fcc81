"""``vadam-rl train`` and ``vadam-rl import-sb3``: one run, or several seeds as one population.

Bad input ends in one line on stderr and exit code 2 before anything is written.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import tyro

from vadam_rl import run_dir as layout
from vadam_rl.commands.options import option
from vadam_rl.config import TrainConfig, apply_overrides, load_config_file, load_preset
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.training import saves as population_saves

if TYPE_CHECKING:
    from vadam_rl.sb3.load import ImportedPolicy

# What needs torch is imported inside the functions that run a command: torch takes seconds
# to load, and `vadam-rl agents`, `--help` and a rejected command should not wait for it.


DEFAULT_AGENT = "ddpg-vadam"
UNPICKLING_NOTE = (
    "vadam-rl: note: loading {path} unpickles the Python objects it holds, which can run code: "
    "--weights-only reads only its tensors"
)


@dataclass
class TrainArgs:
    """Train a DDPG or TD3 agent from a preset (see `vadam-rl agents`)."""

    agent: Annotated[str | None, option("PRESET", DEFAULT_AGENT)] = None
    """Preset name from agents/ (ddpg-vadam, ddpg-adam, ddpg-adam-plain, ...)."""
    env: Annotated[str | None, option("ENV_ID", "the preset's, HalfCheetah-v5")] = None
    """Gymnasium env id with a Box action space."""
    seed: Annotated[int | None, option("N", "the preset's, 0")] = None
    """Random seed."""
    seeds: Annotated[str | None, option("LIST", "one seed")] = None
    """Train these seeds as one population in this process, a run dir each: 0-4, 0,2,7 or
    3 (a list of one)."""
    num_seeds: Annotated[int | None, option("N", "one seed")] = None
    """Train seeds 0, 1, ..., N-1 as one population (--num-seeds 5 is --seeds 0-4)."""
    total_steps: Annotated[int | None, option("N", "the preset's")] = None
    """Environment steps to train for."""
    log_dir: Annotated[Path | None, option("DIR", "runs")] = None
    """Folder that receives the run directory."""
    run_name: Annotated[str | None, option("NAME", "AGENT_ENV_sSEED, made unique")] = None
    """Name of the run directory."""
    set: Annotated[
        list[str], tyro.conf.UseAppendAction, option("KEY=VALUE", "none; repeatable")
    ] = field(default_factory=list)
    """Override a config field, e.g. --set actor.lr=3e-4."""
    device: Annotated[
        Literal["auto", "cpu", "cuda"] | None, option("DEVICE", "the preset's, auto")
    ] = None
    """auto (CUDA if present), cpu or cuda."""
    resume: Annotated[list[Path] | None, option("RUN_DIR", "a new run")] = None
    """Continue this interrupted run (several: a population); only steps and device change."""
    threads: Annotated[int | None, option("N", "OMP_NUM_THREADS if set, else 1")] = None
    """CPU threads for torch (1 was fastest at DDPG's sizes and fair to other work)."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class ImportArgs(TrainArgs):
    """Start a run from a Stable-Baselines3 DDPG/TD3 MLP policy (e.g. to fine-tune it with
    Vadam exploration). Network sizes come from the zip; the rest from the preset."""

    model: Annotated[tyro.conf.Positional[Path], option("MODEL_ZIP")] = Path("model.zip")
    """The SB3 zip to start from (loading it unpickles code: only open trusted files)."""
    weights_only: bool = False
    """Read only the zip's tensors (no unpickling); zips from other tools then need --env."""


def run_train(args: TrainArgs) -> None:
    """One run, or K seeds of one preset as one population (``--seeds 0-4``, ``--resume`` of
    several run directories): the same training path."""
    from vadam_rl.training.run import train_population

    threads = thread_count(args.threads)  # (checked before anything is written)
    if args.resume is not None:
        refuse_what_a_resume_ignores(args)
    planned = _plan(args)
    if planned is None:
        return
    configs, run_dirs, initial_policy = planned
    _check_before_announcing(configs)
    if args.resume is None:
        _start_again(run_dirs)
    if len(run_dirs) == 1:
        print(f"run directory: {run_dirs[0]}")
        print(f"watch it:      tensorboard --logdir {run_dirs[0].parent}")
    else:
        print(f"{len(run_dirs)} runs in one process:")
        for run_dir in run_dirs:
            print(f"  {run_dir}")
        print(f"watch them:    tensorboard --logdir {run_dirs[0].parent}")
    announce_compile(configs[0])
    use_threads(threads)
    summaries = train_population(
        configs,
        run_dirs,
        resume=args.resume is not None,
        progress_bar=args.progress,
        initial_policy=initial_policy,
    )
    if len(summaries) == 1:
        [summary], [run_dir] = summaries, run_dirs
        print(
            f"finished {summary['total_steps']} steps in {summary['wall_time_s']:.0f} s "
            f"({summary['steps_per_s']:.0f} steps/s); final eval return "
            f"{summary['final_eval_return']:.1f}"
        )
        if (run_dir / layout.MODEL_ZIP).is_file():
            print(f"SB3 model:     {run_dir / layout.MODEL_ZIP}")
        return
    steps = sum(summary["total_steps"] for summary in summaries)
    wall = max(summary["wall_time_s"] for summary in summaries)
    rate = steps / max(wall, 1e-9)
    print(f"finished {len(summaries)} runs: {steps} steps in {wall:.0f} s ({rate:.0f} steps/s)")
    for run_dir, summary in zip(run_dirs, summaries, strict=True):
        print(f"  {run_dir}: final eval return {summary['final_eval_return']:.1f}")


def _check_before_announcing(configs: list[TrainConfig]) -> None:
    """A bad env or a run too big for memory fails here, before the run is announced
    (``build_runs`` checks memory again for callers of the library)."""
    import numpy as np

    from vadam_rl.device import resolve_device
    from vadam_rl.training.build import check_memory

    env = make_env(configs[0].env_id)
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        act_dim = int(np.prod(env.action_space.shape))
    finally:
        env.close()
    device = resolve_device(configs[0].device)
    check_memory(configs[0], obs_dim, act_dim, device, agents=len(configs))


def _plan(args: TrainArgs) -> tuple[list[TrainConfig], list[Path], dict | None] | None:
    """The runs to train: their configs, run directories and (import-sb3) initial policy;
    None when every run to resume has finished."""
    if args.resume is not None:
        if not args.resume:
            raise UserError("--resume needs a run directory")
        if args.seeds is not None or args.num_seeds is not None:
            raise UserError("--seeds and --resume do not go together (the runs have theirs)")
        resumed = [_resume_config(d, args.total_steps, args.device) for d in args.resume]
        configs = [config for config in resumed if config is not None]
        if not configs:
            return None
        if len(configs) < len(resumed):
            raise UserError("some of these runs are finished and some not: resume them one by one")
        return configs, list(args.resume), None
    seeds: list[int | None] = [args.seed]
    several = args.seeds is not None or args.num_seeds is not None
    if several:
        if isinstance(args, ImportArgs):
            raise UserError("import-sb3 starts one run; --seeds is not supported there")
        if args.seed is not None:
            raise UserError("give one of --seed, --seeds and --num-seeds, not several")
        seeds = list(seed_values(args.seeds, args.num_seeds))
    imported = _read_import(args) if isinstance(args, ImportArgs) else None
    # The env's overrides of the preset apply to an imported policy's env too.
    env = imported.env_id if imported is not None and args.env is None else args.env
    configs, run_dirs, initial_policy = [], [], None
    for seed in seeds:
        config = load_preset(DEFAULT_AGENT if args.agent is None else args.agent, env)
        if imported is not None:
            initial_policy = _apply_import(imported, config, args.env)
        with_options(config, args, seed)
        name = args.run_name
        if several and name is not None:
            name = f"{name}_s{seed}"
        configs.append(config)
        run_dirs.append(_new_run_dir(args.log_dir or Path("runs"), name, config))
    return configs, run_dirs, initial_policy


def seed_values(seeds: str | None, num_seeds: int | None, default: int = 1) -> list[int]:
    """The seeds that ``--seeds LIST`` or ``--num-seeds N`` name (``train`` and ``compare``
    alike); neither: 0, ..., ``default``-1."""
    if seeds is not None and num_seeds is not None:
        raise UserError("give either --seeds LIST or --num-seeds N, not both")
    if seeds is not None:
        return parse_seeds(seeds)
    count = default if num_seeds is None else num_seeds
    if not 1 <= count <= MAX_SEEDS:
        raise UserError(f"--num-seeds must be in [1, {MAX_SEEDS}], got {count}")
    return list(range(count))


MAX_SEEDS = 10_000
"""More seeds than anyone trains in one command: a typo, refused before a list is built."""


def parse_seeds(spec: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,7' and '0-2,9' likewise; duplicates are refused."""
    seeds: list[int] = []
    try:
        for part in spec.split(","):
            low, dash, high = part.strip().partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if last < first:
                raise ValueError
            if len(seeds) + last - first >= MAX_SEEDS:
                raise UserError(f"--seeds {spec!r} names more than {MAX_SEEDS} seeds")
            seeds += range(first, last + 1)
    except ValueError:
        raise UserError(
            f"--seeds {spec!r}: expected seeds like 0-4, 0,2,7 or 3 (--num-seeds N counts them)"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {spec!r} names a seed twice")
    return seeds


def _read_import(args: ImportArgs) -> ImportedPolicy:
    from vadam_rl.sb3.load import import_sb3, missing_env_message

    if not args.weights_only:
        print(UNPICKLING_NOTE.format(path=args.model), file=sys.stderr)
    imported = import_sb3(args.model, weights_only=args.weights_only)
    if args.env is None and imported.env_id is None:
        raise UserError(missing_env_message(args.model, imported.refused_env_id))
    return imported


def with_options(config: TrainConfig, args: TrainArgs, seed: int | None) -> TrainConfig:
    """``config`` (a preset) with the seed, --total-steps, --device and --set applied and
    checked, optimizers included."""
    from vadam_rl.agent.optimizers import check_optimizers

    if seed is not None:
        config.seed = seed
    if args.total_steps is not None:
        config.total_steps = args.total_steps
    if args.device is not None:
        config.device = args.device
    apply_overrides(config, list(args.set))
    check_optimizers(config)
    check_learning_happens(config, args.set)
    return config


def check_learning_happens(config: TrainConfig, overrides: list[str]) -> None:
    """A budget that ends before ``learning_starts`` trains nothing, which is refused unless
    ``--set learning_starts=N`` says it is meant (SB3's ``learn`` runs such a budget
    silently; a preset's learning_starts, 10,000 in rl-zoo's, is easy to forget)."""
    if config.total_steps > config.learning_starts:
        return
    if any(override.partition("=")[0].strip() == "learning_starts" for override in overrides):
        return
    raise UserError(
        f"total_steps {config.total_steps} ends before learning starts (learning_starts "
        f"{config.learning_starts}): the run would learn nothing; train for more steps, or "
        f"set learning_starts (--set learning_starts={config.learning_starts} runs it anyway)"
    )


def refuse_what_a_resume_ignores(args: TrainArgs) -> None:
    """A resumed run follows its config.yaml: options that would change it are an error, not
    silently dropped (only --total-steps, --device, --threads and --progress apply)."""
    given = {
        "--log-dir": args.log_dir,
        "--agent": args.agent,
        "--env": args.env,
        "--seed": args.seed,
        "--run-name": args.run_name,
        "--set": args.set or None,
    }
    if isinstance(args, ImportArgs):
        raise UserError("import-sb3 starts a new run; it does not go with --resume")
    ignored = [flag for flag, value in given.items() if value is not None]
    if ignored:
        raise UserError(
            f"--resume continues a run as its config.yaml says; {', '.join(ignored)} cannot "
            "change it (only --total-steps and --device can): start a new run instead"
        )


def thread_count(requested: int | None) -> int:
    """The CPU threads a run uses: ``--threads``, else OMP_NUM_THREADS, else 1.

    One thread, because DDPG's matmuls at batch 100 are too small for a second thread to pay
    much, and OpenMP threads that spin-wait for each other stall when another process holds
    a core: on a 2-core machine beside one busy process, 2 threads trained at 27% of their
    idle speed and 1 thread at 95% (docs/performance.md).
    """
    if requested is not None:
        if requested < 1:
            raise UserError(f"--threads must be >= 1, got {requested}")
        return requested
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    return int(from_env) if from_env.isdigit() and int(from_env) > 0 else 1


def use_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    more = "" if threads > 1 else " (--threads N for more)"
    print(f"threads:       {threads}{more}")


def announce_compile(config: TrainConfig) -> None:
    """Say so where the update will be compiled (its first compiled call pauses the run), or
    where it falls back to autograd (slower)."""
    from vadam_rl.device import resolve_device
    from vadam_rl.fast.compiled import compile_wanted
    from vadam_rl.fast.select import why_autograd

    reason = why_autograd(config)
    graph_steppers = ("adam", "vadam")  # the optimizers with a graph mode
    names = {config.actor.optimizer.name, config.critic.optimizer.name}
    if reason is not None:
        print(f"update:        autograd ({reason}: no hand-written, compiled or graphed update)")
    elif not compile_wanted(config, resolve_device(config.device)):
        pass
    elif not names <= set(graph_steppers):
        print(
            f"update:        eager ({', '.join(sorted(names - set(graph_steppers)))} cannot step "
            "inside a compiled graph; Adam and Vadam can)"
        )
    else:
        print(
            "update:        compiled (torch.compile, once, at the second update: 15-30 s; "
            "--set compile=false runs it eagerly)"
        )


def _apply_import(imported: ImportedPolicy, config: TrainConfig, env: str | None) -> dict:
    imported.apply_to(config)
    if env is not None:
        config.env_id = env
    for note in imported.notes:
        print(f"note: {note}")
    return imported.policy_file(algorithm=config.algorithm)


def _resume_config(
    run_dir: Path, total_steps: int | None, device: str | None
) -> TrainConfig | None:

    config_path = run_dir / layout.CONFIG
    if not run_dir.is_dir():
        raise UserError(f"cannot resume: {run_dir} is not a directory")
    if not config_path.is_file():
        raise UserError(f"cannot resume: {run_dir} has no {layout.CONFIG} (not a run directory)")
    config = load_config_file(config_path)
    population_saves.settle(run_dir)  # a population save that a kill interrupted
    if total_steps is not None:
        config.total_steps = total_steps
    if device is not None:
        config.device = device  # type: ignore[assignment]
    if layout.is_finished(run_dir):
        done = json.loads((run_dir / layout.SUMMARY).read_text())["total_steps"]
        if config.total_steps <= done:
            print(f"{run_dir} already finished ({done} steps); nothing to do")
            return None
    if not (run_dir / layout.CHECKPOINT).is_file():
        raise UserError(
            f"cannot resume: {run_dir} has no checkpoint yet (it stopped before its first); "
            "start it again with the command that created it"
        )
    return config


def _new_run_dir(log_dir: Path, run_name: str | None, config: TrainConfig) -> Path:
    if run_name is not None:
        if Path(run_name).name != run_name or run_name in ("", ".", ".."):
            raise UserError(f"--run-name {run_name!r} must be a plain folder name (no / or ..)")
        path = log_dir / run_name
        if path.exists() and not _restartable(path):
            raise UserError(
                f"run directory {path} already exists; use --resume {path} or another --run-name"
            )
        return path
    base = layout.run_name(config.agent, config.env_id, config.seed)
    path, n = log_dir / base, 0
    while path.exists() and not _restartable(path, quietly=True):
        n += 1  # (the second run of a name is NAME_1)
        path = log_dir / f"{base}_{n}"
    return path


def _restartable(path: Path, quietly: bool = False) -> bool:
    """A run stopped before its first checkpoint starts again under its name: true for one
    (``_start_again`` then clears it); with a name the user chose, a run that cannot be
    cleared (another process trains it, or it holds someone's files) is an error."""
    if not path.is_dir():
        return False
    population_saves.settle(path)  # (a first population save that a kill interrupted)
    if not layout.is_unstarted(path):
        return False
    if quietly:
        return not layout.locked_elsewhere(path) and not layout.foreign_files(path)
    if layout.locked_elsewhere(path) or layout.foreign_files(path):
        layout.clear_unstarted_run(path)  # (raises the UserError that says why not)
    return True


def _start_again(run_dirs: list[Path]) -> None:
    """Clear the chosen run directories that a stop left before their first checkpoint."""
    for run_dir in run_dirs:
        if run_dir.exists():
            print(f"note: {run_dir} stopped before its first checkpoint; starting it again")
            layout.clear_unstarted_run(run_dir)


PARENT_ENV = "VADAM_RL_PARENT_PID"
"""Set by ``vadam-rl compare`` for its runs: the pid they must not outlive."""


def stop_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM (checkpoint, exit 130) when its parent dies,
    even by SIGKILL: a run of a killed compare would otherwise train on, unseen, and hold
    its run directory (Linux only; elsewhere nothing changes)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before we asked
        print(f"vadam-rl: the process that started this run ({parent}) is gone", file=sys.stderr)
        raise SystemExit(130)
