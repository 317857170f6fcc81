r"""Per-example gradients: what VOGN needs besides the minibatch gradient.

VOGN's curvature is the mean over the minibatch of the *squared per-example* gradients,
h = (1/M) sum_i g_i * g_i, which one ``backward()`` of the minibatch loss cannot give (it
returns only sum_i g_i). ``per_example_grads`` computes all g_i at once with
``torch.func``: ``vmap`` over the examples of ``grad`` of one example's loss, evaluated
through ``functional_call`` at the module's current parameters (inside ``VOGN.step``'s
closure: the posterior draw). It costs memory for M copies of the gradients.

For an ``nn.Linear`` layer z_i = W x_i + b there is a cheaper exact route, used by
Osawa et al.'s VOGN (PyTorch-SSO's ``DiagCovLinear``): the per-example weight gradient is the
outer product dz_i x_i^T (dz_i = d loss_i / d z_i), so

.. code-block:: text

    sum_i (dz_i x_i^T)^2 = (dz^2)^T (x^2)      (elementwise squares; (out, M) @ (M, in))
    sum_i (dz_i)^2       = column sums of dz^2  (the bias)

from the layer's input x and its output gradient alone, with no per-example copies:
``linear_grad_sq_means``. A hand-written backward pass that already has each layer's x and
dz (with dz of the *mean* loss, multiply it by M first) can call it per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["PerExampleGradients", "linear_grad_sq_means", "per_example_grads"]


class PerExampleGradients(NamedTuple):
    """The minibatch statistics VOGN takes, one tensor per trainable parameter in
    ``module.parameters()`` order, each shaped like the parameter.

    ``grads``: the minibatch-mean gradient (1/M) sum_i g_i (what ``backward()`` of the mean
    loss gives); ``grad_sqs``: h = (1/M) sum_i g_i^2; ``loss``: the minibatch-mean loss, a
    0-d tensor, or (K,) per agent with ``agent_dim``.
    """

    grads: list[Tensor]
    grad_sqs: list[Tensor]
    loss: Tensor


def per_example_grads(
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    *inputs: Tensor,
    agent_dim: bool = False,
) -> PerExampleGradients:
    """Mean gradient and mean squared per-example gradient of ``loss_fn`` over a minibatch.

    ``module`` is called on ``inputs[0]``; ``loss_fn(output, *inputs) -> losses`` maps its
    output (and all the inputs) to one loss per example, shape (batch,), or (K, batch) with
    ``agent_dim``. Each example goes through ``module`` as a batch of one, so any module
    whose examples do not interact (no BatchNorm) works, stacked ones included.

    inputs: (batch, ...) each; with ``agent_dim`` the module is a stack of K agents whose
    parameters have a leading dimension K (``agent.stacking.stack_modules``) and the inputs
    are (K, batch, ...). Then agent k's statistics are in index [k] of every result: the
    agents do not interact, so the gradient of the sum of their losses with respect to the
    stacked parameters holds each agent's own gradient in its slice (a vmap over agents and
    examples, with the module's own stacked forward doing the agents).

    For the DDPG actor, loss_i = -Q(s_i, pi(s_i)):

    .. code-block:: python

        stats = per_example_grads(actor, lambda action, obs: -critic(obs, action)[..., 0], obs)

    Only ``module``'s parameters are differentiated (the critic's are constants here), and no
    ``.grad`` is written: the caller decides what to do with the results.
    """
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in module.named_buffers()}
    batch_axis = 1 if agent_dim else 0

    def one_example(weights: dict[str, Tensor], *example: Tensor) -> tuple[Tensor, Tensor]:
        batch = tuple(x.unsqueeze(batch_axis) for x in example)  # a batch of one
        output = functional_call(module, (weights, buffers), (batch[0],))
        losses = loss_fn(output, *batch)  # (1,) or (K, 1)
        # Summing over agents leaves each agent's gradient in its own slice.
        return losses.sum(), losses.detach().reshape(-1)

    in_dims = (None, *([batch_axis] * len(inputs)))
    per_example, losses = vmap(grad(one_example, has_aux=True), in_dims=in_dims)(
        params, *inputs
    )  # per_example[name]: (batch, *p.shape); losses: (batch,) or (batch, K)
    grads = [per_example[name].mean(dim=0) for name in names]
    grad_sqs = [per_example[name].square().mean(dim=0) for name in names]
    loss = losses.mean(dim=0)
    return PerExampleGradients(grads, grad_sqs, loss if agent_dim else loss.reshape(()))


def linear_grad_sq_means(inputs: Tensor, output_grads: Tensor) -> tuple[Tensor, Tensor]:
    """h for an ``nn.Linear``'s weight and bias from its input and per-example output grads.

    inputs: (..., batch, in), the layer's input x; output_grads: (..., batch, out), dz_i =
    d loss_i / d z_i of each example's *own* loss (M times the gradient of the mean loss).
    Leading dims (agents) are kept. Returns ((..., out, in), (..., out)):
    (1/M) (dz^2)^T (x^2) and (1/M) sum_i dz_i^2, exactly h = (1/M) sum_i g_i^2, without
    forming the per-example gradients (see the module docstring).
    """
    batch = inputs.shape[-2]
    dz_sq = output_grads.square()
    weight = torch.matmul(dz_sq.transpose(-1, -2), inputs.square()) / batch
    return weight, dz_sq.mean(dim=-2)
