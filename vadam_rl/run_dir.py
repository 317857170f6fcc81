"""Layout of one run directory: everything a run writes, in one place.

    RUN_DIR/
      config.yaml            the resolved TrainConfig (preset + overrides), written at start
      events.out.tfevents.*  TensorBoard (SB3 tag names where SB3 has them)
      evaluations.csv        one row per evaluation of the mean actor (see EVAL_COLUMNS)
      checkpoint.pt          latest full, resumable training state (atomic replace)
      checkpoint.pending.pt  a population's next checkpoint until all K are written
      policies/last.pt       mean-policy weights at the latest evaluation
      policies/best.pt       ... at the best evaluation so far
      policies/step_N.pt     ... at each checkpoint (every checkpoint_every steps) and the end
      model.zip              the final mean policy as a genuine Stable-Baselines3 DDPG zip
      summary.json           written once, when the run has finished (see SUMMARY_KEYS)
      error.log              the traceback of an unexpected error that stopped the run

Policy files hold only tensors and plain values, loadable with ``torch.load(weights_only=True)``:
``{"actor": state_dict, "critic": state_dict, "actor_target": ..., "critic_target": ...,
"step": int}``; rebuild the networks from ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.yaml"
EVALUATIONS = "evaluations.csv"
CHECKPOINT = "checkpoint.pt"
PENDING_CHECKPOINT = "checkpoint.pending.pt"  # a population save not yet committed
POLICIES = "policies"
BEST_POLICY = "best.pt"
LAST_POLICY = "last.pt"
MODEL_ZIP = "model.zip"
SUMMARY = "summary.json"
ERROR_LOG = "error.log"  # the traceback of an unexpected error

EVAL_COLUMNS = ("step", "mean_return", "std_return", "mean_ep_length", "episodes", "wall_time_s")
SUMMARY_KEYS = (
    "finished",
    "total_steps",
    "wall_time_s",
    "steps_per_s",
    "final_eval_return",
    "best_eval_return",
)


def run_prefix(agent: str, env_id: str) -> str:
    """``AGENT_ENV``: the start of a run directory's default name. A namespaced env id
    (``ns/Env-v0``) gives ``ns-Env-v0``, so the name stays one folder."""
    return f"{agent}_{env_id.replace('/', '-')}"


def run_name(agent: str, env_id: str, seed: int | str) -> str:
    """``AGENT_ENV_sSEED``: a run directory's default name."""
    return f"{run_prefix(agent, env_id)}_s{seed}"


def policy_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / POLICIES / f"step_{step}.pt"


def is_finished(run_dir: Path) -> bool:
    """True once the run wrote its summary (it reached total_steps)."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


def load_records(path: Path) -> Any:
    """``torch.load`` of a checkpoint with its tensors memory-mapped, so that reading its small
    records (step, tags) does not read the replay buffer. Raises what ``torch.load`` raises."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError):  # no mmap here (filesystem, address-space limits)
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_step(run_dir: Path) -> int | None:
    """The environment step of the run's checkpoint; None without a readable one."""
    try:
        return int(load_records(Path(run_dir) / CHECKPOINT)["progress"]["step"])
    except Exception:  # absent, truncated, foreign: the run itself reports it when it loads
        return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temp file + rename (no half-written checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _apply_umask(path: str) -> None:
    # mkstemp creates 0600 files; give the final file the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(
        path,
        (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH)
        & ~umask,
    )


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_temp_files(run_dir: Path) -> None:
    """Delete what writes killed half-way left: the temp files of ``atomic_write_bytes`` and
    ``atomic_torch_save`` (a checkpoint's can be as large as its replay buffer)."""
    for folder in (Path(run_dir), Path(run_dir) / POLICIES):
        for path in folder.glob(".*.tmp"):
            if path.is_file():
                path.unlink(missing_ok=True)
