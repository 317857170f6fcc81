"""The one place that decides which speed-ups a learner's update gets (``speed_up``).

A learner's update is a few phases (``ActorCritic.phases``: DDPG one, TD3 two), each a
function of the minibatch, and the eager ``begin_update`` that picks one. Each phase is
wrapped from outside: compiled as one graph (``config.compile``) or, on CUDA, captured and
replayed as a CUDA graph (``config.cuda_graph``), where the learner's gradients are the
hand-written ones and its optimizers can step inside a graph; otherwise it runs as it is.
Each computes what the eager phase computes, up to float reassociation (tested);
``python bench/compile_update.py`` and ``bench/cuda_graph_update.py`` time them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.config import TrainConfig
from vadam_rl.fast import cuda_graph
from vadam_rl.fast.compiled import CompiledUpdate, compile_wanted, why_not_compiled

Update = Callable[[Batch], dict[str, Tensor]]


def why_autograd(config: TrainConfig) -> str | None:
    """Why ``config``'s networks get no hand-written gradients, and so neither a compiled
    update nor a CUDA graph (None: they do). Said before the learner is built; a test
    checks it against what the built learner found."""
    if config.exploration.kind == "noisy-net":
        return "the actor's noisy layers"
    norms = [name for name in ("actor", "critic") if getattr(config, name).layer_norm]
    if norms:
        return f"LayerNorm in the {' and '.join(norms)}"
    return None


class PhasedUpdate:
    """``update(batch)``: the learner's eager ``begin_update`` picks the phase, whose
    (possibly wrapped) function performs it."""

    def __init__(self, learner: ActorCritic, runs: dict[str, Update]) -> None:
        self.learner = learner
        self.runs = runs

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        return self.runs[self.learner.begin_update(batch)](batch)


@dataclass
class SpeedUps:
    """What ``speed_up`` gave a learner's update, and why not more."""

    update: Update
    """What training calls for each update."""
    compile_scope: str
    """"whole update" or "none (why)"."""
    eager_reason: str | None
    """Why the update is not a CUDA graph (None: it is)."""
    compiled: dict[str, CompiledUpdate] = field(default_factory=dict)
    graphed: dict[str, cuda_graph.GraphedUpdate] = field(default_factory=dict)
    graphed_optimizers: list = field(default_factory=list)

    def reset(self) -> None:
        """After the learner's ``load_state_dict``: the wrappers re-read what they hold."""
        if self.graphed:  # the graphs hold the replaced tensors' addresses
            # The loaded param groups may say capturable=False.
            cuda_graph.set_capturable(self.graphed_optimizers)
            for graphed in self.graphed.values():
                graphed.reset()
        for compiled in self.compiled.values():
            compiled.reset()


def speed_up(learner: ActorCritic, config: TrainConfig) -> SpeedUps:
    """The fastest update ``config`` asks for and ``learner`` can have, wrapping each of its
    phases from outside; a reload of the learner resets the wrappers."""
    device = learner.device
    optimizers = learner.optimizers()
    eager_reason = cuda_graph.why_eager(config, device, optimizers, learner.hand_written)
    reason = why_not_compiled(config, device, optimizers, learner.hand_written)
    runs: dict[str, Update] = {name: phase.run for name, phase in learner.phases.items()}
    result = SpeedUps(PhasedUpdate(learner, runs), "", eager_reason)
    if eager_reason is None:
        for name, phase in learner.phases.items():
            prepare, after_replay = cuda_graph.make_capturable(list(phase.optimizers))
            graphed = cuda_graph.GraphedUpdate(
                phase.run, prepare=prepare, after_replay=after_replay
            )
            result.graphed[name] = runs[name] = graphed
        result.graphed_optimizers = optimizers
    if not compile_wanted(config, device) or reason is not None:
        result.compile_scope = f"none ({reason})"
    else:
        result.compile_scope = "whole update"
        if not result.graphed:
            for name, phase in learner.phases.items():
                compiled = CompiledUpdate(phase.run, list(phase.optimizers))
                result.compiled[name] = runs[name] = compiled
    learner.load_state_dict_post_hooks.append(result.reset)
    return result
