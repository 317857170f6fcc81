import io

import torch

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.registry import make_learner
from vadam_rl.config import TrainConfig
from vadam_rl.rng import AgentGenerators


def make_agent(gamma: float = 0.9, tau: float = 0.5) -> DDPG:
    """A single run's learner (K = 1: every tensor has a leading agent dimension of 1)."""
    config = TrainConfig(gamma=gamma, tau=tau)
    config.actor.hidden_sizes = [16]
    config.critic.hidden_sizes = [16]
    generators = AgentGenerators([torch.Generator()])
    agent = make_learner(config, 3, 2, torch.device("cpu"), [0], generators)
    assert isinstance(agent, DDPG)
    return agent


def batch(terminated: float, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        torch.randn(1, n, 3, generator=g),
        torch.rand(1, n, 2, generator=g) * 2 - 1,
        torch.full((1, n, 1), 5.0),
        torch.randn(1, n, 3, generator=g),
        torch.full((1, n, 1), terminated),
    )


def test_terminal_transitions_do_not_bootstrap():
    metrics = make_agent().update(batch(terminated=1.0))
    assert metrics["q_target_mean"].item() == 5.0


def test_non_terminal_transitions_bootstrap_from_the_target_networks():
    agent, b = make_agent(gamma=0.9), batch(terminated=0.0)
    with torch.no_grad():
        next_q = agent.critic_target(b.next_obs, agent.actor_target(b.next_obs))
    metrics = agent.update(b)
    torch.testing.assert_close(metrics["q_target_mean"], (5.0 + 0.9 * next_q).mean().reshape(1))


def test_update_matches_a_hand_written_ddpg_step_with_adam():
    agent, b = make_agent(gamma=0.9, tau=0.5), batch(terminated=0.0)
    critic, actor = (
        [p.detach().clone() for p in agent.critic.parameters()],
        [p.detach().clone() for p in agent.actor.parameters()],
    )
    ref = make_agent(gamma=0.9, tau=0.5)  # same seed, same init
    with torch.no_grad():
        y = b.rewards + 0.9 * ref.critic_target(b.next_obs, ref.actor_target(b.next_obs))
    critic_loss = ((ref.critic(b.obs, b.actions) - y) ** 2).mean()
    critic_grads = torch.autograd.grad(critic_loss, list(ref.critic.parameters()))
    metrics = agent.update(b)
    # first Adam step moves each weight by -lr * sign(g) (bias-corrected m / sqrt(v) = g/|g|)
    for p, p0, g in zip(agent.critic.parameters(), critic, critic_grads, strict=True):
        expected = p0 - 1e-3 * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics["critic_loss"], critic_loss.detach().reshape(1))
    # the actor's loss uses the *updated* critic, and the actor moved
    assert any(
        not torch.equal(p, p0) for p, p0 in zip(agent.actor.parameters(), actor, strict=True)
    )


def test_actor_update_leaves_critic_gradients_untouched_and_targets_follow_polyak():
    agent, b = make_agent(tau=0.5), batch(0.0)
    target_before = [p.clone() for p in agent.actor_target.parameters()]
    agent.update(b)
    assert all(p.requires_grad for p in agent.critic.parameters())
    for t, t0, p in zip(
        agent.actor_target.parameters(), target_before, agent.actor.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * p.detach())


def test_metrics_are_tensors_without_host_sync():
    metrics = make_agent().update(batch(0.0))
    assert set(metrics) >= {"critic_loss", "actor_loss"}
    assert all(isinstance(v, torch.Tensor) and v.shape == (1,) for v in metrics.values())


def test_state_dict_round_trip_gives_identical_updates():
    a, b = make_agent(), make_agent()
    a.update(batch(0.0))
    saved = io.BytesIO()
    torch.save(a.state_dict(), saved)  # through bytes, as checkpoints do
    saved.seek(0)
    b.load_state_dict(torch.load(saved, weights_only=True))
    ma, mb = a.update(batch(0.0)), b.update(batch(0.0))
    assert torch.equal(ma["actor_loss"], mb["actor_loss"])
    assert all(
        torch.equal(p, q) for p, q in zip(a.actor.parameters(), b.actor.parameters(), strict=True)
    )
