"""Small float64 learners and minibatches for the learner tests (DDPG and TD3)."""

from __future__ import annotations

import torch

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.agent.registry import make_learner
from vadam_rl.config import TrainConfig
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators

OBS, ACT, B = 5, 3, 7
CPU = torch.device("cpu")


def make_config(
    optimizer: str = "adam", action_layer: int = 0, hidden=(16, 12), algorithm: str = "ddpg"
) -> TrainConfig:
    config = TrainConfig(algorithm=algorithm, gamma=0.9, tau=0.1)  # type: ignore[arg-type]
    config.actor.hidden_sizes = list(hidden)
    config.critic.hidden_sizes = list(hidden)
    config.critic.action_layer = action_layer
    config.actor.optimizer.name = optimizer  # type: ignore[assignment]
    return config


def make_batch(agents: int = 1, seed: int = 1, dtype=torch.float64) -> Batch:
    """A minibatch of B transitions per agent, (agents, B, ...)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(agents, *shape, generator=g, dtype=dtype)

    return Batch(
        randn(B, OBS),
        torch.rand(agents, B, ACT, generator=g, dtype=dtype) * 2 - 1,
        randn(B, 1),
        randn(B, OBS),
        (torch.rand(agents, B, 1, generator=g, dtype=dtype) < 0.3).to(dtype),
    )


def agent_batch(batch: Batch, k: int) -> Batch:
    """Agent k's part of a population's minibatch, as a single run's (1, B, ...)."""
    return Batch(*(field[k : k + 1] for field in batch))


def double_learner(
    config: TrainConfig,
    seeds=(0,),
    generator_seeds=None,
    autograd: bool = False,
    perturb_targets: bool = True,
) -> ActorCritic:
    """A float64 learner of ``config.algorithm``, K = len(seeds); agent k's generator is
    seeded with ``generator_seeds[k]`` (default 3 + k). ``autograd``: the reference, with
    autograd's gradients instead of the hand-written ones. Its ``speed_ups`` (what
    ``config`` asks for) are attached; ``fast(learner)`` runs them."""
    generator_seeds = generator_seeds or [3 + k for k in range(len(seeds))]
    generators = AgentGenerators([torch.Generator().manual_seed(s) for s in generator_seeds])
    learner = make_learner(config, OBS, ACT, CPU, list(seeds), generators)
    if autograd:
        learner.layers = None  # type: ignore[attr-defined]
    for net in (learner.actor, learner.critic, learner.actor_target, learner.critic_target):
        net.double()
    if hasattr(learner, "last_actor_loss"):  # TD3's carried metric
        learner.last_actor_loss = learner.last_actor_loss.double()
    if perturb_targets:
        # Targets differ from the online nets, as they do after the first Polyak step.
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            for p in [*learner.actor_target.parameters(), *learner.critic_target.parameters()]:
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    learner.speed_ups = speed_up(learner, config)  # type: ignore[attr-defined]
    return learner


def fast(learner: ActorCritic):
    """The update with the speed-ups ``double_learner`` attached."""
    return learner.speed_ups.update  # type: ignore[attr-defined]
