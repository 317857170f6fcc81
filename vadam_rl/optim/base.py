"""The interface every variational optimizer offers to the rest of vadam-rl.

A variational optimizer trains the mean ``mu`` of a Gaussian posterior N(mu, sigma^2) over the
weights and keeps ``sigma`` in its own state. Agent code (exploration, logging) talks to it only
through this protocol, so DDPG never imports Vadam, VadaGrad, Vprop, IVON or AdamExplore by name:

    if isinstance(actor_optimizer, VariationalOptimizer):
        actor_optimizer.sample_into(behaviour_actor.parameters())

Contract (all implementations are tested against it):

- ``step(closure)``: draws a perturbation, evaluates ``closure`` (zero grads, minibatch-mean
  loss, ``backward()``, return the loss) at the perturbed weights, restores ``mu`` exactly and
  updates the posterior. ``closure`` is required.
- ``posterior_std()``: one sigma tensor per parameter, in ``param_groups`` order, same shape and
  device as the parameter (a fresh tensor: callers may keep it).
- ``sampled_params()``: context manager that writes one posterior draw into the parameters and
  restores ``mu`` bit for bit on exit, also when the body raises.
- ``sample_into(params, reuse_in_next_step=False)``: writes one posterior draw into *other*
  tensors of the same shapes, in ``param_groups`` order (for example
  ``behaviour_actor.parameters()``), without touching the trained parameters. With
  ``reuse_in_next_step=True`` the next ``step`` evaluates its closure at that same draw
  (optimizers that cannot, IVON, raise ``ValueError``).

The parameters the optimizer was built with always hold ``mu`` outside of ``step`` and
``sampled_params``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class VariationalOptimizer(Protocol):
    """A ``torch.optim.Optimizer`` that also carries a sampleable Gaussian posterior."""

    param_groups: list[dict]

    def posterior_std(self) -> list[Tensor]:
        """sigma for each parameter, in ``param_groups`` order."""
        ...

    def sampled_params(self) -> AbstractContextManager[None]:
        """Write one draw theta = mu + sigma * eps into the parameters; restore mu on exit."""
        ...

    def sample_into(self, params: Iterable[Tensor], *, reuse_in_next_step: bool = False) -> None:
        """Write one draw theta = mu + sigma * eps into ``params`` (same shapes, same order);
        ``reuse_in_next_step``: the next ``step`` evaluates its closure at this draw."""
        ...
