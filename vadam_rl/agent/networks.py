"""Actor and critic MLPs for DDPG, laid out so that they map one-to-one onto SB3's DDPG policy.

Actions inside vadam-rl live in the *squashed* space [-1, 1]^act_dim (the actor ends in tanh);
``ActionScaler`` maps them to the environment's Box at the env boundary only, exactly as SB3
does, so replay-buffer actions and critic inputs mean the same thing in both libraries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> list[nn.Module]:
    """Linear/ReLU layers in SB3's order: indices 0, 2, 4, ... are the Linear layers."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return layers


def _init_final_layer(layer: nn.Linear, scale: float | None) -> None:
    # DDPG (Lillicrap et al. 2016) and the Vadam paper's code start the last layer at
    # U(-3e-3, 3e-3) so the first actions and Q-values are near zero.
    if scale is not None:
        nn.init.uniform_(layer.weight, -scale, scale)
        nn.init.uniform_(layer.bias, -scale, scale)


class Actor(nn.Module):
    """Deterministic policy pi(s) = tanh(MLP(s)), in the squashed action space [-1, 1].

    ``mu`` is an ``nn.Sequential`` named as in SB3 (``actor.mu.{0,2,4}`` for two hidden layers).
    obs: (batch, obs_dim) -> action: (batch, act_dim).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (400, 300),
        final_layer_init: float | None = None,
    ) -> None:
        super().__init__()
        layers = mlp(obs_dim, hidden_sizes, act_dim)
        _init_final_layer(layers[-1], final_layer_init)  # type: ignore[arg-type]
        self.mu = nn.Sequential(*layers, nn.Tanh())

    def forward(self, obs: Tensor) -> Tensor:
        return self.mu(obs)


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
    ) -> None:
        super().__init__()
        if not 0 <= action_layer < max(len(hidden_sizes), 1):
            raise ValueError(
                f"Invalid action_layer: {action_layer} (0 to {len(hidden_sizes) - 1} "
                f"for {len(hidden_sizes)} hidden layers)"
            )
        self.action_layer = action_layer
        if action_layer == 0:
            layers = mlp(obs_dim + act_dim, hidden_sizes, 1)
            _init_final_layer(layers[-1], final_layer_init)  # type: ignore[arg-type]
            self.qf0 = nn.Sequential(*layers)
        else:
            state_layers = mlp(obs_dim, hidden_sizes[:action_layer], 1)[:-1]
            self.state_net = nn.Sequential(*state_layers)
            joint_in = hidden_sizes[action_layer - 1] + act_dim
            layers = mlp(joint_in, hidden_sizes[action_layer:], 1)
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
