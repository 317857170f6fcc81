"""Exploration strategies: the behaviour policy differs from the mean actor as specified."""

import pytest
import torch

from vadam_rl.agent.exploration import make_exploration
from vadam_rl.agent.networks import Actor
from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.config import ExplorationConfig, OptimizerConfig

OBS = torch.randn(256, 5, generator=torch.Generator().manual_seed(0))


def vadam_actor(train_set_size: float, steps: int = 20) -> tuple[Actor, torch.optim.Optimizer]:
    """An actor whose Vadam posterior has seen ``steps`` gradients (so N matters)."""
    torch.manual_seed(0)
    actor = Actor(5, 2, [32])
    config = OptimizerConfig(
        name="vadam",
        lr=1e-3,
        prior_precision=10.0,
        train_set_size=train_set_size,
        precision_floor=0.0,
    )
    optimizer = build_optimizer(
        actor.parameters(), config, generator=torch.Generator().manual_seed(1)
    )
    for _ in range(steps):

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = (actor(OBS) - 0.5).pow(2).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
    return actor, optimizer


def posterior(actor, optimizer, resample_every: int = 1):
    config = ExplorationConfig(kind="posterior", resample_every=resample_every)
    return make_exploration(config, actor, optimizer, torch.Generator().manual_seed(2))


def mean_distance(step) -> float:
    return (step.behaviour - step.mean).norm(dim=-1).mean().item()


def test_posterior_behaviour_differs_from_the_mean_actor_which_stays_untouched():
    actor, optimizer = vadam_actor(train_set_size=100)
    before = [p.clone() for p in actor.parameters()]
    with torch.no_grad():
        step = posterior(actor, optimizer).act(OBS)
    assert mean_distance(step) > 1e-3
    # acting runs in numpy on a CPU (vadam_rl.fast.host_actor): another BLAS, float32 rounding
    torch.testing.assert_close(step.mean, actor(OBS).detach(), rtol=0, atol=1e-6)
    assert all(torch.equal(p, b) for p, b in zip(actor.parameters(), before, strict=True))


def test_smaller_train_set_size_means_wider_posterior_and_more_exploration():
    distances = {}
    for n in (10, 1_000_000):
        actor, optimizer = vadam_actor(train_set_size=n)
        with torch.no_grad():
            distances[n] = mean_distance(posterior(actor, optimizer).act(OBS))
    # sigma = 1/sqrt(N*s + lambda): with N = 10 the prior's 1/sqrt(10) dominates every weight.
    assert distances[10] > 3 * distances[1_000_000]


def test_posterior_redraws_every_step_or_once_per_episode():
    actor, optimizer = vadam_actor(100)
    with torch.no_grad():
        every_step = posterior(actor, optimizer, resample_every=1)
        assert not torch.equal(every_step.act(OBS).behaviour, every_step.act(OBS).behaviour)
        per_episode = posterior(actor, optimizer, resample_every=0)
        first = per_episode.act(OBS).behaviour
        assert torch.equal(per_episode.act(OBS).behaviour, first)
        per_episode.on_episode_end(torch.tensor([True]))
        assert not torch.equal(per_episode.act(OBS).behaviour, first)


def weights_seen_by_steps(actor, optimizer, steps: int) -> list[list[torch.Tensor]]:
    """The actor weights each of ``steps`` optimizer steps evaluates its closure at."""
    seen = []

    def closure() -> torch.Tensor:
        seen.append([p.detach().clone() for p in actor.parameters()])
        optimizer.zero_grad()
        loss = (actor(OBS) - 0.5).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return seen


@pytest.mark.parametrize("name", ["vadam", "vadagrad", "vprop", "adam-explore"])
def test_a_reused_draw_is_the_next_steps_weights_bit_for_bit_and_only_once(name):
    torch.manual_seed(0)
    actor = Actor(5, 2, [16])
    optimizer = build_optimizer(
        actor.parameters(),
        OptimizerConfig(name=name, lr=1e-3, train_set_size=50.0, init_precision=100.0),
        generator=torch.Generator().manual_seed(1),
    )
    weights_seen_by_steps(actor, optimizer, 3)  # a posterior that has moved
    config = ExplorationConfig(kind="posterior", resample_every=1, reuse_draw_in_update=True)
    exploration = make_exploration(config, actor, optimizer, None)
    with torch.no_grad():
        exploration.act(OBS)
    behaviour = [p.clone() for p in exploration.behaviour_actor.parameters()]
    after_act = optimizer.generator.get_state()
    (first,) = weights_seen_by_steps(actor, optimizer, 1)
    assert all(torch.equal(w, b) for w, b in zip(first, behaviour, strict=True))
    assert torch.equal(optimizer.generator.get_state(), after_act)  # no draw of its own
    weights_seen_by_steps(actor, optimizer, 1)
    assert not torch.equal(optimizer.generator.get_state(), after_act)  # the next one draws


def test_loading_optimizer_state_drops_a_left_draw():
    actor, optimizer = vadam_actor(100)
    config = ExplorationConfig(kind="posterior", resample_every=1, reuse_draw_in_update=True)
    with torch.no_grad():
        make_exploration(config, actor, optimizer, None).act(OBS)
    optimizer.load_state_dict(optimizer.state_dict())  # e.g. a resume: another mu, sigma
    after_load = optimizer.generator.get_state()
    weights_seen_by_steps(actor, optimizer, 1)
    assert not torch.equal(optimizer.generator.get_state(), after_load)  # drew its own


def test_without_reuse_the_step_draws_its_own_weights():
    actor, optimizer = vadam_actor(100)
    with torch.no_grad():
        exploration = posterior(actor, optimizer)
        exploration.act(OBS)
    behaviour = list(exploration.behaviour_actor.parameters())
    (seen,) = weights_seen_by_steps(actor, optimizer, 1)
    assert not any(torch.equal(w, b) for w, b in zip(seen, behaviour, strict=True))


def test_posterior_exploration_refuses_a_plain_optimizer():
    actor = Actor(5, 2, [8])
    with pytest.raises(TypeError, match="variational"):
        posterior(actor, torch.optim.Adam(actor.parameters()))


def test_gaussian_noise_has_the_configured_scale_and_stays_in_the_box():
    actor = Actor(5, 2, [8])
    strategy = make_exploration(
        ExplorationConfig(kind="gaussian", sigma=0.1), actor, None, torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        step = strategy.act(OBS)
    noise = step.behaviour - step.mean
    assert step.behaviour.abs().max() <= 1.0
    assert 0.09 < noise.std().item() < 0.11 and abs(noise.mean().item()) < 0.01


def test_ornstein_uhlenbeck_noise_is_correlated_in_time_and_resets_at_episode_end():
    actor = Actor(5, 1, [8])
    strategy = make_exploration(
        ExplorationConfig(kind="ornstein-uhlenbeck", sigma=0.05, theta=0.15),
        actor,
        None,
        torch.Generator().manual_seed(0),
    )
    obs = OBS[:64]
    with torch.no_grad():
        noises = torch.stack(
            [(lambda s: s.behaviour - s.mean)(strategy.act(obs)) for _ in range(200)]
        )[:, :, 0]
    x, y = noises[50:-1].flatten(), noises[51:].flatten()
    correlation = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
    assert correlation == pytest.approx(1 - 0.15, abs=0.05)  # AR(1) with coefficient 1 - theta
    strategy.on_episode_end(torch.ones(64, dtype=torch.bool))
    assert torch.count_nonzero(strategy.state) == 0


def test_no_exploration_acts_with_the_mean_actor():
    actor = Actor(5, 2, [8])
    strategy = make_exploration(ExplorationConfig(kind="none"), actor, None, torch.Generator())
    with torch.no_grad():
        step = strategy.act(OBS)
    assert torch.equal(step.behaviour, step.mean)
