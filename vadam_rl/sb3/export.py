"""The Stable-Baselines3 bridge: export runs as genuine SB3 DDPG or TD3 zips, load and import
SB3 zips.

Export builds a real ``stable_baselines3.DDPG("MlpPolicy", env, policy_kwargs=dict(net_arch=...))``
(``TD3`` for a TD3 run, with both critics),
copies our weights into it and saves it with SB3's own ``model.save`` (plain Adam optimizer
state, nothing that needs vadam-rl to unpickle). The zip carries the **mean policy only**: the
Vadam posterior (the optimizer state) stays in ``RUN_DIR/checkpoint.pt``. The actor and its
target are copied exactly; the critic and its target only when they have SB3's layout
(``critic.action_layer == 0``); a DDPG-paper critic (action joining at a hidden layer) cannot be
represented in SB3, so the zip then keeps SB3's freshly initialised critic and a warning says so.
Observations are not normalised by vadam-rl; a run that normalised them would need SB3's
VecNormalize statistics next to the zip, so any such config must be refused here.

Module mapping (SB3 ``policy.pth`` key -> vadam-rl): see ``vadam_rl.sb3.load``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
import yaml
from torch import Tensor

from vadam_rl.agent.networks import Critic, mean_actor
from vadam_rl.agent.stacking import stack_modules
from vadam_rl.config import ConfigError, TrainConfig, load_config_file
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.run_dir import (
    BEST_POLICY,
    CONFIG,
    LAST_POLICY,
    MODEL_ZIP,
    POLICIES,
    atomic_write_bytes,
)
from vadam_rl.sb3.load import (
    METADATA_KEY,
    ImportedPolicy,
    LoadedPolicy,
    import_sb3,
    load_checked,
    load_sb3,
    sb3_critic_state,
)
from vadam_rl.version import __version__

__all__ = [
    "ImportedPolicy",
    "LoadedPolicy",
    "export_policy",
    "export_sb3",
    "import_sb3",
    "load_sb3",
    "write_zoo_layout",
]

logger = logging.getLogger(__name__)

POLICY_KEYS = ("actor", "critic", "actor_target", "critic_target")
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


# --------------------------------------------------------------------------------------------
# Reading a run directory
# --------------------------------------------------------------------------------------------


def read_run_config(run_dir: Path) -> TrainConfig:
    """The run's resolved ``config.yaml``, or a UserError if ``run_dir`` is not a run."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        return load_config_file(path)
    except ConfigError as err:
        raise UserError(str(err)) from None


def policy_file(run_dir: Path, checkpoint: str = "last") -> Path:
    """The file in ``RUN_DIR/policies`` that ``checkpoint`` names.

    ``best``: best.pt (the best evaluation so far). ``last``: the most recent policy, whichever
    of last.pt (latest evaluation) and the highest step_N.pt (checkpoints, end of run) holds the
    higher step. A number N: step_N.pt.
    """
    folder = Path(run_dir) / POLICIES
    snapshots = {
        int(m.group(1)): p for p in folder.glob("step_*.pt") if (m := _STEP_FILE.match(p.name))
    }
    path: Path | None
    if checkpoint == "best":
        path = folder / BEST_POLICY
    elif checkpoint == "last":
        path = _most_recent(folder / LAST_POLICY, snapshots)
    elif checkpoint.isdigit():
        path = snapshots.get(int(checkpoint))
    else:
        raise UserError(f"checkpoint must be best, last or a step number, got {checkpoint!r}")
    if path is None or not path.is_file():
        named = [
            n for n, f in (("best", BEST_POLICY), ("last", LAST_POLICY)) if (folder / f).is_file()
        ]
        available = ", ".join(named + [str(step) for step in sorted(snapshots)]) or "none yet"
        raise UserError(
            f"{run_dir} has no {checkpoint!r} policy in {POLICIES}/; available: {available}"
        )
    return path


def _most_recent(last_file: Path, snapshots: dict[int, Path]) -> Path | None:
    newest = snapshots[max(snapshots)] if snapshots else None
    if not last_file.is_file():
        return newest
    if newest is None or int(read_policy_file(last_file).get("step", -1)) > max(snapshots):
        return last_file
    return newest


def read_policy_file(path: Path) -> dict[str, Any]:
    """A ``policies/*.pt`` file (tensors only, loaded with ``weights_only=True``)."""
    try:
        policy = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise UserError(f"cannot read policy file {path}: {type(err).__name__}") from None
    missing = [key for key in POLICY_KEYS if not isinstance(policy, dict) or key not in policy]
    if missing:
        raise UserError(f"{path} is not a vadam-rl policy file (missing {', '.join(missing)})")
    for key in POLICY_KEYS:
        weights = policy[key]
        if not isinstance(weights, dict) or not all(
            isinstance(w, torch.Tensor) and w.is_floating_point() for w in weights.values()
        ):
            raise UserError(f"{path} is damaged: its {key} is not a set of float weights")
    if "step" in policy and (
        isinstance(policy["step"], bool) or not isinstance(policy["step"], int)
    ):
        raise UserError(f"{path} is damaged: its step is {policy['step']!r}, not an integer")
    return policy


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_sb3(run_dir: Path, output: Path | None = None, checkpoint: str = "last") -> Path:
    """Write a run's policy as an SB3 DDPG (or TD3) zip; returns the path written.

    ``checkpoint``: ``best``, ``last`` or a step number (see ``policy_file``). ``output``
    defaults to ``RUN_DIR/model.zip`` for ``last`` (the training loop writes the same file at
    the end of a run) and to ``RUN_DIR/model_best.zip`` / ``model_step_N.zip`` otherwise. All
    checks happen before anything is written, and the zip is written through temp + rename.
    """
    run_dir = Path(run_dir)
    if output is not None:
        _check_zip_name(output)
    config = read_run_config(run_dir)
    source = policy_file(run_dir, checkpoint)
    policy = read_policy_file(source)
    if output is None:
        name = {"last": MODEL_ZIP, "best": "model_best.zip"}.get(checkpoint)
        output = run_dir / (name or f"model_step_{int(checkpoint)}.zip")
    return export_policy(
        *(policy[key] for key in POLICY_KEYS),
        config,
        output,
        step=int(policy["step"]) if "step" in policy else None,
        source=str(source),
    )


def export_policy(
    actor_sd: dict[str, Tensor],
    critic_sd: dict[str, Tensor],
    actor_target_sd: dict[str, Tensor],
    critic_target_sd: dict[str, Tensor],
    config: TrainConfig,
    output: Path,
    *,
    step: int | None = None,
    source: str = "policy",
) -> Path:
    """Save these mean-policy weights as a genuine SB3 DDPG zip at ``output`` (atomically); a
    TD3 run's (``config.algorithm``) as an SB3 TD3 zip with both critics.

    The state dicts are those of our ``Actor`` / ``Critic`` built from ``config``; a mismatch is
    a UserError naming the tensor (``source`` says where the weights came from). The caller's
    torch RNG state is left untouched, so calling this at the end of training changes nothing.
    """
    output = _check_zip_name(output)
    if getattr(config, "normalize_observations", False):  # no such option yet; see docstring
        raise UserError("exporting runs with normalised observations is not supported")
    check_sb3_can_hold(config)
    weights = {
        "actor": actor_sd,
        "critic": critic_sd,
        "actor_target": actor_target_sd,
        "critic_target": critic_target_sd,
    }
    # Building networks draws from torch's RNG: fork it so the caller's streams are unchanged.
    with torch.random.fork_rng(devices=[]), contextlib.closing(make_env(config.env_id)) as env:
        _check_weights(weights, config, env, source)
        model = _sb3_model(config, env)
        if config.algorithm == "td3":
            weights["critic"] = sb3_critic_state(weights["critic"])
            weights["critic_target"] = sb3_critic_state(weights["critic_target"])
        critic_copied = _copy_weights(model.policy, weights, config.critic.action_layer, source)
        if step is not None:
            model.num_timesteps = step
        metadata = {
            "exported_by": f"vadam-rl {__version__}",
            "algorithm": config.algorithm,
            "env_id": config.env_id,
            "step": step,
            "source": Path(source).name,
            "actor_optimizer": config.actor.optimizer.name,
            "exploration": config.exploration.kind,
            "critic_copied": critic_copied,
            "contents": "mean policy only; the Vadam posterior stays in checkpoint.pt",
        }
        setattr(model, METADATA_KEY, metadata)  # saved by SB3 as plain JSON in "data"
        buffer = io.BytesIO()
        model.save(buffer)
    atomic_write_bytes(output, buffer.getvalue())
    return output


def check_sb3_can_hold(config: TrainConfig) -> None:
    """UserError for networks SB3's DDPG MlpPolicy cannot represent (rather than a zip that
    would act differently): LayerNorm layers."""
    norms = [net for net in ("actor", "critic") if getattr(config, net).layer_norm]
    if norms:
        raise UserError(
            f"SB3's DDPG MlpPolicy has no LayerNorm layers, which this run's {' and '.join(norms)} "
            f"({', '.join(n + '.layer_norm' for n in norms)}) has: no SB3 zip; export the policy "
            "with --onnx instead"
        )


def _check_zip_name(output: Path) -> Path:
    if Path(output).suffix != ".zip":
        raise UserError(f"SB3 models are .zip files; got output {output}")
    return Path(output)


def _check_weights(
    weights: dict[str, dict[str, Tensor]], config: TrainConfig, env: gym.Env, source: str
) -> None:
    """UserError unless every state dict fits the networks ``config`` builds for ``env``."""
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = mean_actor(obs_dim, act_dim, config.actor)
    critic: torch.nn.Module = Critic(
        obs_dim, act_dim, config.critic.hidden_sizes, config.critic.action_layer
    )
    if config.algorithm == "td3":  # twin critics: one Critic with tensors (2, ...)
        critic = stack_modules([critic, critic])
    for key, state in weights.items():
        load_checked(actor if key.startswith("actor") else critic, state, key, source)


def _sb3_model(config: TrainConfig, env: gym.Env) -> Any:
    """SB3's own DDPG or TD3 with our widths and hyperparameters (Adam with one learning
    rate: the actor's)."""
    from stable_baselines3 import DDPG, TD3

    if config.algorithm == "td3":
        td3 = {
            "policy_delay": config.td3.policy_delay,
            "target_policy_noise": config.td3.target_policy_noise,
            "target_noise_clip": config.td3.target_noise_clip,
        }
        return TD3("MlpPolicy", env, **_sb3_settings(config), **td3)
    return DDPG("MlpPolicy", env, **_sb3_settings(config))


def _sb3_settings(config: TrainConfig) -> dict[str, Any]:
    return dict(
        learning_rate=config.actor.optimizer.lr,
        buffer_size=config.buffer_size,
        learning_starts=config.learning_starts,
        batch_size=config.batch_size,
        tau=config.tau,
        gamma=config.gamma,
        train_freq=config.train_freq,
        gradient_steps=config.gradient_steps,
        policy_kwargs={"net_arch": sb3_net_arch(config)},
        device="cpu",
    )


def _copy_weights(
    policy: Any, weights: dict[str, dict[str, Tensor]], action_layer: int, source: str
) -> bool:
    """Copy actor (+target) always and critic (+target) if SB3 can hold it; True if it could."""
    policy.actor.load_state_dict(weights["actor"])
    policy.actor_target.load_state_dict(weights["actor_target"])
    if action_layer == 0:
        policy.critic.load_state_dict(weights["critic"])
        policy.critic_target.load_state_dict(weights["critic_target"])
        return True
    logger.warning(
        "%s: the critic takes the action at hidden layer %d, a layout SB3 cannot represent; "
        "the exported zip keeps SB3's freshly initialised critic (the actor, which predict() "
        "uses, is exact)",
        source,
        action_layer,
    )
    return False


def sb3_net_arch(config: TrainConfig) -> list[int] | dict[str, list[int]]:
    """SB3's ``net_arch``: one list when actor and critic widths agree, else ``pi``/``qf``."""
    actor, critic = list(config.actor.hidden_sizes), list(config.critic.hidden_sizes)
    return actor if actor == critic else {"pi": actor, "qf": critic}


def write_zoo_layout(model_zip: Path, config: TrainConfig, log_folder: Path) -> Path:
    """Lay an exported zip out as rl-baselines3-zoo does, so that its ``enjoy.py`` plays it.

    Writes ``LOG_FOLDER/ALGO/ENV_k/ENV.zip`` plus ``ENV_k/ENV/config.yml`` (hyperparameters,
    ``normalize: false``) and ``ENV_k/ENV/args.yml`` (env id, seed), with ALGO the run's
    algorithm (ddpg or td3) and ``k`` the next free experiment id; returns
    ``LOG_FOLDER/ALGO/ENV_k``. Play it with
    ``python -m rl_zoo3.enjoy --algo ALGO --env ENV -f LOG_FOLDER --exp-id k``.
    """
    env_name = config.env_id.replace("/", "-")  # the zoo's folder name for namespaced ids
    algo_dir = Path(log_folder) / config.algorithm
    algo_dir.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(env_name)}_(\d+)$")
    ids = [int(m.group(1)) for p in algo_dir.iterdir() if (m := pattern.match(p.name))]
    exp_dir = algo_dir / f"{env_name}_{max(ids, default=0) + 1}"
    net_arch = sb3_net_arch(config)
    hyperparams = {
        "n_timesteps": config.total_steps,
        "policy": "MlpPolicy",
        "policy_kwargs": f"dict(net_arch={net_arch})",
        "learning_rate": config.actor.optimizer.lr,
        "buffer_size": config.buffer_size,
        "learning_starts": config.learning_starts,
        "batch_size": config.batch_size,
        "tau": config.tau,
        "gamma": config.gamma,
        "train_freq": config.train_freq,
        "gradient_steps": config.gradient_steps,
        "normalize": False,  # vadam-rl never normalises observations: no vecnormalize.pkl
    }
    if config.algorithm == "td3":
        hyperparams["policy_delay"] = config.td3.policy_delay
        hyperparams["target_policy_noise"] = config.td3.target_policy_noise
        hyperparams["target_noise_clip"] = config.td3.target_noise_clip
    args = {"algo": config.algorithm, "env": config.env_id, "env_kwargs": None, "seed": config.seed}
    staging = Path(tempfile.mkdtemp(dir=algo_dir, prefix=f".{env_name}."))
    try:  # build the experiment folder aside, then rename it into place in one step
        shutil.copyfile(model_zip, staging / f"{env_name}.zip")
        (staging / env_name).mkdir()
        (staging / env_name / "config.yml").write_text(yaml.safe_dump(hyperparams))
        (staging / env_name / "args.yml").write_text(yaml.safe_dump(args))
        staging.rename(exp_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return exp_dir
