"""One training update, captured once as a CUDA graph and replayed (``TrainConfig.cuda_graph``).

On a GPU an eager DDPG update is launch-bound: many small kernels, each costing more host
time than device time (replaying the same kernels as one graph made it 4.2x faster on an
H200: docs/performance.md). Replaying a captured graph launches them all at once.
Capture records the addresses of every tensor the update touches, so the update must keep
its tensors in place: parameters and optimizer state are updated in place, the minibatch is
copied into static tensors before each replay, and the optimizer must be *capturable*
(its step count on the device, as ``torch.optim.Adam(capturable=True)``, or, for Vadam,
its draws and step count prepared eagerly before each replay: ``enter_graph_mode``). Anything that
replaces those tensors (loading a checkpoint) must call ``reset``: the next call recaptures.
Python numbers the update reads (learning rates, tau, gamma) are fixed at capture too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vadam_rl.agent.batch import Batch
from vadam_rl.config import TrainConfig
from vadam_rl.fast.compiled import compile_wanted
from vadam_rl.optim.base import GraphStepping, has_graph_mode

Update = Callable[[Batch], dict[str, Tensor]]


class GraphedUpdate:
    """``update(batch)`` eagerly for the first ``warmup`` calls, then by graph replay.

    The eager calls are real updates (run on a side stream, as capture wants: lazily created
    state such as Adam's moments and cuBLAS workspaces exists before capture). The call that
    captures also replays, so every call performs exactly one update. Returned metrics are
    copies: the graph's own outputs are overwritten by the next replay.
    """

    def __init__(
        self,
        update: Update,
        warmup: int = 3,
        prepare: Callable[[], None] | None = None,
        after_replay: Callable[[], None] | None = None,
    ) -> None:
        """``prepare``: called eagerly before every update, replays included (what a graph
        cannot hold: random draws, Python step counts; see ``enter_graph_mode``).
        ``after_replay``: the Python bookkeeping of the captured update that a replay skips."""
        self.update = update
        self.warmup = warmup
        self.prepare = prepare
        self.after_replay = after_replay
        self._side_stream: torch.cuda.Stream | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the graph (after the update's tensors were replaced); recapture later."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_batch: Batch | None = None
        self.static_metrics: dict[str, Tensor] = {}
        self.eager_calls = 0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        # Check before ``prepare``: it advances step counts and consumes draws, which an
        # update that then fails to run would leave advanced.
        if self.static_batch is not None:
            for static, value in zip(self.static_batch, batch, strict=True):
                if static.shape != value.shape:
                    raise ValueError(
                        f"a CUDA-graphed update needs minibatches of one shape: captured "
                        f"{tuple(static.shape)}, got {tuple(value.shape)}"
                    )
        if self.prepare is not None:
            self.prepare()
        if self.graph is None:
            if self.eager_calls < self.warmup:
                self.eager_calls += 1
                return self._on_side_stream(batch)
            self._capture(batch)
        assert self.graph is not None and self.static_batch is not None
        for static, value in zip(self.static_batch, batch, strict=True):
            static.copy_(value)
        self.graph.replay()
        if self.after_replay is not None:
            self.after_replay()
        return {name: value.clone() for name, value in self.static_metrics.items()}

    def _on_side_stream(self, batch: Batch) -> dict[str, Tensor]:
        # One stream for all warmups (``torch.cuda.Stream()`` hands out pooled streams round
        # robin), and metrics copied on the main stream: the caller frees them there, and a
        # block allocated on the side stream may otherwise be reused there while still read.
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream()
        stream = self._side_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            metrics = self.update(batch)
        torch.cuda.current_stream().wait_stream(stream)
        out = {name: value.clone() for name, value in metrics.items()}
        for value in metrics.values():
            value.record_stream(torch.cuda.current_stream())
        return out

    def _capture(self, batch: Batch) -> None:
        """Record one update on static copies of ``batch``; capture does not run it."""
        self.static_batch = Batch(*(field.clone() for field in batch))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_metrics = self.update(self.static_batch)
        self.graph = graph


def make_capturable(
    optimizers: list[torch.optim.Optimizer],
) -> tuple[Callable[[], None] | None, Callable[[], None] | None]:
    """Ready optimizers for capture; returns what must run before each update and after each
    replay, if anything.

    torch optimizers switch to ``capturable=True`` (same arithmetic, step count on the
    device; call again after ``load_state_dict``, which restores the saved flags). Ours with
    a graph mode (Vadam) enter it: their draws and step counts move to ``prepare_graph_step``.
    """
    set_capturable(optimizers)
    graph_mode = [o for o in optimizers if "capturable" not in o.defaults]
    graph_mode = [o for o in graph_mode if isinstance(o, GraphStepping)]
    for optimizer in graph_mode:
        optimizer.enter_graph_mode()
    if not graph_mode:
        return None, None

    def prepare() -> None:
        for optimizer in graph_mode:
            optimizer.prepare_graph_step()

    def after_replay() -> None:
        for optimizer in graph_mode:
            optimizer.finish_graph_step()

    return prepare, after_replay


def set_capturable(optimizers: list[torch.optim.Optimizer]) -> None:
    """``capturable=True`` in every param group of the torch optimizers among these."""
    for optimizer in optimizers:
        if "capturable" in optimizer.defaults:
            for group in optimizer.param_groups:
                group["capturable"] = True


def capturable(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` can step inside a CUDA graph: torch optimizers with that option
    (Adam), and ours with a graph mode (Vadam; VadaGrad, Vprop, AdamExplore and IVON have
    none yet)."""
    return "capturable" in optimizer.defaults or has_graph_mode(optimizer)


def why_eager(
    config: TrainConfig,
    device: torch.device,
    optimizers: list[torch.optim.Optimizer],
    hand_written: bool,
) -> str | None:
    """None where ``config.cuda_graph`` gets a graphed update; otherwise why it runs eagerly."""
    if not config.cuda_graph:
        return "cuda_graph=false"
    if device.type != "cuda":
        return f"no CUDA graphs on {device.type}"
    if compile_wanted(config, device):
        return "compile=true takes precedence"
    if not hand_written:
        return "networks other than the built-in MLPs (autograd update)"
    if not all(capturable(optimizer) for optimizer in optimizers):
        return "the optimizers are not all capturable (Adam and Vadam are, the others not yet)"
    return None
