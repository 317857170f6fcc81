"""The one place that decides which speed-ups a run's update gets (``speed_up``).

In order: hand-written gradients for the built-in MLPs (autograd otherwise); then either the
whole update compiled as one graph (``config.compile``; or only the gradient functions,
where an optimizer cannot step inside a graph), or, on CUDA, the update replayed as a CUDA
graph (``config.cuda_graph``). Each computes what the plain ``DDPG.update`` computes, up to
float reassociation (tested); ``python bench/compile_update.py`` and
``bench/cuda_graph_update.py`` time them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vadam_rl.agent.ddpg import DDPG
from vadam_rl.config import TrainConfig
from vadam_rl.fast import cuda_graph
from vadam_rl.fast.backprop import HandWrittenStep, hand_written_step
from vadam_rl.fast.compiled import CompiledUpdate, compile_wanted, why_not_whole_update


def why_autograd(config: TrainConfig) -> str | None:
    """Why ``config``'s networks get no hand-written backprop, and so neither a compiled
    whole update nor a CUDA graph (None: they do). Said before the agent is built; a test
    checks it against what ``hand_written_step`` finds on the built networks."""
    if config.exploration.kind == "noisy-net":
        return "the actor's noisy layers"
    norms = [name for name in ("actor", "critic") if getattr(config, name).layer_norm]
    if norms:
        return f"LayerNorm in the {' and '.join(norms)}"
    return None


@dataclass
class SpeedUps:
    """What ``speed_up`` applied to an agent, and why not more."""

    hand_written: HandWrittenStep | None
    compile_scope: str
    """"whole update", "gradients only (why)" or "none (why)"."""
    eager_reason: str | None
    """Why the update is not a CUDA graph (None: it is)."""
    compiled: CompiledUpdate | None
    graphed: cuda_graph.GraphedUpdate | None

    def reset(self) -> None:
        """After the agent's ``load_state_dict``: the wrappers re-read what they hold."""
        if self.graphed is not None:  # the graph holds the replaced tensors' addresses
            # The loaded param groups may say capturable=False.
            cuda_graph.set_capturable(self.graphed_optimizers or [])
            self.graphed.reset()
        if self.compiled is not None:
            self.compiled.reset()

    graphed_optimizers: list[torch.optim.Optimizer] | None = None


def speed_up(agent: DDPG, config: TrainConfig) -> SpeedUps:
    """Apply to ``agent`` the speed-ups ``config`` asks for and the agent can have: its
    ``train_step`` and ``update`` are replaced in place, and a reload re-reads them."""
    device = next(agent.actor.parameters()).device
    hand_written = hand_written_step(agent)
    if hand_written is not None:
        agent.train_step = hand_written
    # Critic first: the update's order, so prepared draws consume the generator as the
    # eager update would.
    optimizers = [agent.critic_optimizer, agent.actor_optimizer]
    eager_update = agent.update
    eager_reason = cuda_graph.why_eager(config, device, optimizers, hand_written is not None)
    reason = why_not_whole_update(config, device, optimizers, hand_written is not None)
    result = SpeedUps(hand_written, "", eager_reason, None, None)
    if eager_reason is None:
        prepare, after_replay = cuda_graph.make_capturable(optimizers)
        result.graphed = cuda_graph.GraphedUpdate(
            eager_update, prepare=prepare, after_replay=after_replay
        )
        result.graphed_optimizers = optimizers
        agent.update = result.graphed  # type: ignore[method-assign]
    if not compile_wanted(config, device):
        result.compile_scope = f"none ({reason})"
    elif reason is not None:
        result.compile_scope = f"gradients only ({reason})"
        if hand_written is not None:
            hand_written.compile_gradients()
    else:
        result.compile_scope = "whole update"
        if result.graphed is None:
            result.compiled = CompiledUpdate(eager_update, optimizers)
            assert hand_written is not None  # (why_not_whole_update checked it)
            hand_written.critic_step, hand_written.actor_step = result.compiled.steps
            agent.update = result.compiled  # type: ignore[method-assign]
    agent.load_state_dict_post_hooks.append(result.reset)
    return result
