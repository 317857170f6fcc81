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
      model.zip              the final mean policy as a genuine Stable-Baselines3 DDPG (TD3) zip
      summary.json           written once, when the run has finished (see SUMMARY_KEYS)
      error.log              the traceback of an unexpected error that stopped the run
      .lock                  held (flock) by the process that trains the run

Policy files hold only tensors and plain values, loadable with ``torch.load(weights_only=True)``:
``{"actor": state_dict, "critic": state_dict, "actor_target": ..., "critic_target": ...,
"step": int}``; rebuild the networks from ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vadam_rl.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

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
LOCK = ".lock"

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
    """``AGENT_ENV``: the start of a run directory's default name, always one folder inside
    the log dir whatever the config's strings hold (``name_part``): a namespaced env id
    ``ns/Env-v0`` gives ``ns-Env-v0``, ``module:Env-v0`` gives ``module-Env-v0``."""
    return f"{name_part(agent)}_{name_part(env_id)}"


_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._+=-]")


def name_part(text: str) -> str:
    """``text`` as part of a folder name: every character but letters, digits and ``._+=-``
    becomes ``-`` (``/`` would nest folders or leave the log dir, ``:`` reads as host:path
    to rsync and scp), and a leading dot goes (no ``..``, no hidden folders)."""
    return _UNSAFE_IN_NAMES.sub("-", text).lstrip(".") or "-"


def run_name(agent: str, env_id: str, seed: int | str) -> str:
    """``AGENT_ENV_sSEED``: a run directory's default name."""
    return f"{run_prefix(agent, env_id)}_s{seed}"


_HELD: dict[Path, int] = {}  # run dir (resolved) -> fd of its lock, held by this process


class RunLocks:
    """Holds run directories' locks (``RUN_DIR/.lock``, ``flock``) until the block ends.

    One process trains a run at a time: a second ``train --resume`` of it, or a compare
    rerun next to runs a killed compare left behind, is refused instead of writing into the
    same files. The OS drops the lock when the process dies, SIGKILL included.
    """

    def __init__(self) -> None:
        self._keys: list[Path] = []

    def __enter__(self) -> RunLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        for key in self._keys:
            os.close(_HELD.pop(key))
        self._keys.clear()

    def hold(self, run_dir: Path) -> None:
        """Lock ``run_dir`` (it must exist) for this process, or raise UserError."""
        key = Path(run_dir).resolve()
        if fcntl is None or key in _HELD or not key.is_dir():
            return  # (a missing directory is reported by whoever needs its files)
        fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd, fcntl.LOCK_EX, attempts=LOCK_ATTEMPTS):
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise UserError(
                f"{run_dir} is being trained by another process"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + "; wait for it to end, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _HELD[key] = fd
        self._keys.append(key)


LOCK_ATTEMPTS = 20  # 50 ms apart: another process's look (locked_elsewhere) is not a holder


def _try_lock(fd: int, mode: int, attempts: int = 1) -> bool:
    """Whether ``fd`` got the lock (True too where the filesystem has no locks)."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.05)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            return True  # e.g. some network filesystems: train unlocked rather than not at all
    return False


def held_here(run_dir: Path) -> bool:
    """True while this process holds ``run_dir``'s lock."""
    return Path(run_dir).resolve() in _HELD


def locked_elsewhere(run_dir: Path) -> bool:
    """True while another process trains ``run_dir`` (holds its lock)."""
    path = Path(run_dir).resolve() / LOCK
    if fcntl is None or path.parent in _HELD or not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return not _try_lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)  # (also drops the shared lock taken to look)


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
    import torch  # (here and in atomic_torch_save: the commands that never touch a
    # checkpoint should not wait seconds for torch to load)

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
    with _atomic_file(Path(path)) as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temp file + rename (no half-written checkpoints)."""
    import torch

    with _atomic_file(Path(path)) as f:
        torch.save(obj, f)


def open_for_writing(fd: int) -> BinaryIO:
    """The file object every atomic write goes through (tests wrap it to fill the disk)."""
    return os.fdopen(fd, "wb")


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A temp file next to ``path``, renamed over it once written and synced; on any error
    the temp file goes and ``path`` is untouched. A full disk is an ``OSError(ENOSPC)``
    naming ``path``, however the writer reported it (torch.save says RuntimeError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open_for_writing(fd) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        full = is_disk_full(err)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what it was raised from) is a full disk or an exhausted quota."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


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
            if path.is_file() and _is_temp_file(path.name):  # (never a user's own .x.tmp)
                path.unlink(missing_ok=True)


RUN_ARTEFACTS = (
    CONFIG, EVALUATIONS, POLICIES, "events.out.tfevents.", ERROR_LOG, LOCK,
)  # fmt: skip
"""What a run writes before its first checkpoint (name prefixes)."""


def is_unstarted(run_dir: Path) -> bool:
    """A run directory stopped or killed before its first checkpoint: nothing to resume."""
    # (a stop between creating the folder and writing config.yaml leaves only the lock)
    only_lock = all(p.name == LOCK or _is_temp_file(p.name) for p in run_dir.iterdir())
    return (
        ((run_dir / CONFIG).is_file() or only_lock)
        and not (run_dir / CHECKPOINT).exists()
        and not (run_dir / PENDING_CHECKPOINT).exists()
        and not (run_dir / SUMMARY).exists()
    )


def foreign_files(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that no run writes (our own temp files aside)."""
    names = [p.name for p in run_dir.iterdir() if not p.name.startswith(RUN_ARTEFACTS)]
    return sorted(name for name in names if not _is_temp_file(name))


def clear_unstarted_run(run_dir: Path) -> None:
    """Remove a run directory killed before its first checkpoint (nothing to resume from),
    so that it starts again under its name.

    Refuses (UserError) when another process trains it, or when the folder holds anything a
    run does not write, so a wrong path never deletes someone's files.
    """
    if locked_elsewhere(run_dir):  # (a killed compare's run, still training)
        raise UserError(f"{run_dir} is being trained by another process; stop it and rerun")
    if foreign := foreign_files(run_dir):
        raise UserError(
            f"{run_dir} has no checkpoint to resume and holds files a run does not write "
            f"({', '.join(foreign[:3])}); move it away and rerun"
        )
    shutil.rmtree(run_dir)


_TEMP_FILE = re.compile(
    r"\.(config\.yaml|evaluations\.csv|checkpoint(\.pending)?\.pt|model\.zip|summary\.json"
    r"|error\.log|best\.pt|last\.pt|step_\d+\.pt)\.[a-z0-9_]+\.tmp"
)


def _is_temp_file(name: str) -> bool:
    """A temp file that ``atomic_write_*`` (mkstemp's ``.NAME.XXXXXXXX.tmp``) left, killed
    while writing one of a run's files."""
    return _TEMP_FILE.fullmatch(name) is not None
