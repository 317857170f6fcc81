"""What a run writes besides its checkpoint: TensorBoard scalars, evaluations, policy files,
model.zip and summary.json."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from vadam_rl import run_dir as layout
from vadam_rl.errors import UserError
from vadam_rl.evaluation import evaluate
from vadam_rl.optim.base import VariationalOptimizer
from vadam_rl.posterior_stats import group_floor_precision, layer_sigma_stats
from vadam_rl.training.build import Run, Runs
from vadam_rl.training.logger import RunLogger
from vadam_rl.training.loop import Metrics
from vadam_rl.training.records import write_evaluations


def bar_returns(runs: Runs) -> dict[str, str]:
    """The progress bar's returns (a single run's): the exploring (behaviour) policy's
    training episodes, mean of the last 100, and the mean policy's last evaluation, which is
    what the run reports."""
    recent = runs.collector.recent_returns[0]
    evaluations = runs.runs[0].evaluations
    return {
        "train_return": f"{np.mean(recent):.1f}" if recent else "-",
        "eval_return": f"{evaluations[-1]['mean_return']:.1f}" if evaluations else "-",
    }


def log_training(runs: Runs, loggers: Sequence[RunLogger], metrics: Metrics, fps: float) -> None:
    """Each run's scalars into its own run directory (one host sync for all of them)."""
    step, collector, agent = runs.progress.step, runs.collector, runs.agent
    count = metrics.count
    means = metrics.pop_agent_means(len(runs.runs)) if count else []
    distance = collector.pop_action_distance()
    distances = distance.tolist() if distance is not None else None
    explore = {name: value.tolist() for name, value in collector.exploration.log_values().items()}
    optimizer = agent.actor_optimizer
    sigmas = optimizer.posterior_std() if isinstance(optimizer, VariationalOptimizer) else None
    shapes = _posterior_shapes(optimizer, sigmas) if sigmas is not None else []
    for run, logger in zip(runs.runs, loggers, strict=True):
        k = run.index
        values: dict[str, float] = {
            "time/fps": fps,
            "time/episodes": collector.episodes_finished[k],
        }
        if collector.recent_returns[k]:
            values["rollout/ep_rew_mean"] = float(np.mean(collector.recent_returns[k]))
            values["rollout/ep_len_mean"] = float(np.mean(collector.recent_lengths[k]))
        if count:
            for name, value in means[k].items():
                values[f"train/{name}"] = value
            values["train/learning_rate"] = optimizer.param_groups[0]["lr"]
            values["train/critic_learning_rate"] = agent.critic_optimizer.param_groups[0]["lr"]
            values["train/n_updates"] = runs.progress.updates
        if distances is not None:
            values["explore/action_distance"] = float(distances[k])
        for name, value in explore.items():  # (K,) values; a strategy's shared one is 0-d
            values[name] = float(value[k] if isinstance(value, list) else value)
        if sigmas is not None:
            agent_sigmas = [sigma[k] for sigma in sigmas]
            for name, sigma in zip(_actor_param_names(run), agent_sigmas, strict=True):
                values[f"posterior/sigma_mean/{name}"] = float(sigma.mean())
            values["posterior/at_floor_fraction"] = at_floor_fraction(optimizer, agent_sigmas)
            for name, layer in zip(_actor_param_names(run), shapes, strict=True):
                for stat, per_agent in layer.items():
                    values[f"posterior/{_SHAPE_TAGS[stat]}/{name}"] = per_agent[k]
        logger.scalars(values, step)


# The per-layer statistics of posterior_stats.layer_sigma_stats, as TensorBoard names them.
_SHAPE_TAGS = {
    "p10": "sigma_p10",
    "p50": "sigma_p50",
    "p90": "sigma_p90",
    "p90_over_p10": "sigma_p90_over_p10",
    "at_floor": "at_floor_fraction",
}


def _posterior_shapes(optimizer: VariationalOptimizer, sigmas: list) -> list[dict[str, list]]:
    """Per actor parameter, each ``layer_sigma_stats`` statistic as a list over the K agents
    (one host transfer for all of them)."""
    floors = [group_floor_precision(g) for g in optimizer.param_groups for _ in g["params"]]
    stats = [
        layer_sigma_stats(sigma, floor, agent_dim=True)
        for sigma, floor in zip(sigmas, floors, strict=True)
    ]
    keys = list(_SHAPE_TAGS)
    table = torch.stack([torch.stack([s[key] for key in keys]) for s in stats]).tolist()
    return [dict(zip(keys, rows, strict=True)) for rows in table]


def at_floor_fraction(optimizer: VariationalOptimizer, sigmas: list) -> float:
    """Share of the weights whose posterior precision is at the optimizer's precision floor
    c (Vadam's ``precision_floor``, VOGN's N * ``damping``): the data's part N*s + lambda is
    under 1% of c, so sigma >= 1/sqrt(1.01 c). There the "posterior" is the floor's fixed
    noise, not the data's uncertainty. 0 for an optimizer without a floor."""
    at_floor = total = 0
    groups = [(group_floor_precision(g), g["params"]) for g in optimizer.param_groups]
    flat = iter(sigmas)
    for floor, params in groups:
        for _ in params:
            sigma = next(flat)
            total += sigma.numel()
            if floor > 0:
                at_floor += int((sigma.double().square() * floor >= 1 / 1.01).sum())
    return at_floor / max(total, 1)


def _actor_param_names(run: Run) -> list[str]:
    return [name.removeprefix("mu.") for name, _ in run.actor.named_parameters()]


def run_evaluation(
    runs: Runs, run: Run, logger: RunLogger, bar: tqdm, label: str = ""
) -> dict[str, float]:
    """Evaluate ``run``'s mean actor; log, record the row, save the policy (best too)."""
    prog, config = runs.progress, run.config
    actor = runs.load_actor(run)
    result = evaluate(actor, run.eval_env, config.eval_episodes, config.seed + 10_000, runs.device)
    row = {
        "step": prog.step,
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "mean_ep_length": result.mean_length,
        "episodes": len(result.returns),
        "wall_time_s": prog.wall_time_s,
    }
    run.evaluations.append(row)
    write_evaluations(run.run_dir, run.evaluations)
    logger.scalars(
        {"eval/mean_reward": result.mean_return, "eval/mean_ep_length": result.mean_length},
        prog.step,
    )
    optimizer = runs.agent.actor_optimizer
    if isinstance(optimizer, VariationalOptimizer):
        sigmas = [sigma[run.index] for sigma in optimizer.posterior_std()]
        for name, sigma in zip(_actor_param_names(run), sigmas, strict=True):
            logger.histogram(f"posterior/sigma/{name}", sigma, prog.step)
    logger.flush()
    policy = {**runs.policy_state(run), "step": prog.step}
    layout.atomic_torch_save(policy, run.run_dir / layout.POLICIES / layout.LAST_POLICY)
    if result.mean_return > run.best_return:
        run.best_return = result.mean_return
        layout.atomic_torch_save(policy, run.run_dir / layout.POLICIES / layout.BEST_POLICY)
    bar.write(
        f"{label}step {prog.step:>9,}  eval return {result.mean_return:9.1f} "
        f"± {result.std_return:.1f}  (best {run.best_return:.1f})"
    )
    return row


def save_policy_snapshot(runs: Runs, run: Run) -> None:
    policy = {**runs.policy_state(run), "step": runs.progress.step}
    layout.atomic_torch_save(policy, layout.policy_path(run.run_dir, runs.progress.step))


def final_evaluation(runs: Runs, run: Run, logger: RunLogger) -> None:
    """Evaluate the final policy unless the last evaluation was at this step."""
    if not run.evaluations or run.evaluations[-1]["step"] < runs.progress.step:
        run_evaluation(runs, run, logger, tqdm(disable=True))


def write_final_outputs(runs: Runs, run: Run) -> dict:
    """After the final checkpoint: the last policy snapshot, model.zip and summary.json."""
    prog = runs.progress
    save_policy_snapshot(runs, run)
    export_final_model(runs, run)
    final = run.evaluations[-1]["mean_return"]
    summary = {
        "finished": True,
        "total_steps": prog.step,
        "wall_time_s": prog.wall_time_s,
        "steps_per_s": prog.step / max(prog.wall_time_s, 1e-9),
        "final_eval_return": final,
        "best_eval_return": run.best_return,
    }
    layout.atomic_write_text(run.run_dir / layout.SUMMARY, json.dumps(summary, indent=2))
    return summary


def export_final_model(runs: Runs, run: Run) -> None:
    """RUN_DIR/model.zip for Stable-Baselines3; a failure is reported, never fatal."""
    try:
        from vadam_rl.sb3.export import export_policy

        state = runs.policy_state(run)
        export_policy(
            state["actor"],
            state["critic"],
            state["actor_target"],
            state["critic_target"],
            run.config,
            run.run_dir / layout.MODEL_ZIP,
            step=runs.progress.step,
        )
    except UserError as err:  # a run SB3 cannot hold (LayerNorm): expected, one line
        print(f"{layout.MODEL_ZIP} not written: {err}", file=sys.stderr)
    except Exception as err:  # the run itself succeeded; say why the zip is missing
        warnings.warn(f"could not export {layout.MODEL_ZIP}: {err}", stacklevel=1)
