"""What Vadam, Vprop, VadaGrad and AdamExplore share: a diagonal Gaussian posterior you can sample.

Each of them keeps the posterior mean ``mu`` in the parameters themselves and whatever defines
``sigma`` in ``self.state[p]``. A subclass says how sigma follows from that state
(``_init_state``, ``_group_std``) and how ``step`` updates it; this class supplies the rest of
the ``VariationalOptimizer`` protocol:

- noise eps ~ N(0, I) drawn from the optimizer's ``generator`` (or the global RNG if None), one
  ``torch.randn(p.shape)`` per parameter in ``param_groups`` order, so runs are reproducible and
  tests can replay the exact draws;
- theta = mu + sigma * eps written into the parameters for the closure (or a ``with
  sampled_params()`` body), and mu restored bit for bit from a copy afterwards, in
  ``try/finally`` so an exception never leaves the weights perturbed;
- gradients averaged over ``num_samples`` Monte Carlo draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from vadam_rl import rng
from vadam_rl.rng import Generators

Closure = Callable[[], Any]


class GroupGradients:
    """One param group's parameters that received a gradient, with their MC averages.

    ``grads[i]``: mean over the draws of the minibatch-mean gradient at theta, for
    ``params[i]``; ``grad_sqs[i]``: mean over the draws of its square, or None after a single
    draw (then it is ``grads[i] ** 2`` and kernels square it themselves, as Adam does).
    """

    def __init__(
        self, params: list[Tensor], grads: list[Tensor], grad_sqs: list[Tensor] | None
    ) -> None:
        self.params = params
        self.grads = grads
        self.grad_sqs = grad_sqs


class DiagonalGaussianOptimizer(Optimizer):
    """Base class: q(w) = N(mu, diag(sigma^2)) with mu stored in the parameters.

    Subclasses implement ``_init_state(group, p, state)`` (lazy per-parameter state),
    ``_group_std(group, params) -> (stds, scale)`` (sigma = scale * stds, vectorised over the
    group; the scalar factor rides along in ``addcmul`` and saves a pass over the weights) and
    ``step(closure)``, usually as ``_gradients_at_samples`` followed by a functional update.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        generator: Generators,
    ) -> None:
        super().__init__(params, defaults)
        self.generator = generator
        # Left by sample_into(..., reuse_in_next_step=True) for the next step; not optimizer
        # state (it lives from one env step's action to the same env step's update).
        self._noise_for_next_step: list[Tensor] | None = None
        # Graph mode (``enter_graph_mode``): the eps of each draw, refilled before every step.
        self._graph_mode = False
        self._graph_noise: list[list[Tensor]] = []
        self._graph_step_prepared = False
        check_generator_device(generator, self._params())

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # The generator is not optimizer state (it is the caller's, see ``step``): an
        # unpickled optimizer draws from the global RNG until one is assigned.
        self.__dict__.setdefault("generator", None)
        self.__dict__.setdefault("_noise_for_next_step", None)
        self.__dict__.setdefault("_graph_mode", False)
        self.__dict__.setdefault("_graph_noise", [])
        self.__dict__.setdefault("_graph_step_prepared", False)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._noise_for_next_step = None  # drawn for the state being replaced

    # -- to be provided by subclasses ---------------------------------------------------------

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _group_std(self, group: dict[str, Any], params: list[Tensor]) -> tuple[list[Tensor], float]:
        raise NotImplementedError

    # -- the VariationalOptimizer protocol ----------------------------------------------------

    @torch.no_grad()
    def posterior_std(self) -> list[Tensor]:
        """sigma for each parameter, in ``param_groups`` order (fresh tensors, p's shape)."""
        stds, scales = self._scaled_std()
        if scales != 1.0:
            torch._foreach_mul_(stds, scales)
        return stds

    @contextmanager
    def sampled_params(self) -> Iterator[None]:
        """Write one draw theta = mu + sigma * eps into the parameters; restore mu on exit.

        mu comes back bit for bit (from a copy, not by subtracting the noise), also when the
        body raises. The draw consumes ``generator`` exactly as ``sample_into`` does.
        """
        params = self._params()
        with torch.no_grad():
            stds, scales = self._scaled_std()
            noise = self._draw_noise(params)
            mu = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                torch._foreach_addcmul_(params, stds, noise, scales)
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, mu)

    @torch.no_grad()
    def sample_into(self, params: Iterable[Tensor], *, reuse_in_next_step: bool = False) -> None:
        """Write one draw theta = mu + sigma * eps into ``params``; the trained ones stay mu.

        ``params``: tensors shaped like this optimizer's parameters, in ``param_groups`` order
        (e.g. ``behaviour_actor.parameters()``); they may live on another device or dtype.
        ``reuse_in_next_step``: the next ``step`` evaluates its closure at this eps instead of
        drawing its own (its first draw, once). Until then mu and sigma are unchanged, so that
        step's weights equal ``params`` bit for bit: the Vadam reference code's one draw per
        env step for acting and for the actor's gradient, at half the sampling cost.
        """
        targets = list(params)
        means = self._params()
        check_same_shapes(targets, means)
        stds, scales = self._scaled_std()
        noise = self._draw_noise(means)
        torch._foreach_copy_(targets, torch._foreach_addcmul(means, stds, noise, scales))
        self._noise_for_next_step = noise if reuse_in_next_step else None

    # -- graph mode: a step that a CUDA graph can capture --------------------------------------

    graph_safe = False
    """Whether this optimizer has a graph mode (``enter_graph_mode``)."""

    @property
    def in_graph_mode(self) -> bool:
        return self._graph_mode

    def enter_graph_mode(self) -> None:
        """From now on ``prepare_graph_step()`` must precede every ``step``.

        ``prepare_graph_step`` does, eagerly, everything of a step that lives in Python or
        draws random numbers (the eps of each draw, the step count and what follows from it),
        and leaves the results in device tensors that keep their address; ``step`` then
        only reads those, so a CUDA graph can capture it and replay it with fresh values.
        The generator is consumed in the order the eager step would consume it.
        """
        if not self.graph_safe:
            raise ValueError(f"{type(self).__name__} has no graph mode")
        self._graph_mode = True

    @torch.no_grad()
    def prepare_graph_step(self) -> None:
        """Draw this step's eps into the static noise buffers and advance the step count."""
        if not self._graph_mode:
            raise RuntimeError("prepare_graph_step() without enter_graph_mode()")
        if self._graph_step_prepared:
            raise RuntimeError("prepare_graph_step() twice without a step() in between")
        params = self._params()
        self._ensure_state()
        self._prepare_graph_scalars()  # first: it checks the state before changing it
        if not self._graph_noise:
            self._graph_noise = [
                [torch.empty_like(p) for p in params] for _ in range(self._num_draws())
            ]
        for draw, buffers in enumerate(self._graph_noise):
            noise = self._step_noise(params) if draw == 0 else self._draw_noise(params)
            torch._foreach_copy_(buffers, noise)
        self._graph_step_prepared = True

    def finish_graph_step(self) -> None:
        """What ``step`` does in Python after a prepared step; a replayed graph skips it, so
        whoever replays one calls this after each replay."""
        self._graph_step_prepared = False

    def _num_draws(self) -> int:
        return int(getattr(self, "num_samples", 1))

    def _prepare_graph_scalars(self) -> None:
        """Subclasses with graph mode: advance the step count, fill their device scalars."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------------

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _scaled_std(self) -> tuple[list[Tensor], float | list[float]]:
        """sigma as (stds, scales) with sigma = scale * std; one scale if all groups agree."""
        self._ensure_state()
        stds: list[Tensor] = []
        scales: list[float] = []
        for group in self.param_groups:
            group_stds, scale = self._group_std(group, group["params"])
            stds += group_stds
            scales += [scale] * len(group_stds)
        if all(scale == scales[0] for scale in scales):
            # A Python number avoids wrapping one scalar tensor per parameter.
            return stds, scales[0] if scales else 1.0
        return stds, scales

    def _ensure_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(group, p, state)

    def _draw_noise(self, params: list[Tensor]) -> list[Tensor]:
        """eps ~ N(0, I), one ``torch.randn`` per parameter, in order, from ``generator``."""
        return [rng.randn(p.shape, self.generator, dtype=p.dtype, device=p.device) for p in params]

    def _step_noise(self, params: list[Tensor]) -> list[Tensor]:
        """The eps ``sample_into(..., reuse_in_next_step=True)`` left for this step, else a
        fresh draw. A left eps is used once."""
        noise, self._noise_for_next_step = self._noise_for_next_step, None
        return noise if noise is not None else self._draw_noise(params)

    def _gradients_at_samples(
        self, closure: Closure | None, num_samples: int
    ) -> tuple[Any, list[GroupGradients]]:
        """Evaluate ``closure`` at ``num_samples`` draws theta = mu + sigma * eps.

        Returns the last draw's loss and, per param group, the MC averages of the gradient and
        (for several draws) of its square, as the reference code forms them. On return the
        parameters hold mu again, bit for bit; ``p.grad`` holds the last draw's gradient.
        """
        closure = require_closure(self, closure)
        params = self._params()
        stds, scales = self._scaled_std()
        mu = [p.detach().clone() for p in params]
        grad_sums: list[Tensor | None] = [None] * len(params)
        grad_sq_sums: list[Tensor | None] = [None] * len(params)
        loss = None
        if self._graph_mode:
            if not self._graph_step_prepared:
                raise RuntimeError("in graph mode, call prepare_graph_step() before each step()")
            self.finish_graph_step()  # (a replayed graph does not run this: see its docstring)
        for draw in range(num_samples):
            if self._graph_mode:
                noise = self._graph_noise[draw]
            else:
                noise = self._step_noise(params) if draw == 0 else self._draw_noise(params)
            try:
                torch._foreach_addcmul_(params, stds, noise, scales)
                with torch.enable_grad():
                    loss = closure()
            finally:
                torch._foreach_copy_(params, mu)
            self._accumulate(params, draw, num_samples, grad_sums, grad_sq_sums)

        if num_samples > 1:
            present = [i for i, g in enumerate(grad_sums) if g is not None]
            sums = [grad_sums[i] for i in present]
            sq_sums = [grad_sq_sums[i] for i in present]
            torch._foreach_div_(sums, float(num_samples))  # type: ignore[arg-type]
            torch._foreach_div_(sq_sums, float(num_samples))  # type: ignore[arg-type]
        return loss, self._split_by_group(grad_sums, grad_sq_sums if num_samples > 1 else None)

    @staticmethod
    def _accumulate(
        params: list[Tensor],
        draw: int,
        num_samples: int,
        grad_sums: list[Tensor | None],
        grad_sq_sums: list[Tensor | None],
    ) -> None:
        for i, p in enumerate(params):
            grad = p.grad
            if draw == 0:
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("variational optimizers do not support sparse gradients")
                # With one draw the closure's own gradient is used as is (no copy).
                grad_sums[i] = grad if num_samples == 1 else grad.clone()
                grad_sq_sums[i] = None if num_samples == 1 else grad * grad
            elif grad_sums[i] is not None:
                if grad is None:
                    raise RuntimeError(
                        f"parameter {i} had a gradient at the first draw but none at draw "
                        f"{draw + 1}: the closure must compute the same loss every time"
                    )
                grad_sums[i].add_(grad)  # type: ignore[union-attr]
                grad_sq_sums[i].addcmul_(grad, grad)  # type: ignore[union-attr]

    def _split_by_group(
        self, grads: list[Tensor | None], grad_sqs: list[Tensor | None] | None
    ) -> list[GroupGradients]:
        out = []
        start = 0
        for group in self.param_groups:
            end = start + len(group["params"])
            present = [i for i in range(start, end) if grads[i] is not None]
            out.append(
                GroupGradients(
                    params=[group["params"][i - start] for i in present],
                    grads=[grads[i] for i in present],  # type: ignore[misc]
                    grad_sqs=None if grad_sqs is None else [grad_sqs[i] for i in present],  # type: ignore[misc]
                )
            )
            start = end
        return out


def require_closure(optimizer: Optimizer, closure: Closure | None) -> Closure:
    if closure is None:
        raise ValueError(
            f"{type(optimizer).__name__}.step(closure) needs a closure: it evaluates the loss "
            "at weights drawn from the posterior. Pass a function that zeroes the gradients, "
            "computes the minibatch-mean loss, calls backward() and returns the loss."
        )
    return closure


def check_generator_device(generator: Generators, params: list[Tensor]) -> None:
    """The noise is drawn on each parameter's device, so the generator must live there."""
    if generator is None:
        return
    gen = generator.device
    for p in params:
        dev = p.device
        same_index = gen.index is None or dev.index is None or gen.index == dev.index
        if gen.type != dev.type or not same_index:
            raise ValueError(
                f"Invalid generator: it lives on {gen} but a parameter lives on {dev}; "
                f"create it with torch.Generator(device={str(dev)!r})"
            )


def check_same_shapes(targets: list[Tensor], means: list[Tensor]) -> None:
    target_shapes = [tuple(t.shape) for t in targets]
    mean_shapes = [tuple(m.shape) for m in means]
    if target_shapes != mean_shapes:
        raise ValueError(
            "sample_into needs tensors shaped like the optimizer's parameters, in "
            f"param_groups order: expected {mean_shapes}, got {target_shapes}"
        )


def check_num_samples(num_samples: int) -> int:
    """The number of Monte Carlo draws per step, or a ValueError naming the valid range."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"Invalid num_samples: {num_samples} (must be an integer >= 1)")
    return num_samples


def check_range(name: str, value: float, low: float, high: float | None = None, *, low_open=False):
    """ValueError naming the argument and its valid range unless low <=/< value < high."""
    above = value > low if low_open else value >= low
    below = high is None or value < high
    if not (above and below):
        lower = f"{'>' if low_open else '>='} {low}"
        valid = lower if high is None else f"in [{low}, {high})"
        raise ValueError(f"Invalid {name}: {value} (must be {valid})")
