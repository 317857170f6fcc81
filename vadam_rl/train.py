"""The training loop: collect -> store -> sample -> update critic and actor -> targets -> log.

``train(config, run_dir)`` runs one DDPG agent to ``config.total_steps`` environment steps and
leaves a complete run directory (see ``run_dir``). It can be stopped at any point (Ctrl-C,
SIGTERM, SIGKILL) and continued with ``train(config, run_dir, resume=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import signal
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vadam_rl import compiled, population_saves
from vadam_rl import run_dir as layout
from vadam_rl.buffer import ReplayBuffer
from vadam_rl.collector import RolloutCollector, make_vector_env
from vadam_rl.config import ConfigError, TrainConfig, load_config_file, save_config, validate
from vadam_rl.ddpg import DDPG
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.evaluation import evaluate
from vadam_rl.exploration import make_exploration
from vadam_rl.logger import RunLogger
from vadam_rl.optim.base import VariationalOptimizer

CHECKPOINT_FORMAT = 1


class NonFiniteError(RuntimeError):
    """A loss or weight became NaN/inf; the last good checkpoint is kept.

    ``runs``: in a population, the labels (run directories) of the agents that went
    non-finite, so the message can say how the others continue.
    """

    def __init__(self, message: str, runs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.runs = tuple(runs)


class Interrupted(Exception):
    """Training stopped by a signal after writing a checkpoint."""


class Crashed(RuntimeError):
    """An unexpected error stopped training; its traceback is in RUN_DIR/error.log."""


ERROR_LOG = layout.ERROR_LOG


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


@dataclass
class Progress:
    """Counters that a checkpoint must carry besides the components' own state."""

    step: int = 0
    updates: int = 0
    wall_time_s: float = 0.0
    best_return: float = -math.inf
    evaluations: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Run:
    """Everything one training run holds, built by ``build_run``."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    generator: torch.Generator
    agent: DDPG
    buffer: ReplayBuffer
    collector: RolloutCollector
    eval_env: gym.Env
    progress: Progress


def build_run(config: TrainConfig, run_dir: Path) -> Run:
    """Seed, then construct envs, agent, buffer, exploration and collector."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # network initialisation
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    envs = make_vector_env(config.env_id, config.num_envs, config.async_envs)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    agent = DDPG(obs_dim, act_dim, config, device, generator=generator)
    buffer = ReplayBuffer(config.buffer_size, obs_dim, act_dim, device, generator=generator)
    exploration = make_exploration(
        config.exploration, agent.actor, agent.actor_optimizer, generator
    )
    collector = RolloutCollector(envs, buffer, exploration, config.seed, device, generator)
    return Run(
        config,
        run_dir,
        device,
        generator,
        agent,
        buffer,
        collector,
        make_env(config.env_id),
        Progress(),
    )


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def save_checkpoint(run: Run, path: Path | None = None, extra: dict | None = None) -> None:
    """Atomically write everything needed for an exact resume (refuses non-finite weights),
    to RUN_DIR/checkpoint.pt or ``path``, with ``extra`` records added."""
    check_finite_weights(run.agent, run.progress.step)
    state = {
        **(extra or {}),
        "format": CHECKPOINT_FORMAT,
        "progress": {
            "step": run.progress.step,
            "updates": run.progress.updates,
            "wall_time_s": run.progress.wall_time_s,
            "best_return": run.progress.best_return,
        },
        "agent": run.agent.state_dict(),
        "buffer": run.buffer.state_dict(),
        "exploration": run.collector.exploration.state_dict(),
        "collector": run.collector.state_dict(),
        "generator": run.generator.get_state(),
        "generator_device": run.device.type,
        "torch_rng": torch.get_rng_state(),
    }
    layout.atomic_torch_save(state, path or run.run_dir / layout.CHECKPOINT)


def load_checkpoint(run: Run) -> None:
    """Restore ``run`` from its run directory's checkpoint (UserError if missing/corrupt)."""
    population_saves.settle(run.run_dir)  # a population save that a kill interrupted
    path = run.run_dir / layout.CHECKPOINT
    if not path.is_file():
        raise UserError(f"no checkpoint in {run.run_dir} (expected {layout.CHECKPOINT})")
    try:
        # On the CPU first: load_state_dict moves tensors to the parameters' device, except
        # optimizer step counters, which must stay on the CPU (else Adam syncs on each step).
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise UserError(f"cannot read checkpoint {path}: corrupt or incomplete ({err})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a vadam-rl checkpoint (format {CHECKPOINT_FORMAT})")
    saved_device = state.get("generator_device", "cpu")
    if saved_device != run.device.type:
        # CPU and CUDA random generators have different states: no exact continuation.
        raise UserError(
            f"{run.run_dir} was trained on {saved_device}; resume it with --device {saved_device}"
        )
    try:
        run.agent.load_state_dict(state["agent"])
        run.buffer.load_state_dict(state["buffer"])
        run.collector.exploration.load_state_dict(state["exploration"])
        run.collector.load_state_dict(state["collector"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"checkpoint {path} does not match the run's config.yaml: {err}") from None
    run.generator.set_state(state["generator"].to("cpu"))
    torch.set_rng_state(state["torch_rng"].to("cpu"))
    saved = state["progress"]
    run.progress.step = int(saved["step"])
    run.progress.updates = int(saved["updates"])
    run.progress.wall_time_s = float(saved["wall_time_s"])
    run.progress.best_return = float(saved["best_return"])
    run.progress.evaluations = [
        row for row in read_evaluations(run.run_dir) if row["step"] <= run.progress.step
    ]
    layout.remove_temp_files(run.run_dir)  # only now: a refused resume changes nothing


def load_initial_policy(agent: DDPG, policy: dict) -> None:
    """Start from given weights; optimizer state (and so Vadam's posterior) starts fresh."""
    try:
        for name in ("actor", "critic", "actor_target", "critic_target"):
            getattr(agent, name).load_state_dict(policy[name])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"the initial policy does not fit the configured networks: {err}") from None


def check_finite_weights(agent: DDPG, step: int, run_label: str | None = None) -> None:
    for name, module in (("actor", agent.actor), ("critic", agent.critic)):
        for pname, p in module.named_parameters():
            if not torch.isfinite(p).all():
                where = f" in {run_label}" if run_label else ""
                raise NonFiniteError(
                    f"non-finite {name} weight {pname} at step {step}{where}",
                    runs=[run_label] if run_label else [],
                )


# ------------------------------------------------------------------------------------------
# Evaluation records
# ------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------


class Metrics:
    """Per-update tensor metrics, summed and checked (one host sync) only at log time.

    Metrics are 0-d for one agent, (K,) for a population; ``labels`` name the K agents in
    the non-finite message. Each update's metrics are stacked into one row of a
    preallocated (updates, metrics, ...) tensor: one operation per update (this runs once
    per env step, where every dispatched operation costs microseconds); the sums and the
    search for the first non-finite value wait until someone reads them.
    """

    def __init__(self, labels: list[str] | None = None) -> None:
        self.names: list[str] = []
        self.rows: Tensor | None = None
        self.steps: list[int] = []  # the env step of each row
        self.labels = labels

    @property
    def count(self) -> int:
        return len(self.steps)

    def add(self, metrics: dict[str, Tensor], step: int) -> None:
        names = list(metrics)
        if names != self.names:
            if self.names:  # the stacked rows would be summed under the wrong names
                raise ValueError(f"the update's metrics changed from {self.names} to {names}")
            self.names = names
        values = list(metrics.values())
        if self.rows is None or self.count == len(self.rows):
            self._grow(values[0])
        assert self.rows is not None
        torch.stack(values, out=self.rows[self.count])
        self.steps.append(step)

    def _grow(self, like: Tensor) -> None:
        """Room for twice as many rows (1024 to start), keeping the filled ones."""
        capacity = 2 * len(self.rows) if self.rows is not None else 1024
        rows = like.new_empty((capacity, len(self.names), *like.shape))
        if self.rows is not None:
            rows[: self.count] = self.rows[: self.count]
        self.rows = rows

    def check_finite(self) -> None:
        if not self.count:
            return
        assert self.rows is not None
        bad = self.rows[: self.count].isfinite().logical_not_()  # (updates, metrics, ...)
        if not bool(bad.any()):
            return
        agents_bad = bad.reshape(self.count, len(self.names), -1).any(dim=1).any(dim=0)
        runs = [self.labels[k] for k in agents_bad.nonzero()[:, 0].tolist()] if self.labels else []
        for i, name in enumerate(self.names):
            bad_by_agent = bad[:, i].reshape(self.count, -1)  # (updates, agents)
            if bool(bad_by_agent.any()):
                agent = int(bad_by_agent.any(dim=0).nonzero()[0])
                row = int(bad_by_agent[:, agent].nonzero()[0])
                where = f" in {self.labels[agent]}" if self.labels else ""
                raise NonFiniteError(
                    f"{name} became non-finite at step {self.steps[row]}{where}", runs=runs
                )

    def pop_means(self) -> dict[str, float]:
        count = self.count
        return {name: float(total) / count for name, total in self._reset().items()}

    def pop_agent_means(self, num_agents: int) -> list[dict[str, float]]:
        """A population's means, one dict per agent (one host sync)."""
        count = self.count
        sums = {name: total.tolist() for name, total in self._reset().items()}
        return [{name: v[k] / count for name, v in sums.items()} for k in range(num_agents)]

    def _reset(self) -> dict[str, Tensor]:
        if not self.count:
            return {}
        assert self.rows is not None
        sums = self.rows[: self.count].sum(dim=0).cpu()  # the one host sync
        self.steps.clear()
        return dict(zip(self.names, sums, strict=True))


def crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in (before, after]."""
    return every > 0 and after // every > before // every


@contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """SIGINT/SIGTERM set a flag the loop checks after each step (checkpoint, then exit)."""
    flag = {"signal": 0}

    def handler(signum: int, _frame: object) -> None:
        flag["signal"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    initial_policy: dict | None = None,
) -> dict:
    """Train to ``config.total_steps``; returns the summary written to summary.json.

    ``initial_policy`` (a policy file's dict: actor, critic and their targets) replaces the
    freshly initialised networks, e.g. weights imported from Stable-Baselines3. The run
    directory is locked while it trains (``layout.RunLocks``).
    """
    with layout.RunLocks() as locks:
        return _train(config, Path(run_dir), locks, resume, progress_bar, initial_policy)


def _train(
    config: TrainConfig,
    run_dir: Path,
    locks: layout.RunLocks,
    resume: bool,
    progress_bar: bool,
    initial_policy: dict | None,
) -> dict:
    validate(config)
    if not resume:
        config = compiled.resolve_auto(config, resolve_device(config.device))
    run = build_run(config, run_dir)
    if initial_policy is not None:
        load_initial_policy(run.agent, initial_policy)
    # Locked after the envs are built (forked env workers would inherit the lock) and
    # before anything is read (a live run may be mid-save).
    if resume:
        locks.hold(run_dir)
        load_checkpoint(run)
        (run_dir / layout.SUMMARY).unlink(missing_ok=True)  # extending a finished run
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        locks.hold(run_dir)
        save_config(config, run_dir / layout.CONFIG)
    logger = RunLogger(run_dir, purge_step=run.progress.step if resume else None)
    if not resume:
        logger.config(config)
    try:
        with stop_on_signals() as stop:
            run_loop(SingleLearner(run, logger), stop, progress_bar)
        return finish(run, logger)
    except NonFiniteError as err:
        raise NonFiniteError(
            f"{err}; training stopped and the last good checkpoint in {run_dir} is kept"
        ) from None
    except Interrupted as err:
        raise Interrupted(f"{err}; continue with: {resume_command([run_dir], config)}") from None
    except Exception as err:
        # One readable line for the user; the traceback goes to a file for the bug report.
        log = run_dir / ERROR_LOG
        layout.atomic_write_text(log, traceback.format_exc())
        raise Crashed(
            f"training stopped by an unexpected {type(err).__name__}: {err}. The last "
            f"checkpoint in {run_dir} is kept (continue with: "
            f"{resume_command([run_dir], config)}); the traceback is in {log}"
        ) from None
    finally:
        logger.close()
        run.collector.envs.close()
        run.eval_env.close()


def resume_command(run_dirs: Sequence[Path], config: TrainConfig) -> str:
    """The shell command that continues these runs as ``config`` says; it names the total
    steps and the device where their config.yaml holds others (a resume with
    ``--total-steps`` or ``--device`` does not rewrite it)."""
    words = ["vadam-rl", "train", "--resume", *map(str, run_dirs)]
    try:
        saved: TrainConfig | None = load_config_file(Path(run_dirs[0]) / layout.CONFIG)
    except ConfigError:
        saved = None
    if saved is None or saved.total_steps != config.total_steps:
        words += ["--total-steps", str(config.total_steps)]
    if saved is None or saved.device != config.device:
        words += ["--device", config.device]
    return shlex.join(words)


class Collector(Protocol):
    at_episode_boundary: bool

    def collect(self, n_steps: int, random_actions: bool = False) -> None: ...


class Learner(Protocol):
    """What the loop drives: one run (``SingleLearner``) or a population of runs."""

    config: TrainConfig
    progress: Progress
    collector: Collector

    def update(self) -> dict[str, Tensor]: ...

    def log(self, metrics: Metrics, fps: float, bar: tqdm) -> None: ...

    def evaluate(self, bar: tqdm) -> None: ...

    def checkpoint(self, snapshot: bool) -> None: ...


class SingleLearner:
    """The loop's view of one run and its logger."""

    def __init__(self, run: Run, logger: RunLogger) -> None:
        self.run, self.logger = run, logger
        self.config, self.progress, self.collector = run.config, run.progress, run.collector

    def update(self) -> dict[str, Tensor]:
        return self.run.agent.update(self.run.buffer.sample(self.config.batch_size))

    def log(self, metrics: Metrics, fps: float, bar: tqdm) -> None:
        log_training(self.run, self.logger, metrics, fps)
        bar.set_postfix(ret=_last_return(self.run), refresh=False)

    def evaluate(self, bar: tqdm) -> None:
        run_evaluation(self.run, self.logger, bar)

    def checkpoint(self, snapshot: bool) -> None:
        save_checkpoint(self.run)
        if snapshot:
            save_policy_snapshot(self.run)


def run_loop(
    learner: Learner,
    stop: dict[str, int],
    progress_bar: bool,
    metrics: Metrics | None = None,
    description: str | None = None,
) -> None:
    """Collect, update, and log / evaluate / checkpoint on schedule, to ``total_steps``."""
    config, prog = learner.config, learner.progress
    metrics = metrics or Metrics()
    started = time.perf_counter()
    session_start_step = prog.step
    wall_before = prog.wall_time_s
    pending_since: int | None = None  # step at which a checkpoint fell due
    bar = tqdm(
        total=config.total_steps,
        initial=prog.step,
        unit="step",
        dynamic_ncols=True,
        disable=not progress_bar,
        mininterval=1.0,
        desc=description,
    )
    while prog.step < config.total_steps:
        before = prog.step
        random_phase = prog.step < config.learning_starts
        learner.collector.collect(1, random_actions=random_phase)
        prog.step += config.num_envs

        if not random_phase and (prog.step // config.num_envs) % config.train_freq == 0:
            for _ in range(config.gradient_steps):
                metrics.add(learner.update(), prog.step)
                prog.updates += 1

        prog.wall_time_s = wall_before + time.perf_counter() - started
        if crossed(before, prog.step, config.log_every):
            metrics.check_finite()
            fps = (prog.step - session_start_step) / max(time.perf_counter() - started, 1e-9)
            learner.log(metrics, fps, bar)
            bar.update(prog.step - bar.n)
        if crossed(before, prog.step, config.eval_every):
            metrics.check_finite()
            learner.evaluate(bar)
        if pending_since is None and crossed(before, prog.step, config.checkpoint_every):
            pending_since = prog.step
        if pending_since is not None and _checkpoint_now(learner, prog.step - pending_since):
            metrics.check_finite()
            learner.checkpoint(snapshot=True)
            pending_since = None
        if stop["signal"]:
            metrics.check_finite()
            learner.checkpoint(snapshot=False)
            raise Interrupted(
                f"stopped by signal {stop['signal']} at step {prog.step}; checkpoint written"
            )
    metrics.check_finite()
    bar.update(prog.step - bar.n)
    bar.close()


def _checkpoint_now(learner: Learner, steps_overdue: int) -> bool:
    """At an episode boundary (an exact resume point), or once waiting for one is hopeless.

    Vector envs whose episodes end at different times (early termination) may never all be
    between episodes at once; after another ``checkpoint_every`` steps the checkpoint is
    written anyway, and a resume from it restarts the unfinished episodes.
    """
    overdue = steps_overdue >= learner.config.checkpoint_every
    return learner.collector.at_episode_boundary or overdue


def _last_return(run: Run) -> str:
    recent = run.collector.recent_returns
    return f"{np.mean(recent):.1f}" if recent else "-"


def log_training(run: Run, logger: RunLogger, metrics: Metrics, fps: float) -> None:
    step, collector = run.progress.step, run.collector
    values: dict[str, float] = {"time/fps": fps, "time/episodes": collector.episodes_finished}
    if collector.recent_returns:
        values["rollout/ep_rew_mean"] = float(np.mean(collector.recent_returns))
        values["rollout/ep_len_mean"] = float(np.mean(collector.recent_lengths))
    if metrics.count:
        for name, value in metrics.pop_means().items():
            values[f"train/{name}"] = value
        values["train/learning_rate"] = run.agent.actor_optimizer.param_groups[0]["lr"]
        values["train/critic_learning_rate"] = run.agent.critic_optimizer.param_groups[0]["lr"]
        values["train/n_updates"] = run.progress.updates
    distance = collector.pop_action_distance()
    if distance is not None:
        values["explore/action_distance"] = float(distance)
    optimizer = run.agent.actor_optimizer
    if isinstance(optimizer, VariationalOptimizer):
        for name, sigma in zip(_actor_param_names(run), optimizer.posterior_std(), strict=True):
            values[f"posterior/sigma_mean/{name}"] = float(sigma.mean())
    logger.scalars(values, step)


def _actor_param_names(run: Run) -> list[str]:
    return [name.removeprefix("mu.") for name, _ in run.agent.actor.named_parameters()]


def run_evaluation(run: Run, logger: RunLogger, bar: tqdm, label: str = "") -> dict[str, float]:
    """Evaluate the mean actor; log, record the row, save the policy (best too)."""
    prog, config = run.progress, run.config
    result = evaluate(
        run.agent.actor, run.eval_env, config.eval_episodes, config.seed + 10_000, run.device
    )
    row = {
        "step": prog.step,
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "mean_ep_length": result.mean_length,
        "episodes": len(result.returns),
        "wall_time_s": prog.wall_time_s,
    }
    prog.evaluations.append(row)
    write_evaluations(run.run_dir, prog.evaluations)
    logger.scalars(
        {"eval/mean_reward": result.mean_return, "eval/mean_ep_length": result.mean_length},
        prog.step,
    )
    optimizer = run.agent.actor_optimizer
    if isinstance(optimizer, VariationalOptimizer):
        for name, sigma in zip(_actor_param_names(run), optimizer.posterior_std(), strict=True):
            logger.histogram(f"posterior/sigma/{name}", sigma, prog.step)
    logger.flush()
    policy = {**run.agent.policy_state(), "step": prog.step}
    layout.atomic_torch_save(policy, run.run_dir / layout.POLICIES / layout.LAST_POLICY)
    if result.mean_return > prog.best_return:
        prog.best_return = result.mean_return
        layout.atomic_torch_save(policy, run.run_dir / layout.POLICIES / layout.BEST_POLICY)
    bar.write(
        f"{label}step {prog.step:>9,}  eval return {result.mean_return:9.1f} "
        f"± {result.std_return:.1f}  (best {prog.best_return:.1f})"
    )
    return row


def save_policy_snapshot(run: Run) -> None:
    policy = {**run.agent.policy_state(), "step": run.progress.step}
    layout.atomic_torch_save(policy, layout.policy_path(run.run_dir, run.progress.step))


def finish(run: Run, logger: RunLogger) -> dict:
    """Final evaluation (if the last one is stale), checkpoint, SB3 export, summary.json."""
    final_evaluation(run, logger)
    save_checkpoint(run)
    return write_final_outputs(run)


def final_evaluation(run: Run, logger: RunLogger) -> None:
    """Evaluate the final policy unless the last evaluation was at this step."""
    prog = run.progress
    if not prog.evaluations or prog.evaluations[-1]["step"] < prog.step:
        run_evaluation(run, logger, tqdm(disable=True))


def write_final_outputs(run: Run) -> dict:
    """After the final checkpoint: the last policy snapshot, model.zip and summary.json."""
    prog = run.progress
    save_policy_snapshot(run)
    export_final_model(run)
    final = prog.evaluations[-1]["mean_return"]
    summary = {
        "finished": True,
        "total_steps": prog.step,
        "wall_time_s": prog.wall_time_s,
        "steps_per_s": prog.step / max(prog.wall_time_s, 1e-9),
        "final_eval_return": final,
        "best_eval_return": prog.best_return,
    }
    layout.atomic_write_text(run.run_dir / layout.SUMMARY, json.dumps(summary, indent=2))
    return summary


def export_final_model(run: Run) -> None:
    """RUN_DIR/model.zip for Stable-Baselines3; a failure is reported, never fatal."""
    try:
        from vadam_rl.sb3_bridge import export_policy

        state = run.agent.policy_state()
        export_policy(
            state["actor"],
            state["critic"],
            state["actor_target"],
            state["critic_target"],
            run.config,
            run.run_dir / layout.MODEL_ZIP,
            step=run.progress.step,
        )
    except Exception as err:  # the run itself succeeded; say why the zip is missing
        warnings.warn(f"could not export {layout.MODEL_ZIP}: {err}", stacklevel=1)
