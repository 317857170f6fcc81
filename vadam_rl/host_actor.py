"""The actor's forward pass in numpy, for acting on a CPU.

Acting is one forward pass per env step at batch ``num_envs``: a few thousand multiply-adds
per layer, where each torch operation's dispatch costs more than its arithmetic and numpy's
costs a fraction of that (``python bench/run.py`` times the whole loop; README, Performance).
The weights are numpy *views* of the actor's parameters, not copies, so whatever writes them
in place (optimizer steps, ``load_state_dict``, posterior draws into a behaviour actor) shows
through; a parameter whose storage was replaced is noticed and its view rebuilt.

Same operations as ``Actor.forward`` in the parameters' dtype; the matmuls go through numpy's
BLAS instead of torch's, so outputs agree up to float rounding (tested in float64).

Only small products: OpenBLAS (numpy's bundled BLAS) computes a matrix product of up to
about ``SINGLE_THREAD_WORK`` multiply-adds on the calling thread and hands bigger ones to
worker threads of its own, which would compete with torch's for the cores; a batch that makes
any layer bigger goes through the module. Hooks added to the actor after this was built are
not seen (as in the hand-written update, ``vadam_rl.backprop``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from vadam_rl.backprop import layers_of

SINGLE_THREAD_WORK = 2**18
"""Most multiply-adds (rows x in x out) of one layer that acting hands to numpy."""


class HostActor:
    """``actor(obs)`` for a plain vadam-rl ``Actor`` on a CPU; build it with ``acting_forward``.

    obs: (batch, obs_dim) CPU tensor -> action: (batch, act_dim) CPU tensor sharing memory
    with the numpy result. For acting only: no autograd.
    """

    def __init__(self, actor: nn.Module, linears: tuple[nn.Module, ...]) -> None:
        self.actor = actor
        self.params: list[Tensor] = [p for layer in linears for p in (layer.weight, layer.bias)]
        self.max_rows = SINGLE_THREAD_WORK // max(layer.weight.numel() for layer in linears)
        self._addresses: list[int] = []
        self._arrays: list[np.ndarray] | None = None

    def __call__(self, obs: Tensor) -> Tensor:
        weights = self._views()
        if weights is None or obs.shape[0] > self.max_rows:  # off the CPU since, or too big
            return self.actor(obs)
        x = obs.numpy().astype(weights[0].dtype, copy=False)
        last = len(weights) // 2 - 1
        for i in range(last + 1):
            x = x @ weights[2 * i]
            x += weights[2 * i + 1]
            if i < last:
                np.maximum(x, 0.0, out=x)
        return torch.from_numpy(np.tanh(x, out=x))

    def _views(self) -> list[np.ndarray] | None:
        """[W_0^T, b_0, W_1^T, b_1, ...] as numpy views, rebuilt if a storage moved; None
        once a parameter is off the CPU."""
        addresses = [p.data_ptr() for p in self.params]
        if addresses != self._addresses:
            self._addresses = addresses
            self._arrays = None
            if all(p.device.type == "cpu" for p in self.params):
                self._arrays = [p.detach().numpy() for p in self.params]
                self._arrays[::2] = [w.T for w in self._arrays[::2]]
        return self._arrays


def acting_forward(actor: nn.Module) -> nn.Module | HostActor:
    """What acting calls for ``actor(obs)``: a ``HostActor`` where it computes the same (a
    plain single ``Actor`` whose parameters live on a CPU), else the module itself."""
    layers = layers_of(actor)
    on_cpu = all(p.device.type == "cpu" for p in actor.parameters())
    if layers is None or not on_cpu or any(p.dim() > 2 for p in actor.parameters()):
        return actor
    return HostActor(actor, layers.linears)
