"""Reading SB3 DDPG/TD3 zips: ``load_sb3`` (to evaluate) and ``import_sb3`` (to train from).

An SB3 zip (``BaseAlgorithm.save``) holds ``data`` (JSON; objects that JSON cannot hold, such as
the spaces and the policy class, are *cloudpickled* into base64 strings), ``policy.pth`` (the
policy's state dict), one ``*.optimizer.pth`` per optimizer and ``pytorch_variables.pth``. The
``.pth`` files are tensors only (SB3 loads them with ``torch.load(weights_only=True)``); the
pickles in ``data`` run code when loaded. ``read_sb3_zip`` reads the JSON as plain JSON and
``policy.pth`` as weights, and unpickles nothing but the two spaces, and those only when asked.

SB3's TD3Policy (DDPG uses it with one critic) names its modules as our networks do:

    SB3 policy.pth key            vadam-rl module / key
    actor.mu.{0,2,4}.*            Actor.mu.{0,2,4}.*  (Linear, ReLU, ..., Linear, Tanh)
    actor_target.mu.*             actor_target (an Actor)
    critic.qf0.{0,2,4}.*          Critic(action_layer=0).qf0.*  (input: cat(obs, action))
    critic.qf1.*                  TD3's second critic (kept for a TD3 run, dropped for DDPG)
    critic_target.qf0.*           critic_target (a Critic)

A TD3 run's twin critics are one stacked ``Critic`` whose tensors have a leading dimension of
2 (``qf0.0.weight``: (2, out, in)): SB3's ``critic.qf0.*`` is index 0 and ``critic.qf1.*``
index 1 (``import_sb3`` and ``sb3_critic_state`` convert).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.config import NetworkConfig, TrainConfig
from vadam_rl.errors import UserError

TD3_POLICY_MODULE = "stable_baselines3.td3.policies"
"""Where DDPG's and TD3's policy classes live (DDPG reuses TD3Policy)."""
METADATA_KEY = "vadam_rl_metadata"
"""Attribute of exported models that SB3 saves in ``data`` as plain JSON (env id, step, ...)."""

_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
    RuntimeError,
    pickle.UnpicklingError,
)


@dataclass
class Sb3Zip:
    """What ``read_sb3_zip`` found in a DDPG/TD3 MLP zip."""

    policy_state: dict[str, Tensor]
    """``policy.pth``: the TD3Policy state dict on the CPU (keys as in the module docstring)."""
    data: dict[str, Any]
    """The ``data`` JSON as plain JSON: pickled entries stay base64 strings, never unpickled."""
    sb3_version: str | None
    observation_space: gym.spaces.Space | None = None
    """Unpickled from ``data`` unless read weights-only (then None)."""
    action_space: gym.spaces.Space | None = None

    @property
    def n_critics(self) -> int:
        return sum(f"critic.qf{i}.0.weight" in self.policy_state for i in range(16))

    @property
    def algorithm(self) -> str:
        """DDPG = TD3 with one critic, no policy delay and no target smoothing (SB3's ddpg.py)."""
        is_ddpg = (
            self.n_critics == 1
            and self.data.get("policy_delay") == 1
            and self.data.get("target_noise_clip") == 0.0
        )
        return "DDPG" if is_ddpg else "TD3"

    @property
    def exporter_metadata(self) -> dict[str, Any]:
        """What ``export_policy`` recorded (env id, step, ...); empty for other SB3 zips."""
        metadata = self.data.get(METADATA_KEY)
        return metadata if isinstance(metadata, dict) else {}


def read_sb3_zip(path: Path, weights_only: bool = False) -> Sb3Zip:
    """Read and check an SB3 DDPG/TD3 zip with an MLP policy; UserError for anything else.

    ``weights_only=True`` executes nothing from the file: ``data`` is parsed as JSON and
    ``policy.pth`` with ``torch.load(weights_only=True)``; the spaces are then unknown.
    ``weights_only=False`` also unpickles the observation and action spaces from ``data``
    (cloudpickle: this runs code stored in the zip, so only do it for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such model file: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise UserError(
                    f"{path} is not a Stable-Baselines3 model (no 'data' and 'policy.pth' inside)"
                )
            _check_sizes(archive, path)
            data = json.loads(archive.read("data").decode())
            policy_bytes = archive.read("policy.pth")
            version = None
            if "_stable_baselines3_version" in names:
                version = archive.read("_stable_baselines3_version").decode().strip()
        state = torch.load(io.BytesIO(policy_bytes), map_location="cpu", weights_only=True)
    except _READ_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read {path} as a Stable-Baselines3 model: {reason}") from None
    if not isinstance(data, dict) or not _is_tensor_dict(state):
        raise UserError(f"{path} is not a Stable-Baselines3 model (unexpected data or policy.pth)")
    contents = Sb3Zip(policy_state=state, data=data, sb3_version=version)
    _check_td3_mlp_policy(contents, path)
    if not weights_only:
        contents.observation_space, contents.action_space = _unpickle_spaces(data, path)
    return contents


def _is_tensor_dict(state: Any) -> bool:
    return isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    )


def _check_td3_mlp_policy(contents: Sb3Zip, path: Path) -> None:
    """Refuse other algorithms, image/custom feature extractors and non-ReLU activations."""
    policy_class = contents.data.get("policy_class")
    module = policy_class.get("__module__") if isinstance(policy_class, dict) else None
    if module != TD3_POLICY_MODULE:
        parts = str(module).split(".")  # stable_baselines3.<algo>.policies names the algorithm
        is_algo = len(parts) == 3 and parts[2] == "policies" and parts[1] != "common"
        kind = f"a {parts[1].upper()} policy" if is_algo else f"a policy from {module}"
        raise UserError(
            f"{path} holds {kind}, not a DDPG/TD3 policy; "
            "vadam-rl reads DDPG and TD3 MlpPolicy models"
        )
    state = contents.policy_state
    if "actor.mu.0.weight" not in state or "critic.qf0.0.weight" not in state:
        raise UserError(f"{path}: policy.pth has no actor.mu / critic.qf0 weights")
    if any(".features_extractor." in key for key in state):
        raise UserError(
            f"{path} uses a feature extractor with weights (CnnPolicy or a custom one); "
            "vadam-rl reads MlpPolicy models with flat observations"
        )
    kwargs = contents.data.get("policy_kwargs")
    if isinstance(kwargs, dict):  # pickled kwargs keep str() of each entry next to the pickle
        activation = str(kwargs.get("activation_fn", "ReLU'>"))
        if not activation.endswith("ReLU'>") or "LeakyReLU" in activation:
            raise UserError(f"{path} uses activation {activation}; vadam-rl's MLPs use ReLU")
        extractor = str(kwargs.get("features_extractor_class", "FlattenExtractor"))
        if "FlattenExtractor" not in extractor:
            raise UserError(f"{path} uses features extractor {extractor}; only MlpPolicy reads")


# What a DDPG/TD3 zip's members can hold (a [400, 300] policy.pth is ~2 MB, its data ~20 KB):
# a member declared larger is refused unread, not decompressed into memory whole.
MEMBER_LIMITS = {"data": 64 << 20, "policy.pth": 1 << 30, "_stable_baselines3_version": 1 << 10}


def _check_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    for name, limit in MEMBER_LIMITS.items():
        if name in archive.NameToInfo and archive.getinfo(name).file_size > limit:
            size = archive.getinfo(name).file_size
            raise UserError(
                f"{path}: its {name} is {size / 2**20:,.0f} MiB, more than a DDPG/TD3 model's "
                f"can be ({limit / 2**20:,.0f} MiB at most); not read"
            )


def _unpickle_spaces(data: dict[str, Any], path: Path) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    from stable_baselines3.common.save_util import json_to_data

    entries = {key: data.get(key) for key in ("observation_space", "action_space")}
    try:
        spaces = json_to_data(json.dumps(entries))
        observation_space, action_space = spaces["observation_space"], spaces["action_space"]
    except Exception as err:  # unpickling can fail in any way (missing modules, old gym, ...)
        raise UserError(
            f"cannot unpickle the spaces stored in {path} ({type(err).__name__}: {err}); "
            "load it weights-only and name the environment instead"
        ) from None
    if not isinstance(observation_space, gym.spaces.Space) or not isinstance(
        action_space, gym.spaces.Space
    ):
        raise UserError(f"{path} stores no gymnasium observation/action spaces")
    return observation_space, action_space


# --------------------------------------------------------------------------------------------
# State-dict mapping
# --------------------------------------------------------------------------------------------


def submodule_state(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix`` (e.g. ``"actor."``), with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def mlp_dims(state: dict[str, Tensor], sequential: str) -> tuple[int, list[int], int]:
    """(in_dim, hidden_sizes, out_dim) of an SB3 ``create_mlp`` Sequential (Linear at 0, 2, ...)."""
    weights = []
    while f"{sequential}.{2 * len(weights)}.weight" in state:
        weights.append(state[f"{sequential}.{2 * len(weights)}.weight"])
    if not weights or any(w.ndim != 2 for w in weights):
        raise UserError(f"no MLP weights under {sequential!r}")
    return (
        int(weights[0].shape[1]),
        [int(w.shape[0]) for w in weights[:-1]],
        int(weights[-1].shape[0]),
    )


def load_checked(module: nn.Module, state: dict[str, Tensor], what: str, source: str) -> None:
    """``module.load_state_dict(state)`` with a one-line UserError naming the first mismatch."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{source}: {what} weights do not fit the network ({detail})")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{source}: {what}.{key} has shape {tuple(state[key].shape)}, the configured "
                f"network needs {tuple(tensor.shape)}"
            )
    module.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# Load (for evaluation) and import (to start a run)
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedPolicy:
    """The deterministic actor of an SB3 DDPG/TD3 zip as our ``Actor``, ready for ``evaluate``.

    Calling it maps obs (batch, obs_dim) float32 to squashed actions (batch, act_dim) in [-1, 1],
    as SB3's ``policy.actor`` does; ``predict`` additionally rescales them to the Box.
    """

    actor: Actor
    algorithm: str
    """DDPG or TD3."""
    observation_space: gym.spaces.Space | None
    """From the zip; None when loaded weights-only (then the env you name supplies them)."""
    action_space: gym.spaces.Space | None
    env_id: str | None
    """Known for zips vadam-rl exported; SB3 itself does not store the env id."""
    metadata: dict[str, Any]
    refused_env_id: str | None = None
    """A recorded ``module:Env`` id not used under weights_only (``recorded_env_id``)."""

    def __call__(self, obs: Tensor) -> Tensor:
        return self.actor(obs)

    @property
    def obs_dim(self) -> int:
        return self.actor.mu[0].in_features

    @property
    def act_dim(self) -> int:
        return self.actor.mu[-2].out_features

    def check_env(self, env: gym.Env, env_id: str) -> None:
        """UserError unless ``env`` fits: same shapes, and the same action bounds when known."""
        obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
        if obs_shape != (self.obs_dim,) or act_shape != (self.act_dim,):
            raise UserError(
                f"the policy expects observations ({self.obs_dim},) and actions "
                f"({self.act_dim},); {env_id} has {obs_shape} and {act_shape}"
            )
        saved = self.action_space
        if isinstance(saved, gym.spaces.Box) and not (
            np.array_equal(saved.low, env.action_space.low)
            and np.array_equal(saved.high, env.action_space.high)
        ):
            raise UserError(
                f"the policy was trained for actions in {saved}, {env_id} has {env.action_space}"
            )


def load_sb3(
    path: Path, device: torch.device | str = "cpu", weights_only: bool = False
) -> LoadedPolicy:
    """Load the actor of an SB3 DDPG or TD3 MlpPolicy zip (ours or anybody's).

    Safety: SB3 zips contain cloudpickled objects, and unpickling them executes code from the
    file. With ``weights_only=False`` only the observation and action spaces are unpickled
    (still: trust the file). ``weights_only=True`` executes nothing: it reads ``policy.pth``
    with ``torch.load(weights_only=True)`` and the ``data`` JSON as text, infers the
    architecture from tensor shapes, and leaves the spaces to the env you name.
    A corrupt, non-zip or non-DDPG/TD3 file raises ``UserError``.
    """
    contents = read_sb3_zip(path, weights_only=weights_only)
    actor_state = submodule_state(contents.policy_state, "actor.")
    obs_dim, hidden_sizes, act_dim = mlp_dims(actor_state, "mu")
    actor = Actor(obs_dim, act_dim, hidden_sizes)
    load_checked(actor, actor_state, "actor", str(path))
    actor.requires_grad_(False)
    env_id, refused_env_id = recorded_env_id(contents, weights_only)
    return LoadedPolicy(
        actor=actor.to(device).eval(),
        algorithm=contents.algorithm,
        observation_space=contents.observation_space,
        action_space=contents.action_space,
        env_id=env_id,
        refused_env_id=refused_env_id,
        metadata={
            "sb3_version": contents.sb3_version,
            "num_timesteps": contents.data.get("num_timesteps"),
            "exported_by": contents.exporter_metadata or None,
        },
    )


@dataclass
class ImportedPolicy:
    """What a run needs to start from an SB3 DDPG/TD3 policy (``vadam-rl import-sb3``)."""

    actor: dict[str, Tensor]
    """State dict of our ``Actor`` (keys ``mu.*``); likewise the three below."""
    critic: dict[str, Tensor]
    """Our ``Critic(action_layer=0)`` (keys ``qf0.*``); for TD3 its first critic, qf0."""
    twin_critics: tuple[dict[str, Tensor], dict[str, Tensor]] | None
    actor_target: dict[str, Tensor]
    critic_target: dict[str, Tensor]
    actor_config: NetworkConfig
    """``hidden_sizes`` from the zip; optimizer fields default (``apply_to`` keeps yours)."""
    critic_config: NetworkConfig
    """``hidden_sizes`` from the zip, ``action_layer=0`` (SB3's input-concat layout)."""
    algorithm: str
    env_id: str | None
    observation_space: gym.spaces.Space | None
    action_space: gym.spaces.Space | None
    notes: list[str] = field(default_factory=list)
    """What did not carry over (e.g. TD3's second critic), one sentence each."""
    refused_env_id: str | None = None
    """A recorded ``module:Env`` id not used under weights_only (``recorded_env_id``)."""

    def apply_to(self, config: TrainConfig) -> TrainConfig:
        """Set ``config``'s network shapes (and env id, when known) to fit these weights."""
        config.actor.hidden_sizes = list(self.actor_config.hidden_sizes)
        config.critic.hidden_sizes = list(self.critic_config.hidden_sizes)
        config.critic.action_layer = 0
        if self.env_id is not None:
            config.env_id = self.env_id
        return config

    def policy_file(self, step: int = 0, algorithm: str = "ddpg") -> dict[str, Any]:
        """The weights in the ``policies/step_N.pt`` format of ``vadam_rl.run_dir`` for a run
        of ``algorithm`` (td3: both critics, which only a TD3 zip has)."""
        critic, critic_target = self.critic, self.critic_target
        if algorithm == "td3":
            if self.twin_critics is None:
                raise UserError(
                    f"this {self.algorithm} model has one critic and TD3 trains two: import it "
                    "into a DDPG preset (--agent ddpg-...)"
                )
            critic, critic_target = self.twin_critics
        return {
            "actor": self.actor,
            "critic": critic,
            "actor_target": self.actor_target,
            "critic_target": critic_target,
            "step": step,
        }


def import_sb3(path: Path, weights_only: bool = False) -> ImportedPolicy:
    """Convert an SB3 DDPG/TD3 MlpPolicy zip into our actor/critic/target state dicts.

    SB3's ``actor.mu`` and ``critic.qf0`` have our module names, so this is a prefix strip plus
    shape checks. TD3 has two critics (``qf0``, ``qf1``): a TD3 run takes both
    (``policy_file(algorithm="td3")``), a DDPG run ``qf0`` and its target. ``weights_only``: as
    in ``load_sb3``.
    """
    contents = read_sb3_zip(path, weights_only=weights_only)
    state = contents.policy_state
    weights = {
        "actor": submodule_state(state, "actor."),
        "actor_target": submodule_state(state, "actor_target."),
        "critic": _first_critic(submodule_state(state, "critic.")),
        "critic_target": _first_critic(submodule_state(state, "critic_target.")),
    }
    obs_dim, actor_sizes, act_dim = mlp_dims(weights["actor"], "mu")
    _, critic_sizes, _ = mlp_dims(weights["critic"], "qf0")
    for key, state_dict in weights.items():
        network: nn.Module = (
            Actor(obs_dim, act_dim, actor_sizes)
            if key.startswith("actor")
            else Critic(obs_dim, act_dim, critic_sizes, action_layer=0)
        )
        load_checked(network, state_dict, key, str(path))
    twins = None
    if contents.n_critics == 2:
        halves = {}
        for key in ("critic", "critic_target"):
            second = {
                "qf0." + k.removeprefix("qf1."): v
                for k, v in submodule_state(state, key + ".").items()
                if k.startswith("qf1.")
            }
            critic = Critic(obs_dim, act_dim, critic_sizes, action_layer=0)
            load_checked(critic, second, key + ".qf1", str(path))
            halves[key] = {k: torch.stack([v, second[k]]) for k, v in weights[key].items()}
        twins = (halves["critic"], halves["critic_target"])
    notes = []
    if contents.n_critics > 1:
        notes.append(
            f"{contents.algorithm} has {contents.n_critics} critics; a DDPG run keeps critic.qf0 "
            "and its target" + (", a TD3 run both" if twins is not None else "")
        )
    env_id, refused_env_id = recorded_env_id(contents, weights_only)
    return ImportedPolicy(
        **weights,
        actor_config=NetworkConfig(hidden_sizes=actor_sizes),
        critic_config=NetworkConfig(hidden_sizes=critic_sizes, action_layer=0),
        twin_critics=twins,
        algorithm=contents.algorithm,
        env_id=env_id,
        refused_env_id=refused_env_id,
        observation_space=contents.observation_space,
        action_space=contents.action_space,
        notes=notes,
    )


def _first_critic(critic_state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value for key, value in critic_state.items() if key.startswith("qf0.")}


def sb3_critic_state(twin_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our twin critic (tensors with a leading dim of 2) as SB3's ``qf0.*``, ``qf1.*``."""
    out: dict[str, Tensor] = {}
    for key, value in twin_state.items():
        rest = key.removeprefix("qf0.")
        out["qf0." + rest], out["qf1." + rest] = value[0].clone(), value[1].clone()
    return out


def recorded_env_id(contents: Sb3Zip, weights_only: bool) -> tuple[str | None, str | None]:
    """(the env id a zip says it was trained on, if any and usable; the id refused, if any).

    vadam-rl's exports record the id. One of the form ``module:EnvName`` makes
    ``gymnasium.make`` import ``module``: under ``weights_only``, which promises that nothing
    the file names runs, it is refused (the user may pass it with ``--env`` to import it
    knowingly). A value that is not a string is no id.
    """
    env_id = contents.exporter_metadata.get("env_id")
    if not isinstance(env_id, str) or not env_id:
        return None, None
    if weights_only and ":" in env_id:
        return None, env_id
    return env_id, None


def missing_env_message(path: Path, refused: str | None) -> str:
    """What to say when neither --env nor the zip gives a usable env id."""
    if refused is not None:
        return (
            f"{path} names the env {refused!r}, which would import the module "
            f"{refused.partition(':')[0]!r}; --weights-only runs nothing the file names: pass "
            "--env yourself if you trust it"
        )
    return f"{path} does not record its environment: pass --env ENV_ID"
