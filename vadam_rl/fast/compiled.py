"""The whole update as one ``torch.compile`` graph (``TrainConfig.compile``).

On a CPU a DDPG update at batch 100 is its matmuls plus a few hundred small operations,
each paying Python and dispatch time that no matmul hides, and two optimizer steps whose
Python bookkeeping alone costs about as much as their arithmetic. Compiled as one graph, the
elementwise work fuses into a few loops and the Python runs once, at compile time
(docs/performance.md). One graph needs what a CUDA graph needs: an optimizer step with no
Python state inside. ``torch.optim.Optimizer.step`` always breaks a graph (by design:
pytorch/pytorch#104053), so Adam steps through ``AdamGraphStep``; Vadam through its graph
mode (``enter_graph_mode``). Both do their Python part (step counts, Vadam's draws) eagerly
before each compiled call.

Python numbers the update reads (learning rates, betas, tau, gamma) are guarded: changing one
recompiles. The compiled update equals the eager one up to float reassociation (tested).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import types
from collections.abc import Callable

import torch
from torch import Tensor

from vadam_rl.agent.batch import Batch
from vadam_rl.config import TrainConfig
from vadam_rl.optim.vadam import step_along_moments, vadam_step_scalars

Update = Callable[[Batch], dict[str, Tensor]]
Closure = Callable[[], Tensor]
Step = Callable[[Closure], Tensor]


class CompiledUpdate:
    """``update(batch)``, compiled; eager while an optimizer has no state yet (torch creates
    Adam's at its first step), which is the first update of a run and never a resumed one's.

    ``optimizers`` in the order the update steps them (a Vadam's draws are prepared in that
    order, consuming the generator as the eager update does); the update must step them
    through ``steps``, which can run inside the graph.
    """

    def __init__(self, update: Update, optimizers: list[torch.optim.Optimizer]) -> None:
        self.update = update
        # cpp_wrapper: the graph's kernels called from C++, not Python (fewer microseconds
        # per call, for a longer first compilation).
        self.compiled = torch.compile(
            with_own_code(update), fullgraph=True, options={"cpp_wrapper": True}
        )
        self.adam_steps: list[AdamGraphStep] = []
        self._prepare: list[Callable[[], None]] = []
        self._finish: list[Callable[[], None]] = []
        self.steps: list[Step] = []
        for optimizer in optimizers:
            if type(optimizer) is torch.optim.Adam:
                adam_step = AdamGraphStep(optimizer)
                self.adam_steps.append(adam_step)
                self._prepare.append(adam_step.prepare)
                self.steps.append(adam_step.step)
            else:
                optimizer.enter_graph_mode()  # type: ignore[attr-defined]
                self._prepare.append(optimizer.prepare_graph_step)  # type: ignore[attr-defined]
                self._finish.append(optimizer.finish_graph_step)  # type: ignore[attr-defined]
                self.steps.append(optimizer.step)
        self.optimizers = optimizers

    def reset(self) -> None:
        """After the optimizers' ``load_state_dict``: re-read their step counts."""
        for adam_step in self.adam_steps:
            adam_step.reset()

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        # Decided before ``prepare``, which creates a Vadam's state.
        ready = all(optimizer.state for optimizer in self.optimizers)
        try:
            for prepare in self._prepare:
                prepare()
            metrics = self.compiled(batch) if ready else self.update(batch)
        except BaseException:
            # Leave no step half-prepared for a caller that goes on (Adam re-reads its step
            # count; a Vadam keeps the count and draws its prepare consumed).
            for adam_step in self.adam_steps:
                adam_step.reset()
            raise
        finally:
            for finish in self._finish:  # what the graph's side effects may leave undone
                finish()
        return metrics


def with_own_code(update: Update) -> Update:
    """``update`` as a function with a code object of its own.

    torch.compile keeps its compiled versions per code object, guarded by the identity of
    the objects they read; every agent's bound ``_eager_update`` shares one code object, so
    each new agent in a process would add a version, and the ninth would hit dynamo's
    recompile limit (a hard error with fullgraph=True). Its own copy of the code gives each
    agent its own cache.
    """
    func = getattr(update, "__func__", update)
    code = func.__code__.replace()  # a copy
    fresh = types.FunctionType(
        code, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    bound_to = getattr(update, "__self__", None)
    return fresh if bound_to is None else types.MethodType(fresh, bound_to)


class AdamGraphStep:
    """``torch.optim.Adam(...).step`` in the form one compiled graph takes well.

    Like Vadam's graph mode: ``prepare()``, eagerly before each update, advances the step
    count and writes the step's two scalars (step size lr / (1 - beta1^t) and
    sqrt(1 - beta2^t)) into a tensor; ``step(closure)`` runs the closure and Adam's
    arithmetic reading them (torch's own step would break the graph, and its capturable form,
    which computes the bias corrections from the step tensor inside the graph, recomputes two
    ``pow`` per vector of every parameter in the fused CPU loop). Same state, same
    ``state_dict``; equal to ``Adam.step`` up to float rounding (tested). Adam's state is
    created by its first, ordinary ``step``: until then ``prepare`` does nothing.
    """

    def __init__(self, optimizer: torch.optim.Adam) -> None:
        groups = optimizer.param_groups
        unsupported = [key for key in _UNSUPPORTED if any(g.get(key) for g in groups)]
        if unsupported:
            raise ValueError(f"no Adam graph step with {', '.join(unsupported)}")
        self.optimizer = optimizer
        self.scalars: list[Tensor] = []
        self.step_count: int | None = None
        self.prepared = False

    def reset(self) -> None:
        """Read the step count from the state again (after ``load_state_dict``)."""
        self.step_count = None
        self.prepared = False

    def prepare(self) -> None:
        groups = self.optimizer.param_groups
        state = self.optimizer.state
        if not state:
            return
        if self.step_count is None:  # host reads, at the first step or after a reload
            steps = {int(state[p]["step"]) for group in groups for p in group["params"]}
            if len(steps) != 1:
                raise RuntimeError(f"the Adam graph step needs one step count, got {steps}")
            self.step_count = steps.pop()
        if not self.scalars:
            firsts = [group["params"][0] for group in groups]
            self.scalars = [torch.zeros(2, dtype=p.dtype, device=p.device) for p in firsts]
        self.step_count += 1
        for group, scalars in zip(groups, self.scalars, strict=True):
            # Adam's scalars are Vadam's with eps after the bias correction.
            step_size, bias_correction2_sqrt = vadam_step_scalars(
                group["betas"], group["lr"], self.step_count, eps_before_bias_correction=False
            )
            scalars[0].fill_(step_size)
            scalars[1].fill_(bias_correction2_sqrt)
        self.prepared = True

    def step(self, closure: Closure) -> Tensor:
        if not self.prepared:
            return self.optimizer.step(closure)
        self.prepared = False
        with torch.enable_grad():  # as Optimizer.step calls closures
            loss = closure()
        with torch.no_grad():
            for group, scalars in zip(self.optimizer.param_groups, self.scalars, strict=True):
                self._update(group, step_size=scalars[0], bias_correction2_sqrt=scalars[1])
        return loss

    def _update(self, group: dict, step_size: Tensor, bias_correction2_sqrt: Tensor) -> None:
        """torch's foreach Adam (no amsgrad) with the step's scalars read from tensors."""
        params = [p for p in group["params"] if p.grad is not None]
        if len(params) != len(group["params"]):
            raise RuntimeError("the Adam graph step needs a gradient for every parameter")
        states = [self.optimizer.state[p] for p in params]
        torch._foreach_add_([state["step"] for state in states], 1)  # (prepare used its own count)
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


_UNSUPPORTED = ("amsgrad", "maximize", "decoupled_weight_decay", "differentiable")


def steps_in_graph(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``step`` can run inside the compiled graph: torch's Adam (plain, through
    ``AdamGraphStep``), and ours with a graph mode (Vadam; VadaGrad, Vprop, AdamExplore and
    IVON have none yet)."""
    if type(optimizer) is torch.optim.Adam:
        return not any(g.get(key) for g in optimizer.param_groups for key in _UNSUPPORTED)
    return getattr(optimizer, "graph_safe", False)


AUTO_MIN_UPDATES = 20_000
"""``compile: auto`` compiles runs with at least this many updates (on a CPU)."""


def compile_wanted(config: TrainConfig, device: torch.device) -> bool:
    """``config.compile`` resolved: ``auto`` is true on a CPU for runs of at least
    ``AUTO_MIN_UPDATES`` updates, where inductor finds its C++ compiler. A new run saves the
    answer (``resolve_auto``): compiled and eager updates differ in float rounding, so a
    resumed run must take the path of the run it continues."""
    if config.compile != "auto":
        return bool(config.compile)
    long_run = planned_updates(config) >= AUTO_MIN_UPDATES
    return device.type == "cpu" and long_run and cxx_compiler_found()


def resolve_auto(config: TrainConfig, device: torch.device) -> TrainConfig:
    """``config`` with ``compile: auto`` replaced by what it resolves to, for a new run to
    save: a resumed or extended run (``--total-steps``) then keeps its update's arithmetic
    even where ``auto`` would now decide otherwise (another length, no C++ compiler)."""
    if config.compile != "auto":
        return config
    return dataclasses.replace(config, compile=compile_wanted(config, device))


def cxx_compiler_found() -> bool:
    """Whether inductor's C++ compiler for CPU code is on PATH: $CXX, else g++ (clang++ on
    macOS). Without one, ``auto`` stays eager rather than fail at the first update."""
    default = "clang++" if sys.platform == "darwin" else "g++"
    return shutil.which(os.environ.get("CXX", default)) is not None


def planned_updates(config: TrainConfig) -> int:
    learning_steps = max(0, config.total_steps - config.learning_starts)
    return learning_steps // (config.num_envs * config.train_freq) * config.gradient_steps


def why_not_whole_update(
    config: TrainConfig,
    device: torch.device,
    optimizers: list[torch.optim.Optimizer],
    hand_written: bool,
) -> str | None:
    """None where ``config.compile`` compiles the whole update; otherwise why only the
    gradient computations are compiled (or nothing, where compiling is not wanted)."""
    if not compile_wanted(config, device):
        return f"compile={str(config.compile).lower()}"
    if not hand_written:
        return "networks other than the built-in MLPs (autograd update)"
    if not all(steps_in_graph(optimizer) for optimizer in optimizers):
        return "the optimizers cannot all step inside a graph (Adam and Vadam can)"
    return None
