"""``train_population``: K seeds of one preset trained in one process (``--seeds 0-4``).

Each agent gets an ordinary run directory, written by the single-run code through per-agent
views: config.yaml, TensorBoard events, evaluations.csv, policies,
model.zip, summary.json and a checkpoint in the single-run format. So ``report`` and
``compare`` read a population's runs like any others, and one agent's directory can even be
resumed alone with ``vadam-rl train --resume DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vadam_rl import run_dir as layout
from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.exploration import make_exploration
from vadam_rl.agent.optimizers import check_optimizers
from vadam_rl.agent.population import PopulationDDPG, check_stackable
from vadam_rl.agent.stacking import select_agent, stack_agents
from vadam_rl.config import (
    ConfigError,
    TrainConfig,
    flat_settings,
    save_config,
    settings_differences,
    to_dict,
    validate,
)
from vadam_rl.device import resolve_device
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.fast import compiled
from vadam_rl.fast.host_actor import acting_forward
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators
from vadam_rl.signals import finished_despite, stop_on_signals
from vadam_rl.training import saves as population_saves
from vadam_rl.training.buffer import PopulationBuffer
from vadam_rl.training.build import Progress, Run, check_memory
from vadam_rl.training.checkpoint import load_checkpoint, save_together
from vadam_rl.training.collector import make_vector_env
from vadam_rl.training.logger import RunLogger
from vadam_rl.training.loop import Metrics, run_loop
from vadam_rl.training.outputs import (
    final_evaluation,
    log_training,
    run_evaluation,
    save_policy_snapshot,
    write_final_outputs,
)
from vadam_rl.training.population_collector import PopulationCollector
from vadam_rl.training.run import told_in_one_line

# ------------------------------------------------------------------------------------------
# Per-agent views: what the single-run functions read from a Run, for agent k
# ------------------------------------------------------------------------------------------


class _AgentExploration:
    def __init__(self, population: Population, agent: int) -> None:
        self.population, self.agent = population, agent

    def log_values(self) -> dict[str, Tensor]:
        return select_agent(self.population.collector.exploration.log_values(), self.agent)

    def state_dict(self) -> dict:
        return select_agent(self.population.exploration.state_dict(), self.agent)

    def load_state_dict(self, state: dict) -> None:
        self.population.loaded_exploration[self.agent] = state


class _AgentCollector:
    def __init__(self, population: Population, agent: int) -> None:
        self.population, self.agent = population, agent
        self.exploration = _AgentExploration(population, agent)
        self.action_distance: float | None = None

    @property
    def recent_returns(self) -> Sequence[float]:
        return self.population.collector.recent_returns[self.agent]

    @property
    def recent_lengths(self) -> Sequence[int]:
        return self.population.collector.recent_lengths[self.agent]

    @property
    def episodes_finished(self) -> int:
        return self.population.collector.episodes_finished[self.agent]

    def pop_action_distance(self) -> float | None:
        distance, self.action_distance = self.action_distance, None
        return distance

    def state_dict(self) -> dict:
        return self.population.collector.agent_state_dict(self.agent)

    def load_state_dict(self, state: dict) -> None:
        self.population.collector.load_agent_state_dict(self.agent, state)


class _AgentBuffer:
    def __init__(self, population: Population, agent: int) -> None:
        self.population, self.agent = population, agent

    def state_dict(self) -> dict:
        return self.population.buffer.agent_state_dict(self.agent)

    def load_state_dict(self, state: dict) -> None:
        self.population.buffer.load_agent_state_dict(self.agent, state)


@dataclass
class _AgentMeans:
    """What ``log_training`` reads from ``Metrics`` for one agent."""

    count: int
    means: dict[str, float]

    def pop_means(self) -> dict[str, float]:
        return self.means


# ------------------------------------------------------------------------------------------
# The population
# ------------------------------------------------------------------------------------------


@dataclass
class Population:
    configs: list[TrainConfig]
    device: torch.device
    agent: PopulationDDPG
    buffer: PopulationBuffer
    collector: PopulationCollector
    exploration: object
    views: list[Run]
    progress: Progress = field(default_factory=Progress)
    loaded_exploration: dict[int, dict] = field(default_factory=dict)

    @property
    def config(self) -> TrainConfig:
        return self.configs[0]

    def sync_views(self, agents: bool = True) -> None:
        """Bring the per-agent views up to date: counters, and (``agents``) the weights and
        optimizer states of their single-agent DDPGs."""
        for k, view in enumerate(self.views):
            view.progress.step = self.progress.step
            view.progress.updates = self.progress.updates
            view.progress.wall_time_s = self.progress.wall_time_s
            if agents:
                view.agent.load_state_dict(self.agent.agent_state_dict(k))


def check_same_settings(configs: Sequence[TrainConfig]) -> None:
    """The agents of a population may differ in their seed only."""
    reference = flat_settings(to_dict(configs[0]))
    for config in configs[1:]:
        differing = settings_differences(reference, flat_settings(to_dict(config)), ["seed"])
        if differing:
            raise ConfigError(
                f"a population's runs must share every setting but the seed; they differ in "
                f"{', '.join(differing)}"
            )
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"a population needs distinct seeds, got {seeds}")


def build_population(configs: Sequence[TrainConfig], run_dirs: Sequence[Path]) -> Population:
    """K single agents built exactly as their single runs would be, then stacked."""
    config = configs[0]
    device = resolve_device(config.device)
    singles: list[DDPG] = []
    generators: list[torch.Generator] = []
    envs = make_vector_env(config.env_id, config.num_envs * len(configs), config.async_envs)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    try:
        check_memory(config, obs_dim, act_dim, device, agents=len(configs))
    except UserError:
        envs.close()
        raise
    for agent_config in configs:
        torch.manual_seed(agent_config.seed)  # network initialisation, as in build_run
        generator = torch.Generator(device=device)
        generator.manual_seed(agent_config.seed)
        generators.append(generator)
        singles.append(DDPG(obs_dim, act_dim, agent_config, device, generator=generator))
    streams = AgentGenerators(generators)
    agent = PopulationDDPG(singles, config, streams)
    buffer = PopulationBuffer(config.buffer_size, obs_dim, act_dim, device, streams)
    speed_up(agent, config)
    exploration = make_exploration(
        config.exploration, agent.actor, agent.actor_optimizer, streams, acting_forward
    )
    seeds = [c.seed for c in configs]
    collector = PopulationCollector(envs, buffer, exploration, seeds, device, streams)
    population = Population(list(configs), device, agent, buffer, collector, exploration, [])
    for k, (agent_config, run_dir) in enumerate(zip(configs, run_dirs, strict=True)):
        view = Run(
            agent_config,
            Path(run_dir),
            device,
            generators[k],
            singles[k],
            _AgentBuffer(population, k),  # type: ignore[arg-type]
            _AgentCollector(population, k),  # type: ignore[arg-type]
            make_env(config.env_id),
            Progress(),
        )
        population.views.append(view)
    return population


def load_population(population: Population) -> None:
    """Resume every agent from its run directory's (single-run format) checkpoint."""
    _check_same_step([view.run_dir for view in population.views])
    for view in population.views:
        load_checkpoint(view)
    first = population.views[0].progress
    population.progress.step = first.step
    population.progress.updates = first.updates
    population.progress.wall_time_s = first.wall_time_s
    try:
        population.agent.load_state_dict(
            stack_agents([view.agent.state_dict() for view in population.views], "agent")
        )
        explorations = [population.loaded_exploration[k] for k in range(len(population.views))]
        population.exploration.load_state_dict(stack_agents(explorations, "exploration"))  # type: ignore[attr-defined]
    except (ValueError, RuntimeError) as err:
        raise UserError(f"these checkpoints cannot be trained as one population: {err}") from None
    population.collector.restart_episodes()


def _check_same_step(run_dirs: Sequence[Path]) -> None:
    """Before anything loads: runs from different steps cannot train in lockstep (their
    buffers would not even stack), so say that rather than what the loading trips over."""
    for run_dir in run_dirs:
        population_saves.settle(run_dir)  # a half-done save decides which checkpoint counts
    steps = {layout.checkpoint_step(run_dir) for run_dir in run_dirs} - {None}
    if len(steps) > 1:  # (an unreadable checkpoint is reported when its run loads)
        raise UserError(
            f"the runs stopped at different steps ({', '.join(map(str, sorted(steps)))}); a "
            "population resumes only runs that were trained together: resume them one by one"
        )


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def train_population(
    configs: Sequence[TrainConfig],
    run_dirs: Sequence[Path],
    *,
    resume: bool = False,
    progress_bar: bool = True,
) -> list[dict]:
    """Train ``configs`` (one preset, distinct seeds) together; one summary per run. The
    run directories are locked while they train (``layout.RunLocks``)."""
    if len(configs) != len(run_dirs) or not configs:
        raise ValueError("one run directory per config, at least one")
    with layout.RunLocks() as locks:
        return _train_population(configs, [Path(d) for d in run_dirs], locks, resume, progress_bar)


def _train_population(
    configs: Sequence[TrainConfig],
    run_dirs: list[Path],
    locks: layout.RunLocks,
    resume: bool,
    progress_bar: bool,
) -> list[dict]:
    for config in configs:
        validate(config)
        check_optimizers(config)
    if not resume:
        device = resolve_device(configs[0].device)
        configs = [compiled.resolve_auto(config, device) for config in configs]
    check_same_settings(configs)
    check_stackable(configs[0])
    population = build_population(configs, run_dirs)
    # Locked after the envs are built (forked env workers would inherit the locks), before
    # anything is read (a live run may be mid-save) or written.
    if not resume:
        for run_dir in run_dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
    for run_dir in run_dirs:
        locks.hold(run_dir)
    if resume:
        load_population(population)
        for run_dir in run_dirs:
            (run_dir / layout.SUMMARY).unlink(missing_ok=True)
    else:
        for config, run_dir in zip(configs, run_dirs, strict=True):
            save_config(config, run_dir / layout.CONFIG)
    purge = population.progress.step if resume else None
    loggers: list[RunLogger] = []
    try:
        # (inside the try: opening the events files is the first write a full disk refuses)
        loggers += [RunLogger(run_dir, purge_step=purge) for run_dir in run_dirs]
        if not resume:
            for config, logger in zip(configs, loggers, strict=True):
                logger.config(config)
        with stop_on_signals() as stop:
            labels = [str(view.run_dir) for view in population.views]
            learner = PopulationLearner(population, loggers)
            description = f"{len(population.views)} agents"
            run_loop(learner, stop, progress_bar, Metrics(labels), description)
            summaries = finish_population(population, loggers)
    except Exception as err:
        raise told_in_one_line(err, run_dirs, configs[0]) from None
    finally:
        for logger in loggers:
            logger.close()
        population.collector.envs.close()
        for view in population.views:
            view.eval_env.close()
    finished_despite(stop)
    return summaries


class PopulationLearner:
    """The loop's view of a population: one update for all agents; logging, evaluation and
    checkpoints fan out to the agents' run directories."""

    def __init__(self, population: Population, loggers: list[RunLogger]) -> None:
        self.population, self.loggers = population, loggers
        self.config, self.progress = population.config, population.progress
        self.collector = population.collector

    def update(self) -> dict[str, Tensor]:
        batch = self.population.buffer.sample(self.config.batch_size)
        metrics = self.population.agent.update(batch)
        self.population.collector.exploration.after_update(batch.obs)
        return metrics

    def log(self, metrics: Metrics, fps: float, bar: tqdm) -> None:
        """Each agent's scalars into its own run directory (``log_training``'s tags)."""
        population = self.population
        count = metrics.count
        means = metrics.pop_agent_means(len(population.views)) if count else []
        distances: Tensor | None = population.collector.pop_action_distance()
        distance_values = distances.tolist() if distances is not None else None
        population.sync_views(agents=_logs_posterior(population))
        for k, (view, logger) in enumerate(zip(population.views, self.loggers, strict=True)):
            assert isinstance(view.collector, _AgentCollector)
            view.collector.action_distance = distance_values[k] if distance_values else None
            log_training(view, logger, _AgentMeans(count, means[k] if means else {}), fps)  # type: ignore[arg-type]

    def evaluate(self, bar: tqdm) -> None:
        self.population.sync_views()
        for view, logger in zip(self.population.views, self.loggers, strict=True):
            run_evaluation(view, logger, bar, label=f"seed {view.config.seed}: ")

    def checkpoint(self, snapshot: bool) -> None:
        self.population.sync_views()
        if snapshot:  # before the checkpoints, as in a single run (SingleLearner.checkpoint)
            for view in self.population.views:
                save_policy_snapshot(view)
        save_together(self.population.views)


def finish_population(population: Population, loggers: list[RunLogger]) -> list[dict]:
    """``finish`` for every agent, with the K final checkpoints saved as one."""
    population.sync_views()
    for view, logger in zip(population.views, loggers, strict=True):
        final_evaluation(view, logger)
    save_together(population.views)
    return [write_final_outputs(view) for view in population.views]


def _logs_posterior(population: Population) -> bool:
    """Whether logging reads the actor optimizer's posterior (then the views need weights)."""
    from vadam_rl.optim.base import VariationalOptimizer

    return isinstance(population.agent.actor_optimizer, VariationalOptimizer)
