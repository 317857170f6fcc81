"""Checkpoints: everything an exact resume needs, written atomically, one per run directory,
each holding one agent's state whatever K (a population's run resumes alone too).

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
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from vadam_rl import run_dir as layout
from vadam_rl.agent.stacking import select_agent, stack_agents
from vadam_rl.errors import NonFiniteError, UserError
from vadam_rl.training import saves as population_saves
from vadam_rl.training.build import Run, Runs
from vadam_rl.training.records import read_evaluations

CHECKPOINT_FORMAT = 1


def save_checkpoint(
    runs: Runs, run: Run, path: Path | None = None, extra: dict | None = None
) -> None:
    """Atomically write everything ``run``'s exact resume needs, in the run directory's format
    (one agent's state, whatever K), to RUN_DIR/checkpoint.pt or ``path``."""
    k = run.index
    state = {
        **(extra or {}),
        "format": CHECKPOINT_FORMAT,
        "progress": {
            "step": runs.progress.step,
            "updates": runs.progress.updates,
            "wall_time_s": runs.progress.wall_time_s,
            "best_return": run.best_return,
        },
        "agent": runs.agent.agent_state_dict(k),
        "buffer": runs.buffer.agent_state_dict(k),
        "exploration": select_agent(runs.exploration.state_dict(), k),
        "collector": runs.collector.agent_state_dict(k),
        "generator": run.generator.get_state(),
        "generator_device": runs.device.type,
        "torch_rng": torch.get_rng_state(),
    }
    layout.atomic_torch_save(state, path or run.run_dir / layout.CHECKPOINT)


def load_checkpoints(runs: Runs) -> None:
    """Restore every run from its run directory's checkpoint (UserError if one is missing,
    corrupt, from another step than the others, or does not fit)."""
    _check_same_step([run.run_dir for run in runs.runs])
    states = [_read_checkpoint(runs, run) for run in runs.runs]
    for run, state in zip(runs.runs, states, strict=True):
        _check_weights(state.get("agent"), run.run_dir / layout.CHECKPOINT)
    progress = []
    for run, state in zip(runs.runs, states, strict=True):
        with _loading(run.run_dir / layout.CHECKPOINT):
            runs.buffer.load_agent_state_dict(run.index, state["buffer"])
            runs.collector.load_agent_state_dict(run.index, state["collector"])
            run.generator.set_state(state["generator"].to("cpu"))
            progress.append(_checked_progress(state["progress"]))
    where = runs.runs[0].run_dir / layout.CHECKPOINT if runs.single else None
    with _loading(where):
        runs.agent.load_state_dict(stack_agents([s["agent"] for s in states], "agent"))
        explorations = [s["exploration"] for s in states]
        stacked = stack_agents(explorations, "exploration", per_agent_scalars=True)
        runs.exploration.load_state_dict(stacked)
        torch.set_rng_state(states[0]["torch_rng"].to("cpu"))
    runs.progress.step, runs.progress.updates = progress[0]["step"], progress[0]["updates"]
    runs.progress.wall_time_s = progress[0]["wall_time_s"]
    for run, saved in zip(runs.runs, progress, strict=True):
        run.best_return = saved["best_return"]
        run.evaluations = [
            row for row in read_evaluations(run.run_dir) if row["step"] <= runs.progress.step
        ]
    runs.collector.restart_episodes()
    for run in runs.runs:
        layout.remove_temp_files(run.run_dir)  # only now: a refused resume changes nothing


@contextlib.contextmanager
def _loading(path: Path | None) -> Iterator[None]:
    """A checkpoint's entries that do not fit, as one UserError naming ``path`` (None: the
    population's checkpoints together)."""
    try:
        yield
    except KeyError as err:
        raise UserError(f"checkpoint {path} has no entry {err}; it cannot be resumed") from None
    except (RuntimeError, ValueError, TypeError, AttributeError) as err:
        if path is None:
            raise UserError(
                f"these checkpoints cannot be trained as one population: {err}"
            ) from None
        raise UserError(
            f"checkpoint {path} does not match the run's config.yaml or is damaged: {err}"
        ) from None


def _read_checkpoint(runs: Runs, run: Run) -> dict:
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
    if saved_device != runs.device.type:
        # CPU and CUDA random generators have different states: no exact continuation.
        raise UserError(
            f"{run.run_dir} was trained on {saved_device}; resume it with --device {saved_device}"
        )
    return state


def _check_weights(agent: object, path: Path) -> None:
    """The networks' weights are floating point and finite: integer weights would be cast on
    loading without a word, and non-finite ones would stop the resumed run at its first
    update, after it had written."""
    if not isinstance(agent, dict):
        return  # (what is missing is reported when it loads)
    for network, weights in agent.items():
        if network.endswith("optimizer") or not isinstance(weights, dict):
            continue
        for name, tensor in weights.items():
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                found = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise UserError(
                    f"checkpoint {path} is damaged: {network} weight {name} is {found}, "
                    "not floating point; it cannot be resumed"
                )
            if not torch.isfinite(tensor).all():
                raise UserError(
                    f"checkpoint {path} holds non-finite {network} weights ({name}); it "
                    "cannot be resumed: start the run again, or from an earlier copy"
                )


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


def _checked_progress(saved: dict) -> dict:
    """The checkpoint's progress entry with types and ranges checked (a step below 0 would
    retrain silently; one beyond 2**53 breaks TensorBoard's writer)."""
    out = {"step": int(saved["step"]), "updates": int(saved["updates"])}
    out |= {"wall_time_s": float(saved["wall_time_s"]), "best_return": float(saved["best_return"])}
    if not 0 <= out["step"] < 2**53 or not 0 <= out["updates"] < 2**53:
        raise ValueError(f"progress step {out['step']} / updates {out['updates']} out of range")
    return out


def check_finite_weights(runs: Runs) -> None:
    """One NonFiniteError naming every run whose weights are not finite (its run directory
    where K > 1)."""
    errors = []
    for name, module in (("actor", runs.agent.actor), ("critic", runs.agent.critic)):
        for pname, p in module.named_parameters():
            bad = ~torch.isfinite(p).reshape(len(runs.runs), -1).all(dim=1)
            for k in bad.nonzero()[:, 0].tolist():
                errors.append((runs.runs[k], f"non-finite {name} weight {pname}"))
    if not errors:
        return
    step = runs.progress.step
    if runs.single:
        raise NonFiniteError(f"{errors[0][1]} at step {step}")
    labels = list(dict.fromkeys(str(run.run_dir) for run, _ in errors))
    raise NonFiniteError(
        "; ".join(f"{what} at step {step} in {run.run_dir}" for run, what in errors), runs=labels
    )


def save_together(runs: Runs) -> None:
    """Every run's checkpoint at the current step, committed only when all are written (one
    atomic rename for a single run)."""
    check_finite_weights(runs)  # before any write: the last good checkpoints stay as they are
    if runs.single:
        save_checkpoint(runs, runs.runs[0])
        return
    save_id = uuid.uuid4().hex
    members = [run.run_dir.absolute() for run in runs.runs]
    pending = [run.run_dir / layout.PENDING_CHECKPOINT for run in runs.runs]
    try:
        for run, path, member in zip(runs.runs, pending, members, strict=True):
            tag = population_saves.tag(member, members, save_id)
            save_checkpoint(runs, run, path, extra={population_saves.TAG: tag})
    except BaseException:
        for path in pending:
            with contextlib.suppress(OSError):  # (a broken directory must not stop the rest)
                path.unlink(missing_ok=True)
        raise
    for run, path in zip(runs.runs, pending, strict=True):
        os.replace(path, run.run_dir / layout.CHECKPOINT)
