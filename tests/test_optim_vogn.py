"""VOGN and per-example gradients, against float64 references that loop over the examples.

The references take each example's gradient with its own ``torch.autograd.grad`` call (no
vmap) on the tanh actor of ``optim_helpers`` (loss_i = -Q(s_i, pi(s_i)) against a fixed
quadratic critic) and write VOGN's update out line by line. Everything runs in float64, so
the tolerances are a few hundred ulps of quantities of order 1 (the reference and the
optimizer sum the same terms in different orders).
"""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from optim_helpers import DTYPE, INIT, actor_loss, grad_at, max_abs_diff, randn_like_params
from torch import nn

from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.agent.stacking import stack_modules
from vadam_rl.config import OptimizerConfig
from vadam_rl.optim import (
    VOGN,
    VariationalOptimizer,
    linear_grad_sq_means,
    per_example_grads,
    vogn,
    vogn_closure,
)
from vadam_rl.rng import AgentGenerators

TOL = 1e-12  # float64: ~1e4 ulps of O(1) values, far above reassociation error, far below bugs


def actor_module(weights: list[torch.Tensor]) -> nn.Module:
    """The tanh actor of ``optim_helpers.actor_loss`` as a module holding ``weights``."""
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2), nn.Tanh()).to(DTYPE)
    with torch.no_grad():
        for p, w in zip(net.parameters(), weights, strict=True):
            p.copy_(w)
    return net


def per_example_loss(action: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """-Q(s_i, pi(s_i)) per example, as ``optim_helpers.actor_loss`` defines Q."""
    return (action - torch.sin(obs[..., :2])).pow(2).sum(dim=-1)


def loop_statistics(weights, obs):
    """(g, h) with one autograd call per example: g = mean of g_i, h = mean of g_i^2."""
    per_example = [grad_at(weights, lambda w, x=x: actor_loss(w, x[None], reduce=torch.sum))
                   for x in obs]  # fmt: skip
    g = [torch.stack(gs).mean(dim=0) for gs in zip(*per_example, strict=True)]
    h = [torch.stack([gi * gi for gi in gs]).mean(dim=0) for gs in zip(*per_example, strict=True)]
    return g, h


def observations(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, 3, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


# -- per-example gradients ----------------------------------------------------------------------


def test_per_example_grads_match_a_loop_over_examples():
    obs = observations(0, 9)
    stats = per_example_grads(actor_module(INIT), per_example_loss, obs)
    g, h = loop_statistics(INIT, obs)
    assert max_abs_diff(stats.grads, g) < TOL
    assert max_abs_diff(stats.grad_sqs, h) < TOL
    expected_loss = actor_loss(INIT, obs, reduce=torch.mean)
    assert abs(stats.loss.item() - expected_loss.item()) < TOL
    # h is not g^2: the test would notice a kernel that squared the mean gradient.
    assert max_abs_diff(stats.grad_sqs, [gi * gi for gi in g]) > 1e-3


def test_per_example_grads_of_stacked_agents_are_each_agents_own():
    weights = [INIT, [0.7 * w + 0.05 for w in INIT]]
    stacked = stack_modules([actor_module(w) for w in weights])
    obs = observations(1, 2, 6)
    stats = per_example_grads(stacked, per_example_loss, obs, agent_dim=True)
    for k in range(2):
        g, h = loop_statistics(weights[k], obs[k])
        assert max_abs_diff([x[k] for x in stats.grads], g) < TOL
        assert max_abs_diff([x[k] for x in stats.grad_sqs], h) < TOL
        expected_loss = actor_loss(weights[k], obs[k], reduce=torch.mean)
        assert abs(stats.loss[k].item() - expected_loss.item()) < TOL


def test_linear_identity_gives_the_per_example_squared_gradients_of_a_linear_layer():
    """sum_i (dz_i x_i^T)^2 = (dz^2)^T (x^2), with a leading agent dimension kept."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 4, generator=gen, dtype=DTYPE)  # (K, batch, in)
    weight = torch.randn(3, 5, 4, generator=gen, dtype=DTYPE)
    bias = torch.randn(3, 5, generator=gen, dtype=DTYPE)
    target = torch.randn(3, 7, 5, generator=gen, dtype=DTYPE)
    z = (x @ weight.transpose(1, 2) + bias[:, None]).requires_grad_()
    losses = (z - target).pow(4).sum(dim=-1)  # loss_i, a non-quadratic one
    (dz,) = torch.autograd.grad(losses.sum(), z)  # each example's own dz_i
    h_weight, h_bias = linear_grad_sq_means(x, dz)
    for k in range(3):
        per_example_w = [torch.outer(dz[k, i], x[k, i]) for i in range(7)]
        assert torch.allclose(h_weight[k], torch.stack(per_example_w).pow(2).mean(0), rtol=TOL)
        assert torch.allclose(h_bias[k], dz[k].pow(2).mean(0), rtol=TOL)


@pytest.mark.parametrize("m", [1, 3, 7])
def test_theorem_1_mean_squared_minibatch_gradient_over_all_minibatches(m):
    """Over all C(N, M) minibatches of a fixed set of N = 7 examples (each minibatch once:
    sampling without replacement, exactly), E[g_mb^2] = w*h + (1-w)*g^2 with
    w = (N-M)/(M(N-1)); h and g are the full-batch means from ``per_example_grads``, the
    minibatch gradients come from ``backward()`` of the minibatch-mean loss."""
    n = 7
    obs = observations(3, n)
    module = actor_module(INIT)
    full = per_example_grads(module, per_example_loss, obs)
    mean_sq = [torch.zeros_like(p) for p in INIT]
    subsets = list(itertools.combinations(range(n), m))
    for rows in subsets:
        module.zero_grad()
        batch = obs[list(rows)]
        per_example_loss(module(batch), batch).mean().backward()
        for acc, p in zip(mean_sq, module.parameters(), strict=True):
            acc += p.grad * p.grad / len(subsets)
    w = (n - m) / (m * (n - 1))
    predicted = [w * h + (1 - w) * g * g for h, g in zip(full.grad_sqs, full.grads, strict=True)]
    assert max_abs_diff(mean_sq, predicted) < TOL
    if 1 < m < n:  # both terms matter: neither h nor g^2 alone is the answer
        assert max_abs_diff(mean_sq, full.grad_sqs) > 1e-4
        assert max_abs_diff(mean_sq, [g * g for g in full.grads]) > 1e-4


# -- the algorithm, line by line ----------------------------------------------------------------


def reference_vogn(weights, obs_at, noise, steps, *, n, lam, delta, prec0, lr, b1, b2, draws):
    """VOGN's docstring in float64, one agent, per-example gradients by a loop. Yields
    (mu, sigma) after each step; ``obs_at(t)`` is step t's minibatch."""
    mu = [w.clone() for w in weights]
    m = [torch.zeros_like(w) for w in weights]
    s = [torch.full_like(w, (prec0 - lam) / n) for w in weights]
    for t in range(1, steps + 1):
        sigma = [1 / torch.sqrt(n * (s_i + lam / n + delta)) for s_i in s]
        g = [torch.zeros_like(w) for w in weights]
        h = [torch.zeros_like(w) for w in weights]
        for _ in range(draws):
            eps = randn_like_params(noise, mu)
            theta = [a + b * e for a, b, e in zip(mu, sigma, eps, strict=True)]
            g_draw, h_draw = loop_statistics(theta, obs_at(t))
            g = [a + b / draws for a, b in zip(g, g_draw, strict=True)]
            h = [a + b / draws for a, b in zip(h, h_draw, strict=True)]
        s = [b2 * s_i + (1 - b2) * h_i for s_i, h_i in zip(s, h, strict=True)]
        m = [
            b1 * m_i + (1 - b1) * (g_i + lam * w / n) for m_i, g_i, w in zip(m, g, mu, strict=True)
        ]
        mu = [
            w - lr * (m_i / (1 - b1**t)) / (s_i + lam / n + delta)
            for w, m_i, s_i in zip(mu, m, s, strict=True)
        ]
        yield mu, [1 / torch.sqrt(n * (s_i + lam / n + delta)) for s_i in s]


HYPER = dict(n=50.0, lam=2.0, delta=0.01, prec0=20.0, lr=0.05, b1=0.9, b2=0.8)


@pytest.mark.parametrize("draws", [1, 2])
def test_vogn_matches_a_float64_loop_reference(draws):
    module = actor_module(INIT)
    hp = HYPER
    optimizer = VOGN(module.parameters(), train_set_size=hp["n"], lr=hp["lr"],
                     betas=(hp["b1"], hp["b2"]), prior_precision=hp["lam"],
                     init_precision=hp["prec0"], damping=hp["delta"], num_samples=draws,
                     generator=torch.Generator().manual_seed(7))  # fmt: skip
    obs_at = lambda t: observations(100 + t, 8)  # noqa: E731
    reference = reference_vogn(INIT, obs_at, torch.Generator().manual_seed(7), 6, draws=draws, **hp)
    for t, (mu, sigma) in enumerate(reference, start=1):
        optimizer.step(vogn_closure(optimizer, module, per_example_loss, obs_at(t)))
        assert max_abs_diff(list(module.parameters()), mu) < TOL, f"step {t}"
        assert max_abs_diff(optimizer.posterior_std(), sigma) < TOL, f"step {t}"
    assert max_abs_diff(mu, INIT) > 0.05  # the weights moved: the test is not vacuous


def test_vogn_trains_two_stacked_agents_each_as_its_own_run():
    """K = 2 agents, own weights, own minibatches, own generators: each matches its reference."""
    weights = [INIT, [0.7 * w + 0.05 for w in INIT]]
    stacked = stack_modules([actor_module(w) for w in weights])
    hp = HYPER
    generators = AgentGenerators([torch.Generator().manual_seed(11 + k) for k in range(2)])
    optimizer = VOGN(stacked.parameters(), train_set_size=hp["n"], lr=hp["lr"],
                     betas=(hp["b1"], hp["b2"]), prior_precision=hp["lam"],
                     init_precision=hp["prec0"], damping=hp["delta"],
                     generator=generators)  # fmt: skip
    obs_at = lambda t: observations(200 + t, 2, 8)  # noqa: E731
    references = [
        reference_vogn(weights[k], lambda t, k=k: obs_at(t)[k],
                       torch.Generator().manual_seed(11 + k), 5, draws=1, **hp)
        for k in range(2)
    ]  # fmt: skip
    for t, per_agent in enumerate(zip(*references, strict=True), start=1):
        optimizer.step(
            vogn_closure(optimizer, stacked, per_example_loss, obs_at(t), agent_dim=True)
        )
        sigmas = optimizer.posterior_std()
        for k, (mu, sigma) in enumerate(per_agent):
            assert max_abs_diff([p[k] for p in stacked.parameters()], mu) < TOL, f"step {t}"
            assert max_abs_diff([s[k] for s in sigmas], sigma) < TOL, f"step {t}"


def test_the_step_divides_by_s_not_its_square_root():
    """One step from m = 0, s = s0 on a single weight: mu moves by lr*g'/(s + lambda/N)."""
    weight = torch.zeros(1, dtype=DTYPE, requires_grad=True)
    optimizer = VOGN([weight], train_set_size=10.0, lr=0.5, betas=(0.0, 0.5),
                     prior_precision=1.0, init_precision=41.0)  # fmt: skip
    g, h = 3.0, 16.0

    def closure():
        weight.grad = torch.full_like(weight, g)
        optimizer.set_grad_sq_means([torch.full_like(weight, h)])
        return torch.zeros(())

    optimizer.step(closure)
    s = 0.5 * (41.0 - 1.0) / 10.0 + 0.5 * h  # 10
    assert weight.item() == pytest.approx(-0.5 * g / (s + 0.1), rel=1e-15)


def test_foreach_and_single_tensor_kernels_agree():
    gen = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (3,), (2, 2, 4)]
    mu = [torch.randn(s, generator=gen, dtype=DTYPE) for s in shapes]
    m = [torch.randn(s, generator=gen, dtype=DTYPE) for s in shapes]
    v = [torch.rand(s, generator=gen, dtype=DTYPE) for s in shapes]
    states = {flag: ([x.clone() for x in mu], [x.clone() for x in m], [x.clone() for x in v])
              for flag in (True, False)}  # fmt: skip
    for t in range(1, 6):
        grads = [torch.randn(s, generator=gen, dtype=DTYPE) for s in shapes]
        grad_sqs = [g * g + torch.rand(g.shape, generator=gen, dtype=DTYPE) for g in grads]
        for foreach, (p, exp_avg, exp_avg_sq) in states.items():
            vogn(p, grads, grad_sqs, exp_avg, exp_avg_sq, [t] * 3, beta1=0.9, beta2=0.99,
                 lr=0.1, prior_precision=0.3 * (t % 2), train_set_size=7.0,
                 damping=0.01 * (t > 2), foreach=foreach)  # fmt: skip
    for a, b in zip(states[True], states[False], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert max_abs_diff(states[True][0], mu) > 0.1  # the kernels did something


# -- the VariationalOptimizer contract ----------------------------------------------------------


def make_vogn(module: nn.Module, seed: int = 0, **kwargs) -> VOGN:
    generator = torch.Generator().manual_seed(seed)
    return VOGN(module.parameters(), train_set_size=20.0, lr=0.05, prior_precision=1.0,
                init_precision=50.0, generator=generator, **kwargs)  # fmt: skip


def test_vogn_is_a_variational_optimizer():
    assert isinstance(make_vogn(actor_module(INIT)), VariationalOptimizer)


def test_sampled_params_restores_mu_bit_for_bit_also_when_the_body_raises():
    module = actor_module(INIT)
    optimizer = make_vogn(module)
    optimizer.step(vogn_closure(optimizer, module, per_example_loss, observations(0, 4)))
    mu = [p.detach().clone() for p in module.parameters()]
    with optimizer.sampled_params():
        assert max_abs_diff(list(module.parameters()), mu) > 1e-3  # a draw is in the weights
    assert all(torch.equal(p, w) for p, w in zip(module.parameters(), mu, strict=True))
    with pytest.raises(KeyError), optimizer.sampled_params():
        raise KeyError("boom")
    assert all(torch.equal(p, w) for p, w in zip(module.parameters(), mu, strict=True))


def test_a_closure_that_hands_over_no_curvature_raises_and_leaves_mu():
    module = actor_module(INIT)
    optimizer = make_vogn(module)
    before = [p.detach().clone() for p in module.parameters()]

    def closure():  # Adam's closure: no set_grad_sq_means
        optimizer.zero_grad()
        batch = observations(0, 4)
        loss = per_example_loss(module(batch), batch).mean()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="set_grad_sq_means"):
        optimizer.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_set_grad_sq_means_outside_a_step_is_refused():
    module = actor_module(INIT)
    optimizer = make_vogn(module)
    with pytest.raises(RuntimeError, match="inside the closure"):
        optimizer.set_grad_sq_means([torch.zeros_like(p) for p in module.parameters()])


def test_the_step_after_sample_into_with_reuse_takes_its_gradient_at_that_draw():
    module = actor_module(INIT)
    behaviour = actor_module(INIT)
    optimizer = make_vogn(module)
    optimizer.sample_into(behaviour.parameters(), reuse_in_next_step=True)
    seen = []
    inner = vogn_closure(optimizer, module, per_example_loss, observations(0, 4))

    def closure():
        seen.append([p.detach().clone() for p in module.parameters()])
        return inner()

    optimizer.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(seen[0], behaviour.parameters(), strict=True))
    assert max_abs_diff(seen[0], INIT) > 1e-3


def test_state_dict_round_trip_resumes_bit_identically():
    module = actor_module(INIT)
    generator = torch.Generator().manual_seed(5)
    optimizer = VOGN(module.parameters(), train_set_size=20.0, lr=0.05, num_samples=2,
                     init_precision=30.0, generator=generator)  # fmt: skip

    def run(opt, net, steps):
        for t in steps:
            opt.step(vogn_closure(opt, net, per_example_loss, observations(t, 4)))

    run(optimizer, module, range(5))
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "module": module.state_dict(),
                "generator": generator.get_state()}, buffer)  # fmt: skip
    run(optimizer, module, range(5, 10))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_module = actor_module(INIT)
    resumed_module.load_state_dict(saved["module"])
    resumed_generator = torch.Generator().manual_seed(999)
    resumed = VOGN(resumed_module.parameters(), train_set_size=20.0, lr=0.05, num_samples=2,
                   init_precision=30.0, generator=resumed_generator)  # fmt: skip
    resumed.load_state_dict(saved["optimizer"])
    resumed_generator.set_state(saved["generator"])
    run(resumed, resumed_module, range(5, 10))

    pairs = zip(module.parameters(), resumed_module.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    sigmas = zip(optimizer.posterior_std(), resumed.posterior_std(), strict=True)
    assert all(torch.equal(a, b) for a, b in sigmas)


def test_initial_sigma_is_one_over_the_square_root_of_the_initial_precision_plus_damping():
    optimizer = make_vogn(actor_module(INIT), damping=0.5)  # N*delta = 10
    for sigma in optimizer.posterior_std():
        assert torch.allclose(sigma, torch.full_like(sigma, 1 / math.sqrt(50.0 + 10.0)))


# -- configuration ------------------------------------------------------------------------------


def test_the_builder_maps_the_config_onto_vogn():
    cfg = OptimizerConfig(name="vogn", lr=0.01, betas=(0.8, 0.9), train_set_size=100.0,
                          prior_precision=2.0, init_precision=300.0, precision_floor=1e4,
                          num_samples=2)  # fmt: skip
    optimizer = build_optimizer(actor_module(INIT).parameters(), cfg)
    assert isinstance(optimizer, VOGN)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["train_set_size"]) == (0.01, (0.8, 0.9), 100.0)
    assert (group["prior_precision"], group["init_precision"]) == (2.0, 300.0)
    assert group["damping"] == pytest.approx(100.0)  # c/N: sigma <= 1/sqrt(c)
    assert optimizer.num_samples == 2
    for sigma in optimizer.posterior_std():
        assert torch.allclose(sigma, torch.full_like(sigma, (300.0 + 1e4) ** -0.5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"learning rate lr: -1.0 \(must be >= 0"),
        ({"betas": (1.0, 0.9)}, r"betas\[0\]: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"train_set_size": 0}, r"train_set_size: 0 \(must be > 0"),
        ({"prior_precision": -1.0}, r"prior_precision: -1.0 \(must be >= 0"),
        ({"damping": -1.0}, r"damping: -1.0 \(must be >= 0"),
        ({"init_precision": 0.5}, r"init_precision: 0.5 \(must be >= prior_precision"),
        ({"num_samples": 0}, r"num_samples: 0 \(must be an integer >= 1"),
        ({"prior_precision": 0.0}, r"initial precision .* must be > 0"),
    ],
)
def test_invalid_arguments_raise_value_errors_naming_the_argument_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VOGN(actor_module(INIT).parameters(), **{"train_set_size": 10, **kwargs})


def test_step_without_closure_raises_a_value_error():
    optimizer = make_vogn(actor_module(INIT))
    with pytest.raises(ValueError, match="needs a closure"):
        optimizer.step()
