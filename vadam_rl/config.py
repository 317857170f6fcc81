"""Typed run configuration, loaded from the YAML presets in ``agents/`` plus CLI overrides.

A preset is a YAML mapping with the same nesting as ``TrainConfig``; unknown keys and values of
the wrong type are rejected with ``ConfigError`` naming the key. ``--set actor.optimizer.lr=3e-4``
(or its shortcut ``--set actor.lr=3e-4``) overrides one field after the preset is loaded. The
resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A preset or override that does not fit ``TrainConfig``."""


OptimizerName = Literal["adam", "vadam", "vadagrad", "vprop", "ivon", "adam-explore", "vogn"]
ExplorationKind = Literal[
    "posterior", "vadam", "parameter-noise", "noisy-net", "gaussian", "ornstein-uhlenbeck", "none"
]


@dataclass
class OptimizerConfig:
    """One network's optimizer. Fields not used by ``name`` are ignored."""

    name: OptimizerName = "adam"
    """adam | vadam | vadagrad | vprop | ivon | adam-explore (Vadam paper's "Adam-Explore") |
    vogn (a Newton-like step on per-example squared gradients; its learner supplies them)."""
    lr: float = 1e-3
    """Learning rate alpha (for adam-explore: of the mean)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """(beta1, beta2) moment decay rates (adam, vadam, ivon, vogn); vadagrad and vprop use beta2."""
    weight_decay: float = 0.0
    """L2 penalty (adam only)."""
    eps: float = 1e-8
    """Adam's eps in the denominator (adam, adam-explore); Vadam's damping is lambda/N."""
    damping_before_bias_correction: bool = False
    """Add the damping (vadam: lambda/N, adam-explore: eps) to sqrt(s) before the bias
    correction, as TensorFlow's Adam and the paper's RL code do (vadam, adam-explore)."""
    prior_precision: float = 1e-8
    """Prior precision lambda of N(0, 1/lambda) (vadam, vprop, ivon, vogn)."""
    train_set_size: float = 1.0
    """N in sigma = 1/sqrt(N*s + lambda + c) (vadam, vprop, ivon, vogn)."""
    precision_floor: float = 0.0
    """c, a constant added to the posterior precision so sigma <= 1/sqrt(c) (vadam; vogn: its
    damping c/N, which also damps the step)."""
    init_precision: float = 1e4
    """Initial posterior precision (vadagrad, adam-explore, vogn, ivon's hess_init = this/N)."""
    sigma_lr: float = 0.01
    """Learning rate of the precision (adam-explore)."""
    num_samples: int = 1
    """Monte Carlo draws per step, gradients averaged (vadam, vadagrad, vprop, ivon, vogn)."""


@dataclass
class NetworkConfig:
    """An MLP (actor or critic) and the optimizer that trains it."""

    hidden_sizes: list[int] = field(default_factory=lambda: [400, 300])
    """Widths of the ReLU hidden layers."""
    final_layer_init: float | None = None
    """If set, the last layer starts at U(-x, x) (DDPG paper: 3e-3); else PyTorch's default."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    action_layer: int = 0
    """Critic only: hidden layer where the action enters (0 = input, SB3's layout)."""
    layer_norm: bool = False
    """LayerNorm after every hidden Linear layer, before its ReLU (OpenAI baselines' DDPG with
    parameter noise). SB3's MlpPolicy has no LayerNorm: such a run exports to ONNX, not SB3."""


@dataclass
class ExplorationConfig:
    """How the behaviour policy differs from the trained (mean) actor."""

    kind: ExplorationKind = "gaussian"
    """posterior, alias vadam (act with actor weights drawn from the actor optimizer's
    posterior) | parameter-noise (adaptive Gaussian weight noise, Plappert et al. 2018) |
    noisy-net (learned factorised noise in NoisyLinear actor layers, Fortunato et al. 2018) |
    gaussian | ornstein-uhlenbeck (action noise) | none."""
    sigma: float = 0.1
    """Action-noise std in the squashed action space [-1, 1] (gaussian, ornstein-uhlenbeck);
    parameter-noise: the initial weight-noise std."""
    theta: float = 0.15
    """Mean-reversion rate (ornstein-uhlenbeck)."""
    resample_every: int = 1
    """posterior, parameter-noise: draw new actor weights every k env steps; 0 draws when an
    episode ends (parameter-noise always redraws then too)."""
    target_action_distance: float | None = None
    """delta: adapt the scale of the weight noise until the behaviour actor's actions lie
    sqrt(mean((pi(s) - pi~(s))^2)) = delta from the mean actor's on replayed states
    (parameter-noise: required, baselines' DDPG uses 0.2; posterior: scales the posterior's
    draw mu + kappa * sigma * eps, off when unset)."""
    adapt_every: int = 50
    """Adapt the noise scale every k updates (baselines' param_noise_adaption_interval)."""
    adapt_factor: float = 1.01
    """alpha: the scale is multiplied by alpha when the distance is at most delta, divided
    by it otherwise (baselines' adoption_coefficient)."""
    reuse_draw_in_update: bool = False
    """posterior: the actor's gradient step right after a new draw is taken at that same draw
    (as the Vadam reference code does: one draw per env step, half the sampling cost);
    false: the gradient step draws its own weights."""


Algorithm = Literal["ddpg", "td3"]


@dataclass
class TD3Config:
    """TD3's own settings (Fujimoto et al. 2018; the paper's values are the defaults)."""

    policy_delay: int = 2
    """Update the actor and the targets every this many critic updates."""
    target_policy_noise: float = 0.2
    """Std of the Gaussian noise added to the target actor's action (target policy
    smoothing), in units of the action bounds (the squashed space [-1, 1])."""
    target_noise_clip: float = 0.5
    """That noise is clipped to [-target_noise_clip, target_noise_clip]."""


@dataclass
class TrainConfig:
    """Everything one run needs. Presets in ``agents/`` fill it in."""

    algorithm: Algorithm = "ddpg"
    """ddpg (one critic, every update) | td3 (twin critics, clipped double-Q, target policy
    smoothing, delayed actor: its settings under ``td3``)."""
    env_id: str = "HalfCheetah-v5"
    """Any gymnasium env id with a Box action space."""
    seed: int = 0
    total_steps: int = 1_000_000
    """Environment steps (summed over vectorised envs)."""
    learning_starts: int = 10_000
    """Steps of uniformly random actions before learning starts."""
    buffer_size: int = 1_000_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target networks."""
    train_freq: int = 1
    """Update every ``train_freq`` env steps ..."""
    gradient_steps: int = 1
    """... with this many gradient steps."""
    num_envs: int = 1
    async_envs: bool = False
    """Run the ``num_envs`` environments in subprocesses (gymnasium AsyncVectorEnv)."""
    eval_every: int = 10_000
    """Evaluate the mean actor every this many env steps (0 = only at the end)."""
    eval_episodes: int = 10
    checkpoint_every: int = 50_000
    """Write a resumable checkpoint every this many env steps (and at the end / on Ctrl-C)."""
    log_every: int = 1_000
    """Write training scalars to TensorBoard every this many env steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool | Literal["auto"] = False
    """torch.compile the whole update (critic, actor, optimizer steps, targets) as one graph;
    where that cannot be (custom networks; VadaGrad, Vprop, AdamExplore, IVON) only the
    gradient computations. Costs 15-30 s of compilation at the start (seconds once cached);
    what it gains is in docs/performance.md. ``auto``: on a CPU with a C++ compiler
    (inductor's: $CXX or g++), for runs of at least 20,000 updates (compiling does not pay
    on shorter runs, nor on CUDA, where ``cuda_graph`` is the fast path)."""
    cuda_graph: bool = False
    """Where possible, capture the whole update (critic, actor, targets) as a CUDA graph after
    3 eager updates and replay it: one launch instead of one per operation (Adam: the same
    arithmetic; Vadam: its graph mode, equal up to float rounding). Possible on CUDA with
    Adam or Vadam for actor and critic (VadaGrad, Vprop, AdamExplore and IVON not yet), the
    built-in networks and compile=false; elsewhere the update runs eagerly as without it
    (``vadam_rl.fast.cuda_graph.why_eager``)."""
    actor: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(optimizer=OptimizerConfig(lr=1e-3))
    )
    critic: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(optimizer=OptimizerConfig(lr=1e-3))
    )
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    td3: TD3Config = field(default_factory=TD3Config)
    """Used by algorithm=td3 only (refused elsewhere unless at their defaults)."""
    agent: str = "custom"
    """Name of the preset this config came from (informational)."""


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def preset_dir() -> Path:
    """The folder holding the shipped ``*.yaml`` presets."""
    return Path(str(resources.files("vadam_rl.presets")))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, with input nested too deeply for the parser (its RecursionError,
    about 3,000 traceback lines) raised as the bad YAML it is."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply to read") from None


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description (the YAML's ``description`` key)."""
    out = {}
    for path in sorted(preset_dir().glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        out[path.stem] = str(raw.get("description", "")).strip()
    return out


def _read_preset(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's raw mapping with its ``base`` presets merged in (base first)."""
    path = preset_dir() / f"{name}.yaml"
    if Path(name).name != name or not path.is_file():  # (a name, never a path out of presets/)
        known = ", ".join(sorted(list_presets()))
        raise ConfigError(f"unknown agent preset {name!r}; known presets: {known}")
    if name in seen:
        raise ConfigError(f"preset {name}: circular base chain {' -> '.join((*seen, name))}")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"preset {name}: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"preset {name}: top level must be a mapping")
    raw.pop("description", None)
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _deep_merge(_read_preset(str(base), (*seen, name)), raw)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_preset(name: str, env_id: str | None = None) -> TrainConfig:
    """Build the config of preset ``name``.

    A preset may name a ``base`` preset: its mapping is merged over the base's, key by key,
    so a baseline states only how it differs. ``env_overrides: {ENV_ID: {dotted.key: value}}``
    applies to that env only.
    """
    raw = _read_preset(name)
    env_overrides = raw.pop("env_overrides", {}) or {}
    config = from_dict(TrainConfig, raw, where=name)
    config.agent = name
    if env_id is not None:
        config.env_id = env_id
    for key, value in (env_overrides.get(config.env_id) or {}).items():
        set_field(config, key, value)
    validate(config)
    return config


def load_config_file(path: Path) -> TrainConfig:
    """Read a resolved config saved with a run."""
    try:
        raw = load_yaml(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a config mapping")
    return from_dict(TrainConfig, raw, where=str(path))


def save_config(config: TrainConfig, path: Path) -> None:
    from vadam_rl.run_dir import atomic_write_text  # run_dir imports torch: only when saving

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-safe dict (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


# --------------------------------------------------------------------------------------------
# Typed conversion
# --------------------------------------------------------------------------------------------


def from_dict(cls: type, raw: dict[str, Any], where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a nested dict, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown config key {key!r} for {cls.__name__}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}:{key}" if where else key)
    return cls(**kwargs)


def set_field(config: Any, dotted_key: str, value: Any) -> None:
    """Set ``a.b.c`` on a nested dataclass, converting ``value`` to the field's type."""
    *parents, leaf = dotted_key.split(".")
    target = config
    for part in parents:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise ConfigError(f"unknown config key {dotted_key!r}")
        target = getattr(target, part)
    if isinstance(target, NetworkConfig) and not hasattr(target, leaf):
        # Shortcut: actor.lr means actor.optimizer.lr (and so for every optimizer field).
        target = target.optimizer
    if not dataclasses.is_dataclass(target) or leaf not in {
        f.name for f in dataclasses.fields(target)
    }:
        raise ConfigError(f"unknown config key {dotted_key!r}")
    hint = typing.get_type_hints(type(target))[leaf]
    setattr(target, leaf, _coerce(value, hint, dotted_key))


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings; values are parsed as YAML (``3e-4``, ``[64, 64]``, ``true``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = load_yaml(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        set_field(config, key.strip(), value)
    validate(config)
    return config


# Far beyond any published run (the longest are ~1e9 steps): a larger number is a typo, and
# would train for centuries instead of failing.
MAX_TOTAL_STEPS = 10**10
MAX_GRADIENT_STEPS = 10_000


def validate(config: TrainConfig) -> None:
    """Range checks that types alone cannot express."""
    positive = ["total_steps", "buffer_size", "batch_size", "train_freq", "num_envs"]
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(config, name)}")
    if config.total_steps > MAX_TOTAL_STEPS:  # (10**30 would train forever, not fail)
        raise ConfigError(
            f"total_steps must be at most {MAX_TOTAL_STEPS:.0e} (ten billion), got "
            f"{config.total_steps}"
        )
    if config.gradient_steps > MAX_GRADIENT_STEPS:
        raise ConfigError(
            f"gradient_steps must be at most {MAX_GRADIENT_STEPS} per env step, got "
            f"{config.gradient_steps}"
        )
    non_negative = ["learning_starts", "gradient_steps", "eval_every", "checkpoint_every"]
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(config, name)}")
    if not 0.0 <= config.gamma <= 1.0:
        raise ConfigError(f"gamma must be in [0, 1], got {config.gamma}")
    if not 0.0 < config.tau <= 1.0:
        raise ConfigError(f"tau must be in (0, 1], got {config.tau}")
    if config.eval_episodes < 1:
        raise ConfigError(f"eval_episodes must be >= 1, got {config.eval_episodes}")
    if config.log_every < 1:
        raise ConfigError(f"log_every must be >= 1, got {config.log_every}")
    if not 0 <= config.seed < 2**63:
        raise ConfigError(f"seed must be in [0, 2**63), got {config.seed}")
    for net in ("actor", "critic"):
        opt = getattr(config, net).optimizer
        if not 0 < opt.lr < math.inf:  # (also refuses nan)
            raise ConfigError(f"{net}.optimizer.lr must be finite and > 0, got {opt.lr}")
    _check_exploration(config.exploration)
    _check_td3(config)
    for net in ("actor", "critic"):
        _check_network(getattr(config, net), net)
    if config.exploration.kind in ("posterior", "vadam") and config.actor.optimizer.name == "adam":
        raise ConfigError(
            "exploration.kind=posterior needs a variational actor optimizer "
            "(vadam, vadagrad, vprop, ivon, adam-explore or vogn), not adam"
        )
    if config.critic.optimizer.name == "vogn":
        raise ConfigError(
            "critic.optimizer.name=vogn is not supported: the learners hand VOGN its "
            "per-example squared gradients for the actor's loss only"
        )
    if config.exploration.kind == "noisy-net" and config.actor.optimizer.name != "adam":
        raise ConfigError(
            "exploration.kind=noisy-net learns its noise with the actor's optimizer; "
            f"actor.optimizer.name={config.actor.optimizer.name} would add weight noise of its "
            "own: use adam"
        )
    posterior = config.exploration.kind in ("posterior", "vadam")
    exploration = config.exploration
    reuses = posterior and exploration.reuse_draw_in_update
    if reuses and exploration.resample_every != 1 and config.train_freq > 1:
        # A draw at a step without an update would wait for a later one, and a checkpoint
        # in between (which does not hold the draw) would make the resumed run differ.
        raise ConfigError(
            "exploration.reuse_draw_in_update=true needs exploration.resample_every=1 "
            f"when train_freq > 1 (got resample_every={exploration.resample_every}, "
            f"train_freq={config.train_freq})"
        )
    if reuses and config.actor.optimizer.name == "ivon":
        raise ConfigError(
            "exploration.reuse_draw_in_update=true is not supported with actor.optimizer.name="
            "ivon (IVON draws its step's weights itself); set it to false"
        )


def _check_td3(config: TrainConfig) -> None:
    td3 = config.td3
    if config.algorithm != "td3" and td3 != TD3Config():
        changed = [
            f"td3.{f.name}"
            for f in dataclasses.fields(td3)
            if getattr(td3, f.name) != getattr(TD3Config(), f.name)
        ]
        raise ConfigError(
            f"{', '.join(changed)} apply to algorithm=td3 only; this run's algorithm is "
            f"{config.algorithm}"
        )
    if td3.policy_delay < 1:
        raise ConfigError(f"td3.policy_delay must be >= 1, got {td3.policy_delay}")
    for name in ("target_policy_noise", "target_noise_clip"):
        value = getattr(td3, name)
        if not 0 <= value < math.inf:
            raise ConfigError(f"td3.{name} must be finite and >= 0, got {value}")


def _check_exploration(exploration: ExplorationConfig) -> None:
    if not 0 <= exploration.sigma < math.inf:
        raise ConfigError(f"exploration.sigma must be finite and >= 0, got {exploration.sigma}")
    if not 0 <= exploration.theta <= 1:  # x <- x - theta * x: beyond 1 it overshoots
        raise ConfigError(f"exploration.theta must be in [0, 1], got {exploration.theta}")
    if exploration.resample_every < 0:
        raise ConfigError(
            f"exploration.resample_every must be >= 0 (0: once per episode), got "
            f"{exploration.resample_every}"
        )
    delta = exploration.target_action_distance
    if delta is not None and not 0 < delta < math.inf:
        raise ConfigError(f"exploration.target_action_distance must be finite and > 0, got {delta}")
    if exploration.kind == "parameter-noise" and delta is None:
        raise ConfigError(
            "exploration.kind=parameter-noise needs exploration.target_action_distance (delta, "
            "the action distance its noise adapts to; OpenAI baselines' DDPG uses 0.2)"
        )
    if delta is not None and exploration.kind not in ("parameter-noise", "posterior", "vadam"):
        raise ConfigError(
            f"exploration.target_action_distance adapts weight noise (parameter-noise, "
            f"posterior); exploration.kind={exploration.kind} has none"
        )
    if exploration.kind == "parameter-noise" and not exploration.sigma > 0:
        raise ConfigError("exploration.sigma (the initial weight-noise std) must be > 0")
    if exploration.adapt_every < 1:
        raise ConfigError(f"exploration.adapt_every must be >= 1, got {exploration.adapt_every}")
    if not 1 < exploration.adapt_factor < math.inf:
        raise ConfigError(
            f"exploration.adapt_factor must be finite and > 1, got {exploration.adapt_factor}"
        )


def _check_network(net: NetworkConfig, name: str) -> None:
    """The network's layout, as ConfigErrors (the optimizer's own range checks are
    ``vadam_rl.agent.optimizers.check_optimizers``)."""
    if not net.hidden_sizes:
        raise ConfigError(f"{name}.hidden_sizes must name at least one hidden layer")
    if net.final_layer_init is not None and not 0 < net.final_layer_init < math.inf:
        raise ConfigError(
            f"{name}.final_layer_init must be finite and > 0 (or null), got {net.final_layer_init}"
        )
    if any(width < 1 for width in net.hidden_sizes):
        raise ConfigError(f"{name}.hidden_sizes must all be >= 1, got {net.hidden_sizes}")
    if not 0 <= net.action_layer <= len(net.hidden_sizes) - 1 and name == "critic":
        raise ConfigError(
            f"critic.action_layer must be in [0, {len(net.hidden_sizes) - 1}] for "
            f"{len(net.hidden_sizes)} hidden layers, got {net.action_layer}"
        )


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML value to ``hint`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where=key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; or ".join(errors) if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        return origin(_coerce(v, args[0], key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def flat_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config as dotted keys, with the defaults of fields it predates filled in.

    Runs written before a field existed then compare equal to newer runs that leave it at
    its default; a config that no longer parses is flattened as it is.
    """
    try:
        resolved = to_dict(from_dict(TrainConfig, saved, where="config"))
    except ConfigError:
        resolved = saved
    return flatten(resolved)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (tuples as lists)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def settings_differences(
    mine: dict[str, Any], theirs: dict[str, Any], ignore: Iterable[str] = ()
) -> list[str]:
    """The dotted keys, sorted, whose values differ between two saved configs (both
    flattened with ``flat_settings``; keys only one of them has are not compared)."""
    keys = mine.keys() & theirs.keys() - set(ignore)
    return sorted(key for key in keys if mine[key] != theirs[key])
