"""DDPG's forward and backward passes through its MLPs, written out by hand.

Why: at batch 100 an update's matmuls are small, and on CPU autograd's bookkeeping (graph
nodes, saved tensors, transposes, gradient accumulation) is a visible part of an eager update
(``python bench/compile_update.py`` times both). The actor and critic are plain Linear/ReLU
stacks, so their gradients are a few matmuls each: dW = dz^T x, db = sum(dz), dx = dz W, and
ReLU passes dx where its output is > 0.
Only what DDPG needs is computed: no input gradient of the critic step, no critic weight
gradient in the actor step (just dQ/da).

Works for single networks (weights (out, in), inputs (batch, in)) and for stacked
populations (weights (K, out, in), inputs (K, batch, in)). ``HandWrittenStep`` is the
agent's train step for the networks ``layers_of`` recognises (``vadam_rl.fast.select``);
tests check it against autograd (float64).
The functions only read weights and return new tensors (``set_gradients`` is the one side
effect), so ``torch.compile`` can take them whole (``TrainConfig.compile``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.agent.stacking import StackedLinear
from vadam_rl.fast.compiled import Step, with_own_code

if TYPE_CHECKING:
    from vadam_rl.agent.ddpg import DDPG


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


class HandWrittenStep:
    """``DDPG.train_step`` with these hand-written gradients: the same losses, the same
    closures for the optimizers, no autograd graph. Build it with ``hand_written_step``.

    ``critic_step`` / ``actor_step`` step the optimizers (a compiled update replaces them
    with steps that can run inside its graph); ``compile_gradients`` compiles the three pure
    gradient functions alone, for optimizers whose steps cannot join a graph.
    """

    def __init__(self, agent: DDPG, layers: dict[str, MLPLayers]) -> None:
        self.agent = agent
        self.layers = layers
        self.critic_step: Step = agent.critic_optimizer.step
        self.actor_step: Step = agent.actor_optimizer.step
        self.td_target: Callable[..., Tensor] = self._td_target
        self.critic_gradients: Callable[..., tuple[list[Tensor], Tensor]] = self._critic_grads
        self.actor_gradients: Callable[..., tuple[list[Tensor], Tensor]] = self._actor_grads

    def compile_gradients(self) -> None:
        self.td_target = torch.compile(with_own_code(self._td_target))
        self.critic_gradients = torch.compile(with_own_code(self._critic_grads))
        self.actor_gradients = torch.compile(with_own_code(self._actor_grads))

    @torch.no_grad()
    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        target_q = self.td_target(batch)

        # Optimizers call closures under enable_grad (autograd closures need it); these need
        # no graph, so they switch it off again. set_gradients replaces every .grad, so no
        # zero_grad (which a compiled graph could not trace either).
        def critic_closure() -> Tensor:
            with torch.no_grad():
                grads, loss = self.critic_gradients(batch.obs, batch.actions, target_q)
            set_gradients(self.layers["critic"], grads)
            return loss

        critic_loss = self.critic_step(critic_closure)

        def actor_closure() -> Tensor:
            with torch.no_grad():
                grads, loss = self.actor_gradients(batch.obs)
            set_gradients(self.layers["actor"], grads)
            return loss

        actor_loss = self.actor_step(actor_closure)
        return target_q, critic_loss, actor_loss

    # The three pure functions; weights are read from the layers when called, so Vadam's
    # perturbation applies.

    def _td_target(self, batch: Batch) -> Tensor:
        layers = self.layers
        next_action = forward(layers["actor_target"], batch.next_obs).output
        next_q = forward(layers["critic_target"], batch.next_obs, next_action).output
        return self.agent.td_target(next_q, batch)

    def _critic_grads(
        self, obs: Tensor, actions: Tensor, target_q: Tensor
    ) -> tuple[list[Tensor], Tensor]:
        """Gradients of the minibatch-mean squared TD error, and that loss."""
        critic = self.layers["critic"]
        acts = forward(critic, obs, actions)
        error = acts.output - target_q
        # d/dq of the minibatch mean of error^2 (each agent's own mean in a population).
        grads = weight_gradients(critic, acts, error * (2.0 / error.shape[-2]))
        return grads, self.agent.batch_mean(error.square())

    def _actor_grads(self, obs: Tensor) -> tuple[list[Tensor], Tensor]:
        """Gradients of -mean Q(s, pi(s)) w.r.t. the actor, and that loss."""
        actor, critic = self.layers["actor"], self.layers["critic"]
        actor_acts = forward(actor, obs)
        action = actor_acts.output
        critic_acts = forward(critic, obs, action)
        q = critic_acts.output
        dq = torch.full_like(q, -1.0 / q.shape[-2])  # d/dq of -mean(q)
        d_action = action_gradient(critic, critic_acts, dq, action.shape[-1])
        grads = weight_gradients(actor, actor_acts, tanh_backward(d_action, action))
        return grads, -self.agent.batch_mean(q)


def hand_written_step(agent: DDPG) -> HandWrittenStep | None:
    """The hand-written train step where every network of ``agent`` is one ``layers_of``
    knows; None otherwise (the agent keeps autograd)."""
    nets = {
        "actor": agent.actor,
        "critic": agent.critic,
        "actor_target": agent.actor_target,
        "critic_target": agent.critic_target,
    }
    layers = {name: layers_of(module) for name, module in nets.items()}
    if any(found is None for found in layers.values()):
        return None
    return HandWrittenStep(agent, layers)  # type: ignore[arg-type]
