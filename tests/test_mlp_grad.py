"""The hand-written gradients (vadam_rl.agent.mlp_grad, used by DDPG and TD3) against
autograd, in float64.

Autograd on the same modules is the independent reference: a wrong transpose, a missing
ReLU mask, the action columns taken from the wrong end or a 1/K loss scaling in a population
would each move the gradients by far more than float64 rounding.
"""

import pytest
import torch
from learners import ACT, OBS, agent_batch, double_learner, fast, make_batch, make_config

from vadam_rl.agent import mlp_grad
from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.agent.stacking import stack_modules


def autograd_gradients(learner, batch) -> tuple[list, list]:
    """dL_critic/d(critic) and dL_actor/d(actor) of DDPG, the textbook way (any K)."""
    with torch.no_grad():
        next_q = learner.critic_target(batch.next_obs, learner.actor_target(batch.next_obs))
        target = batch.rewards + learner.gamma * (1 - batch.terminated) * next_q
    errors = (learner.critic(batch.obs, batch.actions) - target) ** 2
    critic_loss = errors.mean(dim=(-2, -1)).sum()  # each agent's mean, summed
    critic_grads = torch.autograd.grad(critic_loss, list(learner.critic.parameters()))
    actor_loss = -learner.critic(batch.obs, learner.actor(batch.obs)).mean(dim=(-2, -1)).sum()
    actor_grads = torch.autograd.grad(actor_loss, list(learner.actor.parameters()))
    return list(critic_grads), list(actor_grads)


def hand_written_gradients(learner, batch) -> tuple[list, list]:
    """What the learner's closures store in .grad, read back."""
    target = learner.target_q(batch)
    learner.critic_closure(batch, target)
    learner.actor_closure(batch)
    return (
        [p.grad.clone() for p in learner.critic.parameters()],
        [p.grad.clone() for p in learner.actor.parameters()],
    )


@pytest.mark.parametrize("action_layer", [0, 1])
@pytest.mark.parametrize("hidden", [(16, 12), (16,), (16, 12, 8)])
def test_hand_written_gradients_equal_autograd(action_layer, hidden):
    if action_layer >= len(hidden):
        pytest.skip("the action joins a hidden layer that does not exist")
    learner = double_learner(make_config("adam", action_layer, hidden))
    batch = make_batch()
    assert learner.hand_written
    expected = autograd_gradients(learner, batch)
    for got, want in zip(hand_written_gradients(learner, batch), expected, strict=True):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["adam", "vadam"])
@pytest.mark.parametrize("action_layer", [0, 1])
def test_hand_written_and_autograd_updates_agree_over_many_steps(optimizer, action_layer):
    """The whole update (closures, optimizers, Vadam's weight noise, Polyak) both ways."""
    config = make_config(optimizer, action_layer)
    manual, reference = double_learner(config), double_learner(config, autograd=True)
    assert manual.hand_written and not reference.hand_written
    for step in range(20):
        batch = make_batch(seed=step)
        got, want = fast(manual)(batch), reference.update(batch)
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
    population = double_learner(config, seeds=(0, 1, 2))
    singles = [double_learner(config, seeds=(k,), perturb_targets=False) for k in range(3)]
    # The singles' targets: the population's agent k's.
    for k, single in enumerate(singles):
        for name in ("actor_target", "critic_target"):
            pairs = zip(
                getattr(single, name).parameters(),
                getattr(population, name).parameters(),
                strict=True,
            )
            with torch.no_grad():
                for p_single, p_stacked in pairs:
                    p_single.copy_(p_stacked[k : k + 1])
    batch = make_batch(agents=3)
    manual_critic, manual_actor = hand_written_gradients(population, batch)
    for k, single in enumerate(singles):
        critic_grads, actor_grads = autograd_gradients(single, agent_batch(batch, k))
        for got, want in zip(manual_critic, critic_grads, strict=True):
            torch.testing.assert_close(got[k : k + 1], want, rtol=1e-12, atol=1e-14)
        for got, want in zip(manual_actor, actor_grads, strict=True):
            torch.testing.assert_close(got[k : k + 1], want, rtol=1e-12, atol=1e-14)


def test_twin_critic_layers_compute_both_critics_in_float64():
    """A (K, 2)-stacked critic's hand-written forward and gradients: each critic's own."""
    torch.manual_seed(0)
    critics = [Critic(OBS, ACT, [8, 6]).double() for _ in range(4)]  # K = 2 agents x 2
    twins = stack_modules([stack_modules(critics[:2]), stack_modules(critics[2:])])
    layers = mlp_grad.layers_of(twins)
    assert layers is not None and twins.qf0[0].weight.shape == (2, 2, 8, OBS + ACT)
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(2, 2, 5, OBS, generator=g, dtype=torch.float64)
    act = torch.randn(2, 2, 5, ACT, generator=g, dtype=torch.float64)
    acts = mlp_grad.forward(layers, obs, act)
    grad_out = torch.randn(2, 2, 5, 1, generator=g, dtype=torch.float64)
    grads = mlp_grad.weight_gradients(layers, acts, grad_out)
    for i, critic in enumerate(critics):
        k, j = divmod(i, 2)
        q = critic(obs[k, j], act[k, j])
        torch.testing.assert_close(acts.output[k, j], q, rtol=1e-12, atol=1e-14)
        want = torch.autograd.grad((q * grad_out[k, j]).sum(), list(critic.parameters()))
        for got, w in zip(grads, want, strict=True):
            torch.testing.assert_close(got[k, j], w, rtol=1e-12, atol=1e-14)
    first = layers.select(0)  # the first critic of each agent: (K, out, in) views
    single = mlp_grad.forward(first, obs[:, 0], act[:, 0]).output
    torch.testing.assert_close(single, acts.output[:, 0], rtol=1e-12, atol=1e-14)


def test_unknown_networks_fall_back_to_autograd():
    class Sine(torch.nn.Module):
        def forward(self, x):
            return torch.sin(x)

    actor = Actor(OBS, ACT, [8])
    assert mlp_grad.layers_of(actor) is not None
    actor.mu[1] = Sine()  # not a ReLU: the hand-written backward would be wrong
    assert mlp_grad.layers_of(actor) is None
    assert mlp_grad.layers_of(torch.nn.Linear(3, 3)) is None
    assert mlp_grad.layers_of(Critic(OBS, ACT, [8, 8], action_layer=1)) is not None
    # What the hand-written pass would bypass: a parametrised weight, a hook, a subclass.
    normed = Actor(OBS, ACT, [8])
    torch.nn.utils.parametrizations.weight_norm(normed.mu[0])
    assert mlp_grad.layers_of(normed) is None
    hooked = Actor(OBS, ACT, [8])
    hooked.mu[2].register_forward_hook(lambda module, inputs, output: output * 2)
    assert mlp_grad.layers_of(hooked) is None

    class Doubled(Actor):
        def forward(self, obs):
            return 2 * super().forward(obs)

    assert mlp_grad.layers_of(Doubled(OBS, ACT, [8])) is None
    config = make_config("adam")
    config.actor.layer_norm = True
    assert not double_learner(config).hand_written


def test_the_hand_written_update_records_no_autograd_graph():
    """Optimizers run closures under enable_grad; the hand-written gradients must not be
    recorded (a graph per update would cost time and keep activations alive)."""
    learner = double_learner(make_config("vadam", action_layer=1))
    fast(learner)(make_batch())
    for p in [*learner.actor.parameters(), *learner.critic.parameters()]:
        assert p.grad is not None and p.grad.grad_fn is None and not p.grad.requires_grad


def per_example_loop(learner, batch) -> tuple[list, list]:
    """g = (1/M) sum_i g_i and h = (1/M) sum_i g_i^2 of the actor loss, one example at a
    time: loss_i = -Q(s_i, pi(s_i)) (TD3: -Q1) summed over the agents, whose gradient holds
    each agent's own in its slice."""
    params = list(learner.actor.parameters())
    first = {name: p.select(1, 0) for name, p in learner.critic.named_parameters()}
    sums = [torch.zeros_like(p) for p in params]
    sq_sums = [torch.zeros_like(p) for p in params]
    examples = batch.obs.shape[-2]
    for i in range(examples):
        obs = batch.obs[:, i : i + 1]
        action = learner.actor(obs)
        if learner.algorithm == "td3":
            q = torch.func.functional_call(learner.critic, first, (obs, action))
        else:
            q = learner.critic(obs, action)
        for s, sq, g in zip(sums, sq_sums, torch.autograd.grad(-q.sum(), params), strict=True):
            s.add_(g)
            sq.add_(g.square())
    return [s / examples for s in sums], [sq / examples for sq in sq_sums]


@pytest.mark.parametrize("algorithm", ["ddpg", "td3"])
@pytest.mark.parametrize("autograd", [False, True])
def test_a_vogn_actor_gets_the_mean_of_its_per_example_squared_gradients(algorithm, autograd):
    """The actor closure hands VOGN h = (1/M) sum_i g_i^2 (hand-written: per Linear layer
    from its input and M times the mean loss's output gradient; autograd: torch.func),
    against a loop over the examples, K = 2 agents, float64. A missing factor M, a square of
    the summed gradient instead of the summed squares, or agents mixed would each be off by
    far more than rounding."""
    config = make_config("vogn", action_layer=0, hidden=(16, 12), algorithm=algorithm)
    learner = double_learner(config, seeds=(0, 1), autograd=autograd)
    assert learner.actor_grad_sq_means and learner.hand_written == (not autograd)
    handed: list = []
    learner.actor_optimizer.set_grad_sq_means = handed.append  # outside a step: capture it
    batch = make_batch(agents=2)
    loss = learner.actor_closure(batch)
    want_grads, want_sqs = per_example_loop(learner, batch)
    assert loss.shape == (2,) and len(handed) == 1
    for p, g, h, want_g, want_h in zip(
        learner.actor.parameters(), [p.grad for p in learner.actor.parameters()], handed[0],
        want_grads, want_sqs, strict=True,
    ):  # fmt: skip
        assert h.shape == p.shape
        torch.testing.assert_close(g, want_g, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(h, want_h, rtol=1e-12, atol=1e-14)
