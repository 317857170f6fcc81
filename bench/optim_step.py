"""Time ``Vadam.step`` against ``torch.optim.Adam(foreach=True).step`` on DDPG-sized networks.

Also times ``Adam(fused=True)``, which the training loop's plain Adam uses.

The networks are the paper's: a [400, 300] ReLU actor (17 in, 6 out: HalfCheetah) and critic
(23 in, 1 out). Only the optimizer is timed: the closure just installs precomputed gradients,
so its own forward/backward costs nothing, and both optimizers get the same closure. Vadam's
extra work per step is the noise draw, writing theta = mu + sigma*eps, restoring mu and
computing sigma.

VOGN needs more than a gradient: the mean of *per-example* squared gradients. Its section
times whole actor steps, closure included, on the [400, 300] actor (obs 17, act 6) with a
batch of 100 states and loss_i = -Q(s_i, pi(s_i)) against a fixed critic, for K = 1 and
K = 5 stacked agents: Adam and Vadam with one backward() of the mean loss, VOGN with
``vogn_closure`` (torch.func vmap over the examples, per-example gradients in memory).

    python bench/optim_step.py                 # CPU
    python bench/optim_step.py --device cuda --steps 500
    python bench/optim_step.py --only-vogn --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from vadam_rl.agent.stacking import stack_modules
from vadam_rl.optim import VOGN, Vadam, vogn_closure


def mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, 400), nn.ReLU(), nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, n_out)
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step: Callable[[], object], steps: int, repeats: int, device) -> float:
    """Median over ``repeats`` of the mean time of ``steps`` calls, after a warm-up."""
    for _ in range(max(steps // 5, 5)):
        step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def bench_network(
    name: str, net: nn.Module, args: argparse.Namespace
) -> tuple[float, float, float]:
    device = torch.device(args.device)
    params = list(net.to(device).parameters())
    grads = [torch.randn_like(p) for p in params]

    def closure() -> None:
        for p, g in zip(params, grads, strict=True):
            p.grad = g

    closure()
    adam = torch.optim.Adam(params, lr=1e-4, foreach=True)
    # What the training loop's plain Adam uses since issue 6 (one kernel for all params).
    adam_fused = torch.optim.Adam(params, lr=1e-4, fused=True)
    vadam = Vadam(
        params,
        train_set_size=4096,
        lr=1e-4,
        prior_precision=6.4e-7,
        precision_floor=1e4,
        generator=torch.Generator(device=device).manual_seed(0),
    )
    # Interleave the two so that drifting machine load hits both alike.
    # The noise alone (one standard normal per weight, as Vadam draws it) attributes the gap:
    # on CPU torch's generator (MT19937) makes each number cost several nanoseconds.
    noise_gen = torch.Generator(device=device).manual_seed(1)

    def draw_noise() -> None:
        for p in params:
            torch.randn(p.shape, generator=noise_gen, dtype=p.dtype, device=p.device)

    adam_times, vadam_times, noise_times, fused_times = [], [], [], []
    for _ in range(args.rounds):
        adam_times.append(seconds_per_step(lambda: adam.step(closure), args.steps, 3, device))
        fused_times.append(
            seconds_per_step(lambda: adam_fused.step(closure), args.steps, 3, device)
        )
        vadam_times.append(seconds_per_step(lambda: vadam.step(closure), args.steps, 3, device))
        noise_times.append(seconds_per_step(draw_noise, args.steps, 3, device))
    t_adam, t_vadam = statistics.median(adam_times), statistics.median(vadam_times)
    t_noise = statistics.median(noise_times)
    numel = sum(p.numel() for p in params)
    print(
        f"{name:7s} {numel:8d} params   Adam {1e6 * t_adam:8.1f} us   "
        f"Vadam {1e6 * t_vadam:8.1f} us   ratio {t_vadam / t_adam:5.2f}x   "
        f"(noise draw alone {1e6 * t_noise:7.1f} us; Adam fused=True "
        f"{1e6 * statistics.median(fused_times):7.1f} us)"
    )
    return t_adam, t_vadam, t_noise


def bench_actor_steps(agents: int, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per actor step, closure included, for Adam, Vadam and VOGN on K agents."""
    device = torch.device(args.device)
    actor = stack_modules([mlp(17, 6) for _ in range(agents)]).to(device)
    critic = stack_modules([mlp(23, 1) for _ in range(agents)]).to(device).requires_grad_(False)
    obs = torch.randn(agents, 100, 17, device=device)

    def per_example_loss(action: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return -critic(torch.cat([states, torch.tanh(action)], dim=-1))[..., 0]

    def mean_loss_closure(optimizer: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = per_example_loss(actor(obs), obs).mean(dim=1).sum()  # agents' own means
            loss.backward()
            return loss

        return closure

    generator = torch.Generator(device=device).manual_seed(0)
    params = list(actor.parameters())
    adam = torch.optim.Adam(params, lr=1e-4, fused=True)
    vadam = Vadam(params, train_set_size=4096, lr=1e-4, prior_precision=6.4e-7,
                  precision_floor=1e4, generator=generator)  # fmt: skip
    vogn = VOGN(params, train_set_size=4096, lr=1e-4, prior_precision=6.4e-7,
                init_precision=1e4, generator=generator)  # fmt: skip
    # One parameter set for all three (each keeps its own state): only the times matter.
    steps = {
        "Adam": partial(adam.step, mean_loss_closure(adam)),
        "Vadam": partial(vadam.step, mean_loss_closure(vadam)),
        "VOGN": partial(
            vogn.step, vogn_closure(vogn, actor, per_example_loss, obs, agent_dim=True)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):  # interleaved, as above
        for name, step in steps.items():
            times[name].append(seconds_per_step(step, args.steps, 3, device))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=200, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per network")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--only-vogn", action="store_true", help="just the actor-step section")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
        f"float32"
    )
    if not args.only_vogn:
        total_adam = total_vadam = total_noise = 0.0
        for name, net in [("actor", mlp(17, 6)), ("critic", mlp(23, 1))]:
            t_adam, t_vadam, t_noise = bench_network(name, net, args)
            total_adam += t_adam
            total_vadam += t_vadam
            total_noise += t_noise
        print(f"overall ratio Vadam/Adam: {total_vadam / total_adam:.2f}x (target <= 1.3x)")
        print(
            f"without the noise draw:   {(total_vadam - total_noise) / total_adam:.2f}x "
            f"(the draw alone is {total_noise / total_adam:.2f}x Adam's step)"
        )
    print("actor step with its closure (batch 100, loss_i = -Q(s_i, pi(s_i))):")
    for agents in (1, 5):
        t = bench_actor_steps(agents, args)
        print(
            f"K={agents}  Adam(fused) {1e3 * t['Adam']:7.2f} ms   Vadam {1e3 * t['Vadam']:7.2f} ms"
            f"   VOGN {1e3 * t['VOGN']:7.2f} ms   VOGN/Vadam {t['VOGN'] / t['Vadam']:5.2f}x"
            f"   VOGN/Adam {t['VOGN'] / t['Adam']:5.2f}x"
        )


if __name__ == "__main__":
    main()
