"""``torch.optim.Adam`` with a graph mode: a step that one compiled graph can hold.

``torch.optim.Optimizer.step`` always breaks a ``torch.compile`` graph (by design:
pytorch/pytorch#104053), and Adam's capturable form, which computes the bias corrections from
the step tensor inside the graph, recomputes two ``pow`` per vector of every parameter in the
fused CPU loop. In graph mode (the protocol Vadam has, ``base.GraphStepping``)
``prepare_graph_step()``, eagerly before each step, advances the step count and writes the
step's two scalars (step size lr / (1 - beta1^t) and sqrt(1 - beta2^t)) into a device tensor;
``step(closure)`` then runs the closure and Adam's arithmetic reading them. Out of graph mode
it is ``torch.optim.Adam`` unchanged (the fused kernel the learners ask for); its
``state_dict`` is Adam's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vadam_rl.optim.gaussian import Closure
from vadam_rl.optim.vadam import step_along_moments, vadam_step_scalars

_UNSUPPORTED = ("amsgrad", "maximize", "decoupled_weight_decay", "differentiable")


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` plus ``enter_graph_mode`` / ``prepare_graph_step`` /
    ``finish_graph_step`` (see the module docstring). Graph mode supports plain Adam with
    weight decay; not amsgrad, maximize, decoupled weight decay or differentiable.

    Equal to ``torch.optim.Adam.step`` up to float rounding in graph mode (tested). Adam's
    state is created by its first, ordinary ``step``: until then ``prepare_graph_step`` does
    nothing and ``step`` is torch's.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_graph_mode", False)
        self.__dict__.setdefault("_prepared", False)
        self.__dict__.setdefault("_graph_step_count", None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graph_mode = False
        self._prepared = False
        self._graph_step_count: int | None = None
        self._graph_scalars: list[Tensor] = []

    @property
    def graph_safe(self) -> bool:  # type: ignore[override]
        """Whether this optimizer's settings have a graph mode."""
        return not any(g.get(key) for g in self.param_groups for key in _UNSUPPORTED)

    @property
    def in_graph_mode(self) -> bool:
        return self._graph_mode

    def enter_graph_mode(self) -> None:
        if not self.graph_safe:
            unsupported = [k for k in _UNSUPPORTED if any(g.get(k) for g in self.param_groups)]
            raise ValueError(f"no Adam graph mode with {', '.join(unsupported)}")
        self._graph_mode = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._graph_step_count = None  # re-read from the loaded state at the next prepare
        self._prepared = False

    def prepare_graph_step(self) -> None:
        if not self._graph_mode:
            raise RuntimeError("prepare_graph_step() without enter_graph_mode()")
        if not self.state:
            return
        if self._graph_step_count is None:  # host reads, at the first step or after a reload
            counts = {int(self.state[p]["step"]) for g in self.param_groups for p in g["params"]}
            if len(counts) != 1:
                raise RuntimeError(f"Adam's graph mode needs one step count, got {counts}")
            self._graph_step_count = counts.pop()
        if not self._graph_scalars:
            firsts = [group["params"][0] for group in self.param_groups]
            self._graph_scalars = [torch.zeros(2, dtype=p.dtype, device=p.device) for p in firsts]
        self._graph_step_count += 1
        for group, scalars in zip(self.param_groups, self._graph_scalars, strict=True):
            # Adam's scalars are Vadam's with eps after the bias correction.
            step_size, bias_correction2_sqrt = vadam_step_scalars(
                group["betas"], group["lr"], self._graph_step_count, False
            )
            scalars[0].fill_(step_size)
            scalars[1].fill_(bias_correction2_sqrt)
        self._prepared = True

    def finish_graph_step(self) -> None:
        self._prepared = False

    def cancel_graph_step(self) -> None:
        """After a prepared step failed to run: the step count is read from the state again."""
        self._graph_step_count = None
        self._prepared = False

    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        if not self._prepared:
            return super().step(closure)
        return self.graph_step(closure)

    def graph_step(self, closure: Closure | None = None) -> Any:
        """A prepared step (torch's own ``step`` until the state exists and is prepared)."""
        if not self._prepared:
            return super().step(closure)
        self._prepared = False
        loss = None
        if closure is not None:
            with torch.enable_grad():  # as Optimizer.step calls closures
                loss = closure()
        with torch.no_grad():
            for group, scalars in zip(self.param_groups, self._graph_scalars, strict=True):
                self._graph_update(group, step_size=scalars[0], bias_correction2_sqrt=scalars[1])
        return loss

    def _graph_update(self, group: dict, step_size: Tensor, bias_correction2_sqrt: Tensor) -> None:
        """torch's foreach Adam (no amsgrad) with the step's scalars read from tensors."""
        params = [p for p in group["params"] if p.grad is not None]
        if len(params) != len(group["params"]):
            raise RuntimeError("Adam's graph mode needs a gradient for every parameter")
        states = [self.state[p] for p in params]
        # (prepare_graph_step counted on the host; the state's own count follows)
        torch._foreach_add_([state["step"] for state in states], 1)
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        grads = [p.grad for p in params]
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        beta1, beta2 = group["betas"]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        step_along_moments(
            params,
            exp_avgs,
            exp_avg_sqs,
            step_size=step_size,
            bias_correction2_sqrt=bias_correction2_sqrt,
            eps=group["eps"],
        )
        for p in params:  # no graph outputs for them: inductor can keep them internal
            p.grad = None
