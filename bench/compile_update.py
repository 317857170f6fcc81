"""Four ways to compute our DDPG update's gradients, timed on the same batches.

- **autograd**: eager losses and ``backward()`` (the learner's update with autograd's
  gradients, as for networks the hand-written ones do not know);
- **compiled**: the same loss computations compiled with ``torch.compile`` (inductor); the
  backward passes run the compiled backward graphs;
- **hand-written**: the update as the training loop runs it eagerly, with the gradients of
  ``vadam_rl.agent.mlp_grad`` (no autograd graph);
- **hand-written+compile**: the same with ``compile=True``: the whole update (gradients,
  optimizer steps, Polyak) as one ``torch.compile`` graph (``vadam_rl.fast.compiled``).

The first three step the same eager optimizers (fused Adam, or Vadam with its closure).
The variants take turns in rounds (the machine's speed drifts); prints the median ms per
update, the first updates' time (compilation), and how far each variant's actor is from the
autograd one's after the timed updates (they start equal and see the same batches, so only
float reassociation separates them).

    python bench/compile_update.py                     # ddpg-adam on CPU
    python bench/compile_update.py --preset ddpg-vadam --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from run import BATCH_SIZE, Settings, fill_buffer, ours_config, sync

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.learner import ActorCritic
from vadam_rl.agent.networks import polyak_update
from vadam_rl.agent.registry import make_learner
from vadam_rl.config import TrainConfig
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.buffer import AgentBuffer


def make_update(agent: ActorCritic, config: TrainConfig, variant: str):
    if variant.startswith("hand-written"):
        return speed_up(agent, config).update
    if variant == "autograd":
        agent.layers = None  # type: ignore[attr-defined]  # the learner's autograd path
        return agent.update
    compiled = variant == "compiled"

    def critic_loss(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            next_q = agent.critic_target(batch.next_obs, agent.actor_target(batch.next_obs))
            target = batch.rewards + agent.gamma * (1.0 - batch.terminated) * next_q
        return F.mse_loss(agent.critic(batch.obs, batch.actions), target)

    def actor_loss(batch: Batch) -> torch.Tensor:
        return -agent.critic(batch.obs, agent.actor(batch.obs)).mean()

    if compiled:
        critic_loss, actor_loss = torch.compile(critic_loss), torch.compile(actor_loss)

    def update(batch: Batch) -> None:
        def critic_closure() -> torch.Tensor:
            agent.critic_optimizer.zero_grad(set_to_none=True)
            loss = critic_loss(batch)
            loss.backward()
            return loss

        def actor_closure() -> torch.Tensor:
            agent.actor_optimizer.zero_grad(set_to_none=True)
            loss = actor_loss(batch)
            loss.backward()
            return loss

        agent.critic_optimizer.step(critic_closure)
        agent.critic.requires_grad_(False)
        agent.actor_optimizer.step(actor_closure)
        agent.critic.requires_grad_(True)
        polyak_update(agent.critic_target, agent.critic, agent.tau)
        polyak_update(agent.actor_target, agent.actor, agent.tau)

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ddpg-adam")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = ours_config(args.preset, Settings(device=args.device))
    variants = ("autograd", "compiled", "hand-written", "hand-written+compile")
    updates = {}
    if config.algorithm != "ddpg":
        raise SystemExit(f"{args.preset}: this bench writes DDPG's losses out; use a ddpg preset")
    for name in variants:
        generators = AgentGenerators([torch.Generator(device=device).manual_seed(0)])
        config.compile = name == "hand-written+compile"
        agent = make_learner(config, 17, 6, device, [0], generators)
        updates[name] = (agent, make_update(agent, config, name))
    streams = AgentGenerators([torch.Generator(device=device)])
    buffer = AgentBuffer(50_000, 17, 6, device, streams)
    fill_buffer(buffer, 50_000, device, agents=1)
    per_round = args.updates // args.rounds
    batches = [buffer.sample(BATCH_SIZE) for _ in range(20 + per_round * args.rounds)]
    for name, (_, update) in updates.items():
        started = time.perf_counter()
        for batch in batches[:20]:  # warm-up (and compilation)
            update(batch)
        sync(device)
        print(f"{name:20s}: first 20 updates (incl. compile) {time.perf_counter() - started:.1f} s")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        chunk = batches[20 + r * per_round : 20 + (r + 1) * per_round]
        for name, (_, update) in updates.items():
            started = time.perf_counter()
            for batch in chunk:
                update(batch)
            sync(device)
            times[name].append((time.perf_counter() - started) / per_round * 1e3)
    reference = updates["autograd"][0].actor.state_dict()
    for name, (agent, _) in updates.items():
        actor = agent.actor.state_dict()
        gap = max(float((actor[k] - reference[k]).abs().max()) for k in actor)
        rounds = " ".join(f"{t:.2f}" for t in times[name])
        print(
            f"{name:20s}: {statistics.median(times[name]):6.2f} ms/update (median; rounds "
            f"{rounds}); max |actor - autograd actor| after {20 + per_round * args.rounds} "
            f"updates: {gap:.2e}"
        )


if __name__ == "__main__":
    main()
