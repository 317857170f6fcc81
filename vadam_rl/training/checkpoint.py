"""Checkpoints: everything an exact resume needs, written atomically, one per run directory.

A single run replaces RUN_DIR/checkpoint.pt in one atomic rename. A population's K
checkpoints cannot be replaced in one atomic step: killed while writing them one after
another, it would leave some runs at the new step and some at the old one, which no longer
resume together. So ``save_together`` writes every agent's new checkpoint next to its current
one (``checkpoint.pending.pt``, itself written atomically and tagged with the save) and
renames them over the old ones only once all K are on disk; ``vadam_rl.training.saves.settle``
completes or drops a save that a kill interrupted. While a save runs, each run directory
holds two checkpoints (replay buffer included): plan disk space for it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from vadam_rl import run_dir as layout
from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.networks import mean_state
from vadam_rl.errors import NonFiniteError, UserError
from vadam_rl.training import saves as population_saves
from vadam_rl.training.build import Run
from vadam_rl.training.records import read_evaluations

CHECKPOINT_FORMAT = 1


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
        run.generator.set_state(state["generator"].to("cpu"))
        torch.set_rng_state(state["torch_rng"].to("cpu"))
        progress = _checked_progress(state["progress"])
    except KeyError as err:
        raise UserError(f"checkpoint {path} has no entry {err}; it cannot be resumed") from None
    except (RuntimeError, ValueError, TypeError, AttributeError) as err:
        raise UserError(
            f"checkpoint {path} does not match the run's config.yaml or is damaged: {err}"
        ) from None
    run.progress.step, run.progress.updates = progress["step"], progress["updates"]
    run.progress.wall_time_s = progress["wall_time_s"]
    run.progress.best_return = progress["best_return"]
    run.progress.evaluations = [
        row for row in read_evaluations(run.run_dir) if row["step"] <= run.progress.step
    ]
    layout.remove_temp_files(run.run_dir)  # only now: a refused resume changes nothing


def _checked_progress(saved: dict) -> dict:
    """The checkpoint's progress entry with types and ranges checked (a step below 0 would
    retrain silently; one beyond 2**53 breaks TensorBoard's writer)."""
    out = {"step": int(saved["step"]), "updates": int(saved["updates"])}
    out |= {"wall_time_s": float(saved["wall_time_s"]), "best_return": float(saved["best_return"])}
    if not 0 <= out["step"] < 2**53 or not 0 <= out["updates"] < 2**53:
        raise ValueError(f"progress step {out['step']} / updates {out['updates']} out of range")
    return out


def load_initial_policy(agent: DDPG, policy: dict) -> None:
    """Start from given weights; optimizer state (and so Vadam's posterior) starts fresh."""
    try:
        for name in ("actor", "critic", "actor_target", "critic_target"):
            module = getattr(agent, name)
            # A NoisyNet actor starts its noise scales at their init: the file holds means.
            missing = set(module.state_dict()) - set(mean_state(module))
            result = module.load_state_dict(policy[name], strict=not missing)
            if set(result.missing_keys) - missing or result.unexpected_keys:
                raise RuntimeError(
                    f"{name}: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
                )
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


def save_together(runs: Sequence[Run]) -> None:
    """Every run's checkpoint at its current step, committed only when all are written."""
    check_all_finite(runs)  # before any write: the last good checkpoints stay as they are
    save_id = uuid.uuid4().hex
    members = [run.run_dir.absolute() for run in runs]
    pending = [run.run_dir / layout.PENDING_CHECKPOINT for run in runs]
    try:
        for run, path, member in zip(runs, pending, members, strict=True):
            tag = population_saves.tag(member, members, save_id)
            save_checkpoint(run, path, extra={population_saves.TAG: tag})
    except BaseException:
        for path in pending:
            with contextlib.suppress(OSError):  # (a broken directory must not stop the rest)
                path.unlink(missing_ok=True)
        raise
    for run, path in zip(runs, pending, strict=True):
        os.replace(path, run.run_dir / layout.CHECKPOINT)


def check_all_finite(runs: Sequence[Run]) -> None:
    """One NonFiniteError naming every run whose weights are not finite."""
    errors: list[NonFiniteError] = []
    for run in runs:
        try:
            check_finite_weights(run.agent, run.progress.step, str(run.run_dir))
        except NonFiniteError as err:
            errors.append(err)
    if errors:
        raise NonFiniteError(
            "; ".join(map(str, errors)), runs=[r for err in errors for r in err.runs]
        )
