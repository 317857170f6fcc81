"""The hand-written DDPG gradients (vadam_rl.fast.backprop) against autograd, in float64.

Autograd on the same modules is the independent reference: a wrong transpose, a missing
ReLU mask, the action columns taken from the wrong end or a 1/K loss scaling in a population
would each move the gradients by far more than float64 rounding.
"""

import pytest
import torch

from vadam_rl.agent.batch import Batch
from vadam_rl.agent.ddpg import DDPG
from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.agent.population import PopulationDDPG
from vadam_rl.config import TrainConfig
from vadam_rl.fast import backprop
from vadam_rl.fast.select import speed_up
from vadam_rl.rng import AgentGenerators

OBS, ACT, B = 5, 3, 7


def make_config(optimizer: str, action_layer: int, hidden=(16, 12)) -> TrainConfig:
    config = TrainConfig(gamma=0.9, tau=0.1)
    config.actor.hidden_sizes = list(hidden)
    config.critic.hidden_sizes = list(hidden)
    config.critic.action_layer = action_layer
    config.actor.optimizer.name = optimizer
    return config


def make_batch(leading=(), seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*leading, *shape, generator=g, dtype=torch.float64)

    return Batch(
        randn(B, OBS),
        torch.rand(*leading, B, ACT, generator=g, dtype=torch.float64) * 2 - 1,
        randn(B, 1),
        randn(B, OBS),
        (torch.rand(*leading, B, 1, generator=g, dtype=torch.float64) < 0.3).double(),
    )


def double_agent(config: TrainConfig, seed: int = 0, fast: bool = True) -> DDPG:
    """A float64 agent; ``fast``: with the speed-ups ``config`` asks for (``agent.speed_ups``),
    else the plain autograd update."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(3)  # Vadam's weight noise
    agent = DDPG(OBS, ACT, config, torch.device("cpu"), generator=generator)
    for net in (agent.actor, agent.critic, agent.actor_target, agent.critic_target):
        net.double()
    # Targets differ from the online nets, as they do after the first Polyak step.
    for p in [*agent.actor_target.parameters(), *agent.critic_target.parameters()]:
        p.add_(0.05 * torch.randn_like(p))
    if fast:
        agent.speed_ups = speed_up(agent, config)  # type: ignore[attr-defined]
    return agent


def with_speed_ups(agent: DDPG, config: TrainConfig) -> DDPG:
    agent.speed_ups = speed_up(agent, config)  # type: ignore[attr-defined]
    return agent


def autograd_gradients(agent: DDPG, batch: Batch) -> tuple[list, list]:
    """dL_critic/d(critic) and dL_actor/d(actor), the textbook way, one agent."""
    with torch.no_grad():
        next_q = agent.critic_target(batch.next_obs, agent.actor_target(batch.next_obs))
        target = batch.rewards + agent.gamma * (1 - batch.terminated) * next_q
    critic_loss = ((agent.critic(batch.obs, batch.actions) - target) ** 2).mean()
    critic_grads = torch.autograd.grad(critic_loss, list(agent.critic.parameters()))
    actor_loss = -agent.critic(batch.obs, agent.actor(batch.obs)).mean()
    actor_grads = torch.autograd.grad(actor_loss, list(agent.actor.parameters()))
    return list(critic_grads), list(actor_grads)


def manual_gradients(agent: DDPG, batch: Batch) -> tuple[list, list]:
    layers = agent.speed_ups.hand_written.layers
    with torch.no_grad():
        next_action = backprop.forward(layers["actor_target"], batch.next_obs).output
        next_q = backprop.forward(layers["critic_target"], batch.next_obs, next_action).output
        target = batch.rewards + agent.gamma * (1 - batch.terminated) * next_q
        acts = backprop.forward(layers["critic"], batch.obs, batch.actions)
        error = acts.output - target
        critic_grads = backprop.weight_gradients(layers["critic"], acts, error * (2.0 / B))
        actor_acts = backprop.forward(layers["actor"], batch.obs)
        critic_acts = backprop.forward(layers["critic"], batch.obs, actor_acts.output)
        d_action = backprop.action_gradient(
            layers["critic"], critic_acts, torch.full_like(critic_acts.output, -1.0 / B), ACT
        )
        actor_grads = backprop.weight_gradients(
            layers["actor"], actor_acts, backprop.tanh_backward(d_action, actor_acts.output)
        )
    return critic_grads, actor_grads


@pytest.mark.parametrize("action_layer", [0, 1])
@pytest.mark.parametrize("hidden", [(16, 12), (16,), (16, 12, 8)])
def test_hand_written_gradients_equal_autograd(action_layer, hidden):
    if action_layer >= len(hidden):
        pytest.skip("the action joins a hidden layer that does not exist")
    agent, batch = double_agent(make_config("adam", action_layer, hidden)), make_batch()
    assert agent.speed_ups.hand_written is not None
    expected = autograd_gradients(agent, batch)
    for got, want in zip(manual_gradients(agent, batch), expected, strict=True):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["adam", "vadam"])
@pytest.mark.parametrize("action_layer", [0, 1])
def test_manual_and_autograd_updates_agree_over_many_steps(optimizer, action_layer):
    """The whole update (closures, optimizers, Vadam's weight noise, Polyak) both ways."""
    config = make_config(optimizer, action_layer)
    manual, reference = double_agent(config), double_agent(config, fast=False)
    assert reference.train_step == reference.autograd_step
    for step in range(20):
        batch = make_batch(seed=step)
        got, want = manual.update(batch), reference.update(batch)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(
        manual.state_dict()["actor"].values(),
        reference.state_dict()["actor"].values(),
        strict=True,
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_population_gradients_are_each_agents_own():
    """Stacked weights (K, out, in): agent k's gradient is its single network's gradient."""
    config = make_config("adam", 1)
    singles = [double_agent(config, seed=k, fast=False) for k in range(3)]
    generators = AgentGenerators([torch.Generator() for _ in singles])
    population = with_speed_ups(PopulationDDPG(singles, config, generators), config)
    assert population.speed_ups.hand_written is not None
    # The population's targets start as copies of its online nets; give the singles the same.
    for k, single in enumerate(singles):
        for name in ("actor_target", "critic_target"):
            stacked = getattr(population, name).parameters()
            for p_single, p_stacked in zip(
                getattr(single, name).parameters(), stacked, strict=True
            ):
                p_single.copy_(p_stacked[k])
    batch = make_batch(leading=(3,))
    manual_critic, manual_actor = manual_gradients(population, batch)
    for k, single in enumerate(singles):
        agent_batch = Batch(*(field[k] for field in batch))
        critic_grads, actor_grads = autograd_gradients(single, agent_batch)
        for got, want in zip(manual_critic, critic_grads, strict=True):
            torch.testing.assert_close(got[k], want, rtol=1e-12, atol=1e-14)
        for got, want in zip(manual_actor, actor_grads, strict=True):
            torch.testing.assert_close(got[k], want, rtol=1e-12, atol=1e-14)


def test_unknown_networks_fall_back_to_autograd():
    class Sine(torch.nn.Module):
        def forward(self, x):
            return torch.sin(x)

    actor = Actor(OBS, ACT, [8])
    assert backprop.layers_of(actor) is not None
    actor.mu[1] = Sine()  # not a ReLU: the hand-written backward would be wrong
    assert backprop.layers_of(actor) is None
    assert backprop.layers_of(torch.nn.Linear(3, 3)) is None
    assert backprop.layers_of(Critic(OBS, ACT, [8, 8], action_layer=1)) is not None
    # What the hand-written pass would bypass: a parametrised weight, a hook, a subclass.
    normed = Actor(OBS, ACT, [8])
    torch.nn.utils.parametrizations.weight_norm(normed.mu[0])
    assert backprop.layers_of(normed) is None
    hooked = Actor(OBS, ACT, [8])
    hooked.mu[2].register_forward_hook(lambda module, inputs, output: output * 2)
    assert backprop.layers_of(hooked) is None

    class Doubled(Actor):
        def forward(self, obs):
            return 2 * super().forward(obs)

    assert backprop.layers_of(Doubled(OBS, ACT, [8])) is None


def test_the_hand_written_update_records_no_autograd_graph():
    """Optimizers run closures under enable_grad; the hand-written gradients must not be
    recorded (a graph per update would cost time and keep activations alive)."""
    agent = double_agent(make_config("vadam", action_layer=1))
    agent.update(make_batch())
    for p in [*agent.actor.parameters(), *agent.critic.parameters()]:
        assert p.grad is not None and p.grad.grad_fn is None and not p.grad.requires_grad
