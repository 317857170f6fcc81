"""The actor's forward pass in numpy, for acting on a CPU.

Acting is one forward pass per env step at batch ``num_envs``: a few thousand multiply-adds
per layer, where each torch operation's dispatch costs more than its arithmetic and numpy's
costs a fraction of that (``python bench/run.py`` times the whole loop; docs/performance.md).
The weights are numpy *views* of the actor's parameters, not copies, so whatever writes them
in place (optimizer steps, ``load_state_dict``, posterior draws into a behaviour actor) shows
through; a parameter or storage replaced (``load_state_dict(assign=True)``, ``p.data = ...``)
is noticed and its view rebuilt.

Same operations as ``Actor.forward`` in the parameters' dtype; the matmuls go through numpy's
BLAS instead of torch's, so outputs agree up to float rounding (tested in float64).

Only small products: OpenBLAS (numpy's bundled BLAS) computes a matrix product of up to
about ``SINGLE_THREAD_WORK`` multiply-adds on the calling thread and hands bigger ones to
worker threads of its own, which would compete with torch's for the cores; a batch that makes
any layer bigger goes through the module. An actor with a hook on any of its modules (or a
global module hook) acts through the module; hooks added after ``acting_forward`` are not
seen (as in the hand-written update, ``vadam_rl.agent.mlp_grad``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from vadam_rl.agent.mlp_grad import layers_of
from vadam_rl.agent.networks import Actor
from vadam_rl.agent.stacking import StackedLinear

SINGLE_THREAD_WORK = 2**18
"""Most multiply-adds (rows x in x out) of one layer that acting hands to numpy."""


class HostActor:
    """``actor(obs)`` for a plain vadam-rl ``Actor`` on a CPU; build it with ``acting_forward``.

    obs: (batch, obs_dim) CPU tensor -> action: (batch, act_dim) CPU tensor sharing memory
    with the numpy result; a stacked actor (``StackedLinear`` layers) takes (K, batch,
    obs_dim), and numpy's matmul broadcasts over the agents. For acting only: with autograd
    on, or for an obs of another dtype than the weights', or a batch too big (above), it
    calls the module.
    """

    def __init__(self, actor: nn.Module, linears: tuple[nn.Module, ...]) -> None:
        self.actor = actor
        self.linears = linears
        # (a stacked layer's weight holds all K agents': rows x its numel is the work)
        self.max_rows = SINGLE_THREAD_WORK // max(layer.weight.numel() for layer in linears)
        self.dtype = linears[0].weight.dtype
        self._addresses: list[int] = []
        self._arrays: list[np.ndarray] | None = None

    def __call__(self, obs: Tensor) -> Tensor:
        weights = self._views()
        if (
            weights is None  # a parameter has left the CPU since
            or obs.shape[-2] > self.max_rows
            or obs.dtype != self.dtype
            or torch.is_grad_enabled()
        ):
            return self.actor(obs)
        x = obs.numpy()
        last = len(weights) // 2 - 1
        for i in range(last + 1):
            x = x @ weights[2 * i]
            x += weights[2 * i + 1]
            if i < last:
                np.maximum(x, 0.0, out=x)
        return torch.from_numpy(np.tanh(x, out=x))

    def _views(self) -> list[np.ndarray] | None:
        """[W_0^T, b_0, W_1^T, b_1, ...] as numpy views, rebuilt when a parameter or its
        storage was replaced; None while a parameter is off the CPU."""
        params = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        addresses = [p.data_ptr() for p in params]
        if addresses != self._addresses:
            self._addresses = addresses
            self._arrays = None
            if all(p.device.type == "cpu" and p.dtype == self.dtype for p in params):
                self._arrays = [p.detach().numpy() for p in params]
                self._arrays[::2] = [w.swapaxes(-1, -2) for w in self._arrays[::2]]
                # a stacked bias (K, out) broadcasts over each agent's rows as (K, 1, out)
                self._arrays[1::2] = [
                    b[..., None, :] if b.ndim == 2 else b for b in self._arrays[1::2]
                ]
        return self._arrays


def acting_forward(actor: nn.Module) -> nn.Module | HostActor:
    """What acting calls for ``actor(obs)``: a ``HostActor`` where it computes the same (a
    plain float32 or float64 ``Actor``, single or stacked, on a CPU, no hooks anywhere), else
    the module itself."""
    layers = layers_of(actor)
    params = list(actor.parameters())
    plain = layers is not None and all(
        type(m) in _PLAIN_MODULES and not (m._forward_hooks or m._forward_pre_hooks)
        for m in actor.modules()
    )
    if not plain or _global_forward_hooks() or not params:
        return actor
    if any(p.device.type != "cpu" or p.dtype not in _DTYPES or p.dim() > 3 for p in params):
        return actor
    return HostActor(actor, layers.linears)  # type: ignore[union-attr]


def _global_forward_hooks() -> bool:
    """Whether hooks for every module's forward are registered (torch keeps them privately)."""
    module = nn.modules.module
    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


_PLAIN_MODULES = (Actor, nn.Sequential, nn.Linear, StackedLinear, nn.ReLU, nn.Tanh)
_DTYPES = (torch.float32, torch.float64)
