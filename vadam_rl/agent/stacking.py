"""Stack K identical modules into one whose weights have a leading agent dimension, and
move state between the stacked form and K single-agent forms.

A stacked module keeps the single module's parameter names and order (``mu.0.weight`` has
shape (K, out, in) instead of (out, in)), so agent k's state dict is the stacked one
indexed with [k]: single-run checkpoints, policy files and SB3 exports need no new format.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vadam_rl.agent.networks import NoisyLinear


class StackedLinear(nn.Module):
    """Independent linear layers stacked along leading dimensions: weights (*lead, out, in),
    inputs (*lead, batch, in) -> (*lead, batch, out).

    Built from ``nn.Linear`` layers (lead = (K,): K agents) or from ``StackedLinear`` layers
    (lead = (K, *theirs): K agents of TD3's twin critics, (K, 2)), so every layer of every
    network is one batched matmul whatever the nesting.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        if any(layer.bias is None for layer in layers):
            raise ValueError("StackedLinear needs layers with a bias")
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # type: ignore[union-attr]
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        return stacked_linear(x, self.weight, self.bias)


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x W^T + b for weights (*lead, out, in) and inputs (*lead, batch, in): one ``baddbmm``
    over the flattened leading dimensions (``addmm`` for a plain (out, in) weight)."""
    if weight.dim() == 2:
        return torch.addmm(bias, x, weight.t())
    if weight.dim() == 3:
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
    lead, (out, inp) = weight.shape[:-2], weight.shape[-2:]
    flat = torch.baddbmm(
        bias.reshape(-1, 1, out), x.reshape(-1, x.shape[-2], inp), weight.reshape(-1, out, inp).mT
    )
    return flat.view(*lead, x.shape[-2], out)


class StackedLayerNorm(nn.Module):
    """K independent ``nn.LayerNorm`` layers over the last dim: (K, batch, d) -> (K, batch, d)."""

    def __init__(self, layers: Sequence[nn.LayerNorm]) -> None:
        super().__init__()
        first = layers[0]
        if first.weight is None or first.bias is None or len(first.normalized_shape) != 1:
            raise ValueError("StackedLayerNorm needs 1-d LayerNorms with gain and bias")
        self.normalized_shape, self.eps = tuple(first.normalized_shape), first.eps
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        return torch.addcmul(self.bias.unsqueeze(-2), normed, self.weight.unsqueeze(-2))


def stacked_noisy(layers: Sequence[NoisyLinear]) -> NoisyLinear:
    """K ``NoisyLinear`` layers as one whose parameters have a leading agent dim (the layer
    computes either shape)."""
    stacked = copy.deepcopy(layers[0])
    for name, _ in layers[0].named_parameters():
        value = torch.stack([getattr(layer, name).detach() for layer in layers])
        setattr(stacked, name, nn.Parameter(value))
    return stacked


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module computing all of ``modules`` at once on inputs with a leading agent dim.

    The modules must share an architecture of ``nn.Linear``, ``NoisyLinear``, ``LayerNorm``
    and parameter-free elementwise layers (ReLU, Tanh), or be such stacks themselves (then
    the result has one more leading dimension): anything else holding parameters is refused.
    """
    template = modules[0]
    stacked = copy.deepcopy(template)
    stackers = {
        nn.Linear: StackedLinear,
        StackedLinear: StackedLinear,
        nn.LayerNorm: StackedLayerNorm,
        StackedLayerNorm: StackedLayerNorm,
        NoisyLinear: stacked_noisy,
    }
    for name, layer in template.named_modules():
        stacker = stackers.get(type(layer))  # type: ignore[call-overload]
        if stacker is not None:
            parent, _, child = name.rpartition(".")
            owner = stacked.get_submodule(parent) if parent else stacked
            setattr(owner, child, stacker([m.get_submodule(name) for m in modules]))
        elif any(True for _ in layer.parameters(recurse=False)):
            raise TypeError(
                f"cannot stack {type(layer).__name__} layers (only Linear, NoisyLinear, LayerNorm)"
            )
    requires_grad = all(p.requires_grad for p in template.parameters())
    return stacked.requires_grad_(requires_grad)


def select_agent(tree: Any, agent: int) -> Any:
    """Agent ``agent``'s part of a stacked state: every tensor with a leading agent dimension
    is indexed (and copied, so a saved file does not carry the whole population's storage);
    scalars, 0-d tensors (optimizer step counters) and other values are shared."""
    if isinstance(tree, dict):
        return {key: select_agent(value, agent) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(select_agent(value, agent) for value in tree)
    if isinstance(tree, Tensor) and tree.dim() > 0:
        return tree[agent].clone()
    return tree


def stack_agents(
    trees: Sequence[Any], where: str = "state", per_agent_scalars: bool = False
) -> Any:
    """The inverse of ``select_agent``: K single-agent states -> one stacked state.

    Values that are shared in a population (step counters, hyperparameters) must agree. 0-d
    tensors are shared too (an optimizer's step counter), unless ``per_agent_scalars``: an
    exploration strategy's 0-d tensors are each agent's own (its noise scale, whether it
    needs a new draw) and stack to (K,); its shared counters are Python numbers.
    """
    first = trees[0]
    if isinstance(first, dict):
        keys = list(first)
        if any(list(tree) != keys for tree in trees):
            raise ValueError(f"{where}: the agents' states have different entries")
        return {
            key: stack_agents([t[key] for t in trees], f"{where}.{key}", per_agent_scalars)
            for key in keys
        }
    if isinstance(first, list | tuple):
        if any(len(tree) != len(first) for tree in trees):
            raise ValueError(f"{where}: the agents' states have different lengths")
        items = [
            stack_agents([t[i] for t in trees], f"{where}[{i}]", per_agent_scalars)
            for i in range(len(first))
        ]
        return type(first)(items)
    if isinstance(first, Tensor) and (first.dim() > 0 or per_agent_scalars):
        return torch.stack(list(trees))
    if isinstance(first, Tensor):
        if any(not torch.equal(tree, first) for tree in trees):
            raise ValueError(f"{where}: the agents disagree ({[t.item() for t in trees]})")
        return first
    if any(tree != first for tree in trees):
        raise ValueError(f"{where}: the agents disagree ({list(trees)})")
    return first
