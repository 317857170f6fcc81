"""Forward and backward passes through the learners' MLPs, written out by hand.

Why: at batch 100 an update's matmuls are small, and on CPU autograd's bookkeeping (graph
nodes, saved tensors, transposes, gradient accumulation) is a visible part of an eager update
(``python bench/compile_update.py`` times both); and a compiled update needs gradients it can
trace whole. The actors and critics are plain Linear/ReLU stacks, so their gradients are a
few matmuls each: dW = dz^T x, db = sum(dz), dx = dz W, and ReLU passes dx where its output
is > 0. A learner computes only what its losses need (``agent/ddpg.py``, ``agent/td3.py``
hold the losses and their gradients side by side; tests check each against autograd in
float64).

Works for weights with any leading dimensions: (out, in) with inputs (batch, in), a
population's (K, out, in) with (K, batch, in), TD3's twin critics (K, 2, out, in) with
(K, 2, batch, in). The functions only read weights and return new tensors (``set_gradients``
is the one side effect), so ``torch.compile`` can take them whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.agent.stacking import StackedLinear, stacked_linear
from vadam_rl.optim.per_example import linear_grad_sq_means


@dataclass(frozen=True)
class MLPLayers:
    """The Linear layers of an actor or critic, in order, with ReLU between them.

    ``action_layer``: the layer whose input gets the action appended (critics), else None.
    ``tanh_output``: the last layer is followed by tanh (actors).
    """

    linears: tuple[nn.Module | LinearView, ...]
    action_layer: int | None = None
    tanh_output: bool = False

    def select(self, index: int) -> MLPLayers:
        """The network at ``index`` of the second leading dimension: TD3's first critic of
        every agent is ``twin.select(0)``, weights (K, 2, out, in) -> (K, out, in) views."""
        views = tuple(
            LinearView(m.weight.select(1, index), m.bias.select(1, index)) for m in self.linears
        )
        return MLPLayers(views, self.action_layer, self.tanh_output)


@dataclass(frozen=True)
class LinearView:
    """A linear layer's weight and bias as views of a larger stack's (see ``MLPLayers.select``)."""

    weight: Tensor
    bias: Tensor


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


def _linear(x: Tensor, layer: nn.Module | LinearView) -> Tensor:
    return stacked_linear(x, layer.weight, layer.bias)  # type: ignore[arg-type]


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


def weight_gradients_and_sq_means(
    layers: MLPLayers, acts: Activations, grad_out: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """``weight_gradients`` and, in the same order, what VOGN needs besides them: each
    parameter's h = (1/M) sum_i g_i^2, g_i the gradient of example i's own loss.

    ``grad_out`` is the gradient of the minibatch-*mean* loss, (batch, out), so example i's
    own output gradient is M times its row; each layer's h is then ``linear_grad_sq_means``
    of its input and those (the exact identity for a Linear layer, no per-example copies).
    """
    grads: list[Tensor] = []
    grad_sqs: list[Tensor] = []
    batch = grad_out.shape[-2]
    dz = grad_out
    for i in range(len(layers.linears) - 1, -1, -1):
        layer = layers.linears[i]
        grads[:0] = [dz.mT @ acts.inputs[i], dz.sum(dim=-2)]
        grad_sqs[:0] = linear_grad_sq_means(acts.inputs[i], dz * batch)
        if i > 0:
            dz = _through_relu(dz @ layer.weight, acts.hidden[i - 1])
    return grads, grad_sqs


def set_gradients(layers: MLPLayers, grads: list[Tensor]) -> None:
    """Store ``weight_gradients``' result in the layers' ``.grad``, for their optimizer."""
    for i, layer in enumerate(layers.linears):
        layer.weight.grad, layer.bias.grad = grads[2 * i], grads[2 * i + 1]  # type: ignore[misc]


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


def hand_written_layers(modules: dict[str, nn.Module]) -> dict[str, MLPLayers] | None:
    """Each module's layer view where ``layers_of`` knows them all; None otherwise (then the
    learner takes its gradients from autograd). The one place that decides it."""
    layers = {name: layers_of(module) for name, module in modules.items()}
    if any(found is None for found in layers.values()):
        return None
    return layers  # type: ignore[return-value]
