"""The training loop: collect -> store -> sample -> update critic and actor -> targets -> log.

``run_loop`` drives a ``Trainer`` (one run, or a population of runs) to ``total_steps``:
it collects, updates on schedule, and logs, evaluates and checkpoints when their step comes.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from vadam_rl.config import TrainConfig
from vadam_rl.errors import Interrupted, NonFiniteError
from vadam_rl.signals import StopRequest
from vadam_rl.training.build import Progress


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


class Collector(Protocol):
    at_episode_boundary: bool

    def collect(self, n_steps: int, random_actions: bool = False) -> None: ...


class Trainer(Protocol):
    """What the loop drives: K runs trained together (``training.run.RunsTrainer``; K = 1
    for a single run)."""

    config: TrainConfig
    progress: Progress
    collector: Collector

    def update(self) -> dict[str, Tensor]: ...

    def log(self, metrics: Metrics, fps: float, bar: tqdm) -> None: ...

    def evaluate(self, bar: tqdm) -> None: ...

    def checkpoint(self, snapshot: bool) -> None: ...


def run_loop(
    learner: Trainer,
    stop: StopRequest,
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
        if stop.signal:
            metrics.check_finite()
            learner.checkpoint(snapshot=False)
            bar.close()  # (the stop line then starts on a line of its own)
            raise Interrupted(
                f"stopped by signal {stop.signal} at step {prog.step}; checkpoint written"
            )
    metrics.check_finite()
    bar.update(prog.step - bar.n)
    bar.close()


def _checkpoint_now(learner: Trainer, steps_overdue: int) -> bool:
    """At an episode boundary (an exact resume point), or once waiting for one is hopeless.

    Vector envs whose episodes end at different times (early termination) may never all be
    between episodes at once; after another ``checkpoint_every`` steps the checkpoint is
    written anyway, and a resume from it restarts the unfinished episodes.
    """
    overdue = steps_overdue >= learner.config.checkpoint_every
    return learner.collector.at_episode_boundary or overdue
