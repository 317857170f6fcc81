"""Actor and critic MLPs for DDPG, laid out so that they map one-to-one onto SB3's DDPG policy.

Actions inside vadam-rl live in the *squashed* space [-1, 1]^act_dim (the actor ends in tanh);
``ActionScaler`` maps them to the environment's Box at the env boundary only, exactly as SB3
does, so replay-buffer actions and critic inputs mean the same thing in both libraries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadam_rl import rng
from vadam_rl.config import NetworkConfig
from vadam_rl.rng import Generators


def mlp(
    in_dim: int,
    hidden_sizes: Sequence[int],
    out_dim: int,
    layer_norm: bool = False,
    linear: Callable[[int, int], nn.Module] = nn.Linear,
) -> list[nn.Module]:
    """Linear/ReLU layers in SB3's order: indices 0, 2, 4, ... are the Linear layers.

    ``layer_norm``: Linear/LayerNorm/ReLU per hidden layer (indices 0, 3, 6, ...), as in
    OpenAI baselines' DDPG for parameter-space noise (Plappert et al. 2018): normalising the
    pre-activations keeps a weight perturbation's effect comparable across layers.
    ``linear``: the layer class (``NoisyLinear`` for a NoisyNet actor).
    """
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers.append(linear(in_dim, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        in_dim = width
    layers.append(linear(in_dim, out_dim))
    return layers


def noise_scale(x: Tensor) -> Tensor:
    """f(x) = sgn(x) sqrt(|x|), NoisyNet's factorised-noise transform."""
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """A linear layer with learned factorised Gaussian weight noise (NoisyNet, Fortunato et
    al., ICLR 2018, section 3.2): w = mu_w + sigma_w * (f(eps_out) f(eps_in)^T) and
    b = mu_b + sigma_b * f(eps_out), eps ~ N(0, I), f(x) = sgn(x) sqrt(|x|).

    ``weight`` and ``bias`` are the means (named as in ``nn.Linear``, so the mean layer's state
    is a Linear's), ``weight_sigma`` and ``bias_sigma`` the learned noise scales. Initialised
    as the paper's factorised case: mu ~ U(-1/sqrt(p), 1/sqrt(p)), sigma = sigma_0/sqrt(p) with
    p the input width and sigma_0 = 0.5. Without ``noise`` (the default) the layer computes
    its mean: evaluation, policy files and exports see plain Linear layers. Parameters may
    carry a leading agent dimension (a population): (K, out, in), inputs (K, batch, in).
    """

    sigma_0 = 0.5

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        sigma = self.sigma_0 / math.sqrt(in_features)
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma))
        self.noise: tuple[Tensor, Tensor] | None = None
        """(f(eps_in), f(eps_out)) while a draw is in force: (in,), (out,), or (K, in), (K, out)."""

    def draw_noise(self, generator: Generators) -> None:
        leading, dtype, device = self.weight.shape[:-2], self.weight.dtype, self.weight.device
        eps_in = rng.randn((*leading, self.in_features), generator, dtype=dtype, device=device)
        eps_out = rng.randn((*leading, self.out_features), generator, dtype=dtype, device=device)
        self.noise = (noise_scale(eps_in), noise_scale(eps_out))

    def noisy_weights(self) -> tuple[Tensor, Tensor]:
        """(w, b) of the draw in force; the mean without one."""
        if self.noise is None:
            return self.weight, self.bias
        f_in, f_out = self.noise
        weight = self.weight + self.weight_sigma * (f_out.unsqueeze(-1) * f_in.unsqueeze(-2))
        return weight, self.bias + self.bias_sigma * f_out

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.noisy_weights()
        if weight.dim() == 2:
            return F.linear(x, weight, bias)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def noisy_layers(module: nn.Module) -> list[NoisyLinear]:
    return [m for m in module.modules() if isinstance(m, NoisyLinear)]


@contextmanager
def noise_drawn(module: nn.Module, generator: Generators) -> Iterator[None]:
    """Fresh factorised noise in every ``NoisyLinear`` of ``module`` for the body (a gradient
    step takes it through the draw to the sigmas); the mean again on exit, also on error."""
    layers = noisy_layers(module)
    try:
        for layer in layers:
            layer.draw_noise(generator)
        yield
    finally:
        for layer in layers:
            layer.noise = None


def mean_state(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s state with NoisyNet's noise scales left out: the mean network's weights in
    the plain layers' format (policy files, SB3 and ONNX exports)."""
    noisy = {name for name, m in module.named_modules() if isinstance(m, NoisyLinear)}
    return {
        key: value
        for key, value in module.state_dict().items()
        if not (key.rpartition(".")[0] in noisy and key.endswith("_sigma"))
    }


def _init_final_layer(layer: nn.Linear | NoisyLinear, scale: float | None) -> None:
    # DDPG (Lillicrap et al. 2016) and the Vadam paper's code start the last layer at
    # U(-3e-3, 3e-3) so the first actions and Q-values are near zero.
    if scale is not None:
        nn.init.uniform_(layer.weight, -scale, scale)
        nn.init.uniform_(layer.bias, -scale, scale)


class Actor(nn.Module):
    """Deterministic policy pi(s) = tanh(MLP(s)), in the squashed action space [-1, 1].

    ``mu`` is an ``nn.Sequential`` named as in SB3 (``actor.mu.{0,2,4}`` for two hidden layers).
    ``layer_norm`` and ``noisy`` (``NoisyLinear`` layers): see ``mlp``.
    obs: (batch, obs_dim) -> action: (batch, act_dim).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (400, 300),
        final_layer_init: float | None = None,
        layer_norm: bool = False,
        noisy: bool = False,
    ) -> None:
        super().__init__()
        linear = NoisyLinear if noisy else nn.Linear
        layers = mlp(obs_dim, hidden_sizes, act_dim, layer_norm, linear)
        _init_final_layer(layers[-1], final_layer_init)  # type: ignore[arg-type]
        self.mu = nn.Sequential(*layers, nn.Tanh())

    def forward(self, obs: Tensor) -> Tensor:
        return self.mu(obs)


def mean_actor(obs_dim: int, act_dim: int, config: NetworkConfig) -> Actor:
    """An actor of ``config``'s shape with plain Linear layers: what a policy file's mean
    weights load into (a NoisyNet actor's mean is an ordinary actor)."""
    return Actor(obs_dim, act_dim, config.hidden_sizes, layer_norm=config.layer_norm)


class Critic(nn.Module):
    """Q(s, a) as an MLP; the action enters at layer ``action_layer``.

    ``action_layer=0`` concatenates (obs, action) at the input, as SB3 and rl-zoo do (the only
    layout SB3 can load: ``critic.qf0.{0,2,4}``). ``action_layer=1`` is the DDPG paper's and the
    Vadam reference code's layout: the first hidden layer sees the state alone, the action joins
    at the second, so low-level state features are learned before actions are mixed in.
    obs: (batch, obs_dim), action: (batch, act_dim) -> q: (batch, 1).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (400, 300),
        action_layer: int = 0,
        final_layer_init: float | None = None,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if not 0 <= action_layer < max(len(hidden_sizes), 1):
            raise ValueError(
                f"Invalid action_layer: {action_layer} (0 to {len(hidden_sizes) - 1} "
                f"for {len(hidden_sizes)} hidden layers)"
            )
        self.action_layer = action_layer
        if action_layer == 0:
            layers = mlp(obs_dim + act_dim, hidden_sizes, 1, layer_norm)
            _init_final_layer(layers[-1], final_layer_init)  # type: ignore[arg-type]
            self.qf0 = nn.Sequential(*layers)
        else:
            state_layers = mlp(obs_dim, hidden_sizes[:action_layer], 1, layer_norm)[:-1]
            self.state_net = nn.Sequential(*state_layers)
            joint_in = hidden_sizes[action_layer - 1] + act_dim
            layers = mlp(joint_in, hidden_sizes[action_layer:], 1, layer_norm)
            _init_final_layer(layers[-1], final_layer_init)  # type: ignore[arg-type]
            self.joint_net = nn.Sequential(*layers)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        if self.action_layer == 0:
            return self.qf0(torch.cat([obs, action], dim=-1))
        return self.joint_net(torch.cat([self.state_net(obs), action], dim=-1))


@torch.no_grad()
def polyak_update(
    target: nn.Module | Sequence[Tensor], source: nn.Module | Sequence[Tensor], tau: float
) -> None:
    """target <- (1 - tau) * target + tau * source, for every parameter (one foreach call).

    Modules or their parameter lists: a learner that keeps the lists skips walking the
    modules once per update.
    """
    target_params = list(target.parameters()) if isinstance(target, nn.Module) else target
    source_params = list(source.parameters()) if isinstance(source, nn.Module) else source
    torch._foreach_lerp_(list(target_params), list(source_params), tau)


class ActionScaler:
    """Maps squashed actions in [-1, 1] to a Box [low, high] and back (SB3's convention)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError("the action space must be a bounded Box (finite low and high)")
        self.low = low.astype(np.float64)
        self.high = high.astype(np.float64)
        self._range = self.high - self.low

    def to_env(self, squashed: np.ndarray) -> np.ndarray:
        # np.minimum/maximum: np.clip's Python wrapper costs more than this arithmetic
        clipped = np.minimum(np.maximum(squashed, -1.0), 1.0)
        return self.low + 0.5 * (clipped + 1.0) * self._range

    def to_squashed(self, action: np.ndarray) -> np.ndarray:
        return 2.0 * (action - self.low) / (self.high - self.low) - 1.0
