"""The update compiled as one ``torch.compile`` graph per phase (``TrainConfig.compile``).

On a CPU a DDPG update at batch 100 is its matmuls plus a few hundred small operations,
each paying Python and dispatch time that no matmul hides, and two optimizer steps whose
Python bookkeeping alone costs about as much as their arithmetic. Compiled as one graph, the
elementwise work fuses into a few loops and the Python runs once, at compile time
(docs/performance.md). One graph needs what a CUDA graph needs: optimizer steps with no
Python state inside: each optimizer's graph mode (``vadam_rl.optim.base.GraphStepping``:
Adam and Vadam), whose Python part (step counts, Vadam's draws) runs eagerly before each
compiled call.

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
from vadam_rl.optim.base import GraphStepping, has_graph_mode

Update = Callable[[Batch], dict[str, Tensor]]


class CompiledUpdate:
    """One update phase, compiled; eager while an optimizer has no state yet (torch creates
    Adam's at its first step), which is the phase's first call in a run and never a resumed
    one's.

    ``optimizers``: those the phase steps, in that order (a Vadam's draws are prepared in that
    order, consuming the generator as the eager update does); each is put in graph mode.
    """

    def __init__(self, update: Update, optimizers: list[torch.optim.Optimizer]) -> None:
        self.update = update
        # cpp_wrapper: the graph's kernels called from C++, not Python (fewer microseconds
        # per call, for a longer first compilation).
        self.compiled = torch.compile(
            with_own_code(update), fullgraph=True, options={"cpp_wrapper": True}
        )
        self.optimizers: list[GraphStepping] = []
        for optimizer in optimizers:
            if not isinstance(optimizer, GraphStepping):
                raise TypeError(f"{type(optimizer).__name__} has no graph mode")
            optimizer.enter_graph_mode()
            self.optimizers.append(optimizer)

    def reset(self) -> None:
        """After the optimizers' ``load_state_dict`` (which re-read their step counts)."""

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        # Decided before ``prepare_graph_step``, which creates a Vadam's state.
        ready = all(optimizer.state for optimizer in self.optimizers)  # type: ignore[attr-defined]
        try:
            for optimizer in self.optimizers:
                optimizer.prepare_graph_step()
            metrics = self.compiled(batch) if ready else self.update(batch)
        except BaseException:
            # Leave no step half-prepared for a caller that goes on (Adam re-reads its step
            # count; a Vadam keeps the count and draws its prepare consumed).
            for optimizer in self.optimizers:
                cancel = getattr(optimizer, "cancel_graph_step", None)
                if cancel is not None:
                    cancel()
            raise
        finally:
            for optimizer in self.optimizers:  # what the graph's side effects may leave undone
                optimizer.finish_graph_step()
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


def why_not_compiled(
    config: TrainConfig,
    device: torch.device,
    optimizers: list[torch.optim.Optimizer],
    hand_written: bool,
) -> str | None:
    """None where ``config.compile`` compiles the update; otherwise why it stays eager."""
    if not compile_wanted(config, device):
        return f"compile={str(config.compile).lower()}"
    if not hand_written:
        return "networks other than the built-in MLPs (autograd update)"
    if not all(has_graph_mode(optimizer) for optimizer in optimizers):
        return "the optimizers cannot all step inside a graph (Adam and Vadam can)"
    return None
