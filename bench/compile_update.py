"""Does ``torch.compile`` speed up our DDPG update? Eager vs compiled, same batches.

The loss computations (target, critic loss; actor loss through the critic) are compiled with
``torch.compile`` (inductor); the backward passes run the compiled backward graphs, the
optimizers stay eager (fused Adam, or Vadam with its closure). Prints ms per update, the
compile time, and how far the parameters of the two agents are apart after the timed updates
(they start equal and see the same batches, so only float reassociation separates them).

    python bench/compile_update.py                     # ddpg-adam on CPU
    python bench/compile_update.py --preset ddpg-vadam --device cuda
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from run import BATCH_SIZE, Settings, fill_buffer, ours_config, sync

from vadam_rl.buffer import Batch, ReplayBuffer
from vadam_rl.ddpg import DDPG
from vadam_rl.networks import polyak_update


def make_update(agent: DDPG, compiled: bool):
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
    args = parser.parse_args()
    device = torch.device(args.device)
    config = ours_config(args.preset, Settings(device=args.device))
    torch.manual_seed(0)
    agents = {}
    for name in ("eager", "compiled"):
        generator = torch.Generator(device=device).manual_seed(0)
        torch.manual_seed(0)
        agents[name] = DDPG(17, 6, config, device, generator=generator)
    buffer = ReplayBuffer(50_000, 17, 6, device, generator=torch.Generator(device=device))
    fill_buffer(buffer, 50_000, device)
    batches = [buffer.sample(BATCH_SIZE) for _ in range(args.updates + 20)]
    after_warmup = {}
    for name, agent in agents.items():
        update = make_update(agent, compiled=name == "compiled")
        started = time.perf_counter()
        for batch in batches[:20]:  # warm-up (and compilation)
            update(batch)
        sync(device)
        warmup = time.perf_counter() - started
        after_warmup[name] = copy.deepcopy(agent.actor.state_dict())
        started = time.perf_counter()
        for batch in batches[20:]:
            update(batch)
        sync(device)
        ms = (time.perf_counter() - started) / args.updates * 1e3
        print(f"{name:8s}: {ms:6.2f} ms/update   (first 20 updates incl. compile: {warmup:.1f} s)")
    final = {name: agent.actor.state_dict() for name, agent in agents.items()}
    for weights, n in ((after_warmup, 20), (final, args.updates + 20)):
        eager, compiled = weights["eager"], weights["compiled"]
        gap = max(float((eager[k] - compiled[k]).abs().max()) for k in eager)
        print(f"max |actor weight difference| after {n} updates: {gap:.2e}")


if __name__ == "__main__":
    main()
