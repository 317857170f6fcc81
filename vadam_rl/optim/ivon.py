"""IVON (Shen et al., ICML 2024) behind the ``VariationalOptimizer`` interface.

"Variational Learning is Effective for Large Deep Networks", https://arxiv.org/abs/2402.17641,
the successor of Vadam by the same group. The maths is the ``ivon-opt`` package's, used as is
(an optional dependency: ``pip install 'vadam-rl[ivon]'``); this module only adapts its
interface. ``ivon`` is imported on first use of ``IVON``, never at import time:

    from vadam_rl.optim.ivon import IVON   # ImportError naming the package if it is missing
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vadam_rl.optim.gaussian import (
    Closure,
    check_generator_device,
    check_range,
    check_same_shapes,
    require_closure,
)

if TYPE_CHECKING:  # pragma: no cover
    IVON: type[torch.optim.Optimizer]

__all__ = ["IVON", "ivon_available"]


def ivon_available() -> bool:
    """Whether the optional ``ivon-opt`` package can be imported."""
    try:
        import ivon  # noqa: F401
    except ImportError:
        return False
    return True


def __getattr__(name: str) -> Any:  # PEP 562: build the class on first access
    if name == "IVON":
        return _ivon_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _ivon_class() -> type[torch.optim.Optimizer]:
    try:
        import ivon
    except ImportError as err:
        raise ImportError(
            "IVON needs the optional package ivon-opt: pip install ivon-opt "
            "(or pip install 'vadam-rl[ivon]')"
        ) from err

    class IVON(ivon.IVON):
        r"""``ivon.IVON`` with ``step(closure)``, ``posterior_std()`` and ``sample_into()``.

        The posterior is N(mu, sigma^2) with sigma = 1/sqrt(ess * (hess + weight_decay)), so
        with N = ``ess`` and lambda = N * ``weight_decay`` the precision reads N*h + lambda, as
        in ``Vadam``. Differences from using ``ivon.IVON`` directly, all in the interface:

        - ``step(closure)`` draws the ``mc_samples`` perturbations itself (the closure only
          zeroes grads, computes the loss and calls ``backward()``, as for every optimizer
          here) and returns their mean loss, as ``ivon.IVON.step`` does;
        - ``sampled_params()`` restores mu also when its body raises (``ivon``'s does not);
        - noise comes from ``generator`` (``ivon`` draws from the global RNG, so the global
          RNG state is swapped for the generator's around each draw, and restored);
        - the step counter lives in ``self.state`` so that ``state_dict()`` resumes
          bit-identically (``ivon`` keeps it in an attribute that is not saved).

        All parameters must share one device and dtype (an ``ivon`` restriction).
        """

        def __init__(
            self,
            params: Iterable[Tensor] | Iterable[dict[str, Any]],
            lr: float,
            ess: float,
            hess_init: float = 1.0,
            beta1: float = 0.9,
            beta2: float = 0.99999,
            weight_decay: float = 1e-4,
            mc_samples: int = 1,
            *,
            generator: torch.Generator | None = None,
            **ivon_kwargs: Any,
        ) -> None:
            super().__init__(
                params,
                lr=lr,
                ess=ess,
                hess_init=hess_init,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                mc_samples=mc_samples,
                **ivon_kwargs,
            )
            self.generator = generator
            check_generator_device(generator, self._params())

        def add_param_group(self, param_group: dict[str, Any]) -> None:
            super().add_param_group(param_group)
            # ivon accepts beta1 = 1, but its debiasing then divides the momentum, which never
            # moves, by 1 - 1^t = 0: the first step turns every weight into NaN.
            check_range("beta1", self.param_groups[-1]["beta1"], 0.0, 1.0)
            # beta2 = 1 freezes the Hessian estimate at hess_init: sigma would never learn.
            check_range("beta2", self.param_groups[-1]["beta2"], 0.0, 1.0)

        # ivon.IVON stores its step count in ``current_step``; keep it in the saved state.
        @property
        def current_step(self) -> int:
            return self.state["current_step"]

        @current_step.setter
        def current_step(self, value: int) -> None:
            self.state["current_step"] = value

        def _params(self) -> list[Tensor]:
            return [p for group in self.param_groups for p in group["params"]]

        @torch.no_grad()
        def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
            """``mc_samples`` draws, the closure at each, then ivon's update; the mean loss."""
            closure = require_closure(self, closure)
            losses = []
            for _ in range(self.mc_samples):
                with self.sampled_params(train=True), torch.enable_grad():
                    losses.append(closure())
            super().step()
            return sum(losses) / len(losses)

        @contextmanager
        def sampled_params(self, train: bool = False) -> Iterator[None]:
            """One draw in the parameters; mu back on exit, also when the body raises.

            ``train=True`` (used by ``step``) also records the body's gradients for the next
            update, as in ``ivon``.
            """
            params = self._params()
            # ivon swaps ``p.data`` for a perturbed copy and back, so the tensors holding mu
            # now are never written to: pointing the parameters at them again restores mu.
            means = [p.data for p in params]
            inner = super().sampled_params(train=train)
            with _global_rng_from(self.generator):
                inner.__enter__()
            completed = False
            try:
                yield
                completed = True
            finally:
                if completed:
                    inner.__exit__(None, None, None)
                else:
                    for p, mean in zip(params, means, strict=True):
                        p.data = mean

        @torch.no_grad()
        def posterior_std(self) -> list[Tensor]:
            """sigma = 1/sqrt(ess * (hess + weight_decay)) per parameter, in order."""
            sigmas: list[Tensor] = []
            for group in self.param_groups:
                flat = (group["ess"] * (group["hess"] + group["weight_decay"])).rsqrt()
                sigmas += _unflatten(flat, group["params"])
            return sigmas

        @torch.no_grad()
        def sample_into(
            self, params: Iterable[Tensor], *, reuse_in_next_step: bool = False
        ) -> None:
            """One draw, distributed as ivon's, into ``params``; the trained ones stay mu."""
            if reuse_in_next_step:
                raise ValueError(
                    "IVON draws its step's weights inside ivon's sampled_params and cannot "
                    "reuse a draw of sample_into"
                )
            targets = list(params)
            means = self._params()
            check_same_shapes(targets, means)
            draws: list[Tensor] = []
            for group in self.param_groups:
                mean = torch.cat([p.detach().flatten() for p in group["params"]])
                noise = torch.randn(
                    mean.shape, generator=self.generator, dtype=mean.dtype, device=mean.device
                )
                scale = (group["ess"] * (group["hess"] + group["weight_decay"])).sqrt()
                draws += _unflatten(mean + noise / scale, group["params"])
            torch._foreach_copy_(targets, draws)

    IVON.__module__ = __name__
    IVON.__qualname__ = "IVON"
    return IVON


def _unflatten(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Split a flat tensor into tensors shaped like ``like`` (copies, safe to keep)."""
    sizes = [p.numel() for p in like]
    return [
        part.reshape(p.shape).clone()
        for part, p in zip(torch.split(flat, sizes), like, strict=True)
    ]


@contextmanager
def _global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
    """Let code that draws from the global RNG draw from ``generator`` instead.

    The global state is put back afterwards and the generator advanced by what was drawn.
    """
    if generator is None:
        yield
        return
    device = generator.device
    if device.type == "cpu":
        saved = torch.get_rng_state()
        torch.set_rng_state(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(torch.get_rng_state())
            torch.set_rng_state(saved)
    elif device.type == "cuda":
        saved = torch.cuda.get_rng_state(device)
        torch.cuda.set_rng_state(generator.get_state(), device)
        try:
            yield
        finally:
            generator.set_state(torch.cuda.get_rng_state(device))
            torch.cuda.set_rng_state(saved, device)
    else:
        raise ValueError(f"Invalid generator: IVON supports cpu and cuda, not {device.type}")
