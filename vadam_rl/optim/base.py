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

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class GraphStepping(Protocol):
    """An optimizer with a graph mode: a ``step`` that a compiled graph or a CUDA graph can
    hold (``Vadam``, ``vadam_rl.optim.Adam``). After ``enter_graph_mode()``, each ``step``
    must follow a ``prepare_graph_step()`` (eager: step counts, random draws, written into
    tensors that keep their address) and be followed by ``finish_graph_step()``."""

    graph_safe: bool

    @property
    def in_graph_mode(self) -> bool: ...

    def enter_graph_mode(self) -> None: ...

    def prepare_graph_step(self) -> None: ...

    def graph_step(self, closure: Callable[[], Any]) -> Any:
        """The step of graph mode (what ``step`` does there), as a plain method."""
        ...

    def finish_graph_step(self) -> None: ...


def take_step(optimizer: object, closure: Callable[[], Any]) -> Any:
    """``optimizer.step(closure)``; in graph mode ``graph_step(closure)``, the same step
    without the profiler hook torch.optim wraps around every ``step`` (a
    ``record_function``, which ``torch.compile`` can only drop, with a warning each time it
    compiles). What the learners call."""
    if getattr(optimizer, "in_graph_mode", False):
        return optimizer.graph_step(closure)  # type: ignore[attr-defined]
    return optimizer.step(closure)  # type: ignore[attr-defined]


def has_graph_mode(optimizer: object) -> bool:
    """Whether ``optimizer`` can step inside a graph (the one check the speed-ups ask)."""
    return isinstance(optimizer, GraphStepping) and bool(optimizer.graph_safe)
