"""DDPG's forward and backward passes through its MLPs, written out by hand.

Why: at batch 100 an update's matmuls are small, and on CPU autograd's bookkeeping (graph
nodes, saved tensors, transposes, gradient accumulation) is a visible part of an eager update
(``python bench/compile_update.py`` times both). The actor and critic are plain Linear/ReLU
stacks, so their gradients are a few matmuls each: dW = dz^T x, db = sum(dz), dx = dz W, and
ReLU passes dx where its output is > 0.
Only what DDPG needs is computed: no input gradient of the critic step, no critic weight
gradient in the actor step (just dQ/da).

Works for single networks (weights (out, in), inputs (batch, in)) and for stacked
populations (weights (K, out, in), inputs (K, batch, in)). ``DDPG.update`` uses it for the
networks ``layers_of`` recognises and autograd otherwise; tests check both agree (float64).
The functions only read weights and return new tensors (``set_gradients`` is the one side
effect), so ``torch.compile`` can take them whole (``TrainConfig.compile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from vadam_rl.agent.networks import Actor, Critic


@dataclass(frozen=True)
class MLPLayers:
    """The Linear layers of an actor or critic, in order, with ReLU between them.

    ``action_layer``: the layer whose input gets the action appended (critics), else None.
    ``tanh_output``: the last layer is followed by tanh (actors).
    """

    linears: tuple[nn.Module, ...]
    action_layer: int | None = None
    tanh_output: bool = False


@dataclass
class Activations:
    """What the backward pass needs from the forward pass.

    inputs[i]: layer i's input (batch, in_i); hidden[i]: layer i's ReLU output.
    """

    inputs: list[Tensor]
    hidden: list[Tensor]
    output: Tensor


def layers_of(module: nn.Module) -> MLPLayers | None:
    """The layer view of vadam-rl's ``Actor`` or ``Critic`` (single or stacked), else None
    (also when its layers are not exactly Linear, ReLU, ..., Linear [, Tanh for the actor])."""
    # Exact types: a subclass may compute something else in its forward.
    if type(module) is Actor:
        children = list(module.mu.children())
        if not children or not isinstance(children[-1], nn.Tanh):
            return None
        children, layers = children[:-1], MLPLayers(_linears(children), tanh_output=True)
    elif type(module) is Critic and module.action_layer == 0:
        children = list(module.qf0.children())
        layers = MLPLayers(_linears(children), action_layer=0)
    elif type(module) is Critic:
        children = [*module.state_net.children(), *module.joint_net.children()]
        layers = MLPLayers(_linears(children), action_layer=module.action_layer)
    else:
        return None
    return layers if _is_relu_mlp(children) else None


def _linears(children: list[nn.Module]) -> tuple[nn.Module, ...]:
    return tuple(layer for layer in children if _is_linear(layer))


def _is_linear(layer: nn.Module) -> bool:
    from vadam_rl.agent.stacking import StackedLinear  # the population imports DDPG

    # Exactly these types, computing x W^T + b from their own weight and bias: no
    # parametrisation (weight_norm) and no hooks, which the hand-written pass would bypass.
    return (
        type(layer) in (nn.Linear, StackedLinear)
        and layer.bias is not None
        and not parametrize.is_parametrized(layer)
        and not (layer._forward_hooks or layer._forward_pre_hooks)
    )


def _is_relu_mlp(children: list[nn.Module]) -> bool:
    """Linear, ReLU, Linear, ReLU, ..., Linear: what ``forward`` computes."""
    return len(children) % 2 == 1 and all(
        isinstance(layer, nn.ReLU) if i % 2 else _is_linear(layer)
        for i, layer in enumerate(children)
    )


def _linear(x: Tensor, layer: nn.Module) -> Tensor:
    weight, bias = layer.weight, layer.bias
    if weight.dim() == 2:
        return torch.addmm(bias, x, weight.t())
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def forward(layers: MLPLayers, x: Tensor, action: Tensor | None = None) -> Activations:
    """The network's output, keeping each layer's input and ReLU output. Call under no_grad."""
    inputs: list[Tensor] = []
    hidden: list[Tensor] = []
    last = len(layers.linears) - 1
    for i, layer in enumerate(layers.linears):
        if i == layers.action_layer:
            x = torch.cat([x, action], dim=-1)  # type: ignore[list-item]
        inputs.append(x)
        x = _linear(x, layer)
        if i < last:
            x = x.relu_()
            hidden.append(x)
    if layers.tanh_output:
        x = x.tanh_()
    return Activations(inputs, hidden, x)


def weight_gradients(layers: MLPLayers, acts: Activations, grad_out: Tensor) -> list[Tensor]:
    """[dW_0, db_0, dW_1, db_1, ...] from dL/d(last Linear's output), (batch, out)."""
    grads: list[Tensor] = []
    dz = grad_out
    for i in range(len(layers.linears) - 1, -1, -1):
        layer = layers.linears[i]
        grads[:0] = [dz.mT @ acts.inputs[i], dz.sum(dim=-2)]
        if i > 0:
            dz = _through_relu(dz @ layer.weight, acts.hidden[i - 1])
    return grads


def set_gradients(layers: MLPLayers, grads: list[Tensor]) -> None:
    """Store ``weight_gradients``' result in the layers' ``.grad``, for their optimizer."""
    for i, layer in enumerate(layers.linears):
        layer.weight.grad, layer.bias.grad = grads[2 * i], grads[2 * i + 1]


def action_gradient(
    layers: MLPLayers, acts: Activations, grad_out: Tensor, action_dim: int
) -> Tensor:
    """dL/d(action), (batch, action_dim), for a critic; its weights' grads are left alone."""
    if layers.action_layer is None:
        raise ValueError("action_gradient needs a critic (a network with an action input)")
    dz = grad_out
    for i in range(len(layers.linears) - 1, layers.action_layer, -1):
        dz = _through_relu(dz @ layers.linears[i].weight, acts.hidden[i - 1])
    # The action is the last action_dim columns of the action layer's input.
    return dz @ layers.linears[layers.action_layer].weight[..., -action_dim:]


def _through_relu(dx: Tensor, relu_output: Tensor) -> Tensor:
    """ReLU's backward: dx where the ReLU's output is positive, 0 elsewhere (as autograd).

    dx may carry appended action columns (the critic's action layer); they are dropped.
    """
    # The output is >= 0, so its sign is the 0/1 mask: one float multiply, where a bool
    # mask or torch.where(output > 0, dx, 0) costs a dtype conversion more on CPU.
    return dx[..., : relu_output.shape[-1]] * relu_output.sign()


def tanh_backward(grad: Tensor, tanh_output: Tensor) -> Tensor:
    """d tanh(z) / dz = 1 - tanh(z)^2."""
    return grad * (1.0 - tanh_output.square())
