"""VadaGrad, Vprop, AdamExplore and the IVON adapter, each against an independent reference.

The references are float64 transcriptions of the update in each class docstring (or, for IVON,
``ivon.IVON`` driven the way its README shows); they replay the optimizer's noise from a
generator seeded identically. What every variational optimizer shares (restoring mu, sampling,
resuming, dtypes) is tested once for all of them in ``test_optim_factory.py``.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from optim_helpers import (
    BATCH,
    DTYPE,
    INIT,
    actor_closure,
    actor_loss,
    closure_for,
    fresh_params,
    grad_at,
    max_abs_diff,
    mean_loss,
    needs_ivon,
    randn_like_params,
    run,
)

from vadam_rl.optim import AdamExplore, VadaGrad, Vprop


def mc_gradients(mu, sigma, noise, loss_fn, num_samples):
    """MC averages of g and g*g over ``num_samples`` draws theta = mu + sigma * eps."""
    g = [torch.zeros_like(w) for w in mu]
    g2 = [torch.zeros_like(w) for w in mu]
    for _ in range(num_samples):
        eps = randn_like_params(noise, mu)
        theta = [m + s * e for m, s, e in zip(mu, sigma, eps, strict=True)]
        grads = grad_at(theta, loss_fn)
        g = [a + b / num_samples for a, b in zip(g, grads, strict=True)]
        g2 = [a + b * b / num_samples for a, b in zip(g2, grads, strict=True)]
    return g, g2


# -- VadaGrad -----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 3])
def test_vadagrad_matches_a_float64_reference_of_its_update_over_50_steps(num_samples):
    n, prec0, lr, beta = 10.0, 4.0, 0.01, 0.9
    params = fresh_params()
    optimizer = VadaGrad(params, train_set_size=n, lr=lr, beta=beta, init_precision=prec0,
                         num_samples=num_samples,
                         generator=torch.Generator().manual_seed(7))  # fmt: skip
    # The docstring in the N*s convention: precision N*s, updated before the mean.
    noise = torch.Generator().manual_seed(7)
    mu = [w.clone() for w in INIT]
    s = [torch.full_like(w, prec0 / n) for w in INIT]
    for t in range(50):
        optimizer.step(closure_for(optimizer, params, t))

        sigma = [1 / torch.sqrt(n * s_i) for s_i in s]
        g, g2 = mc_gradients(mu, sigma, noise, lambda w, t=t: mean_loss(w, t), num_samples)
        s = [s_i + (1 - beta) * g2_i for s_i, g2_i in zip(s, g2, strict=True)]
        mu = [m - lr * g_i / torch.sqrt(s_i) for m, g_i, s_i in zip(mu, g, s, strict=True)]
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"

    assert max_abs_diff(optimizer.posterior_std(), [1 / torch.sqrt(n * s_i) for s_i in s]) < 1e-12
    assert max_abs_diff(mu, INIT) > 0.05  # the test is not vacuous: the weights moved


@pytest.mark.parametrize(
    ("prec0", "lr"), [(1e4, 0.01), (3.0, 1e-3)], ids=["paper-values", "noise-that-shows"]
)
def test_vadagrad_reproduces_the_reference_rl_update_on_summed_gradients(prec0, lr):
    """N = B^2 turns the mean-loss update into the reference's on the summed gradient G."""
    gamma = 0.99
    obs = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    params = fresh_params()
    optimizer = VadaGrad(params, train_set_size=BATCH**2, lr=lr, beta=gamma, init_precision=prec0,
                         generator=torch.Generator().manual_seed(9))  # fmt: skip
    closure = actor_closure(optimizer, params, obs)
    # ActorNetworkEpsilon.py, method "vadagrad": prec first, then mu, sigma = 1/sqrt(prec).
    noise = torch.Generator().manual_seed(9)
    mu = [w.clone() for w in INIT]
    prec = [torch.full_like(w, prec0) for w in INIT]
    for t in range(50):
        optimizer.step(closure)

        eps = randn_like_params(noise, mu)
        theta = [m + e / torch.sqrt(p) for m, e, p in zip(mu, eps, prec, strict=True)]
        big_g = grad_at(theta, lambda w: actor_loss(w, obs, reduce=torch.sum))
        prec = [p + (1 - gamma) * g * g for p, g in zip(prec, big_g, strict=True)]
        mu = [m - lr * g / torch.sqrt(p) for m, g, p in zip(mu, big_g, prec, strict=True)]
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"
        assert max_abs_diff(optimizer.posterior_std(), [p.rsqrt() for p in prec]) < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"learning rate lr: -1.0 \(must be >= 0"),
        ({"beta": 1.0}, r"beta: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"train_set_size": 0}, r"train_set_size: 0 \(must be > 0"),
        ({"init_precision": 0.0}, r"init_precision: 0.0 \(must be > 0"),
        ({"num_samples": 0}, r"num_samples: 0 \(must be an integer >= 1"),
    ],
)
def test_vadagrad_rejects_invalid_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VadaGrad(fresh_params(), **{"train_set_size": 10, **kwargs})


# -- Vprop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 3])
def test_vprop_matches_a_float64_reference_of_its_docstring_over_50_steps(num_samples):
    n, lam, c, prec0, lr, beta = 10.0, 1.0, 2.0, 4.0, 0.01, 0.9
    params = fresh_params()
    optimizer = Vprop(params, train_set_size=n, lr=lr, beta=beta, prior_precision=lam,
                      init_precision=prec0, precision_floor=c, num_samples=num_samples,
                      generator=torch.Generator().manual_seed(7))  # fmt: skip
    # No momentum, no bias correction; the prior lambda~ = lambda/N in numerator and denominator.
    noise = torch.Generator().manual_seed(7)
    lam_n = lam / n
    mu = [w.clone() for w in INIT]
    s = [torch.full_like(w, (prec0 - lam) / n) for w in INIT]
    for t in range(50):
        optimizer.step(closure_for(optimizer, params, t))

        sigma = [1 / torch.sqrt(n * s_i + lam + c) for s_i in s]
        g, g2 = mc_gradients(mu, sigma, noise, lambda w, t=t: mean_loss(w, t), num_samples)
        s = [beta * s_i + (1 - beta) * g2_i for s_i, g2_i in zip(s, g2, strict=True)]
        mu = [
            m - lr * (g_i + lam_n * m) / (torch.sqrt(s_i) + lam_n)
            for m, g_i, s_i in zip(mu, g, s, strict=True)
        ]
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"

    expected_sigma = [1 / torch.sqrt(n * s_i + lam + c) for s_i in s]
    assert max_abs_diff(optimizer.posterior_std(), expected_sigma) < 1e-12
    assert max_abs_diff(mu, INIT) > 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"learning rate lr: -1.0 \(must be >= 0"),
        ({"beta": 1.0}, r"beta: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"train_set_size": -3}, r"train_set_size: -3 \(must be > 0"),
        ({"prior_precision": -1.0}, r"prior_precision: -1.0 \(must be >= 0"),
        ({"precision_floor": -1.0}, r"precision_floor: -1.0 \(must be >= 0"),
        ({"init_precision": 0.5}, r"init_precision: 0.5 \(must be >= prior_precision"),
        ({"prior_precision": 0.0}, r"initial precision .* must be > 0"),
        ({"num_samples": 2.0}, r"num_samples: 2.0 \(must be an integer >= 1"),
    ],
)
def test_vprop_rejects_invalid_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Vprop(fresh_params(), **{"train_set_size": 10, **kwargs})


# -- AdamExplore --------------------------------------------------------------------------------


def adam_reference(x, grad, m, v, t, *, lr, betas, eps, eps_before_bias_correction):
    """One float64 Adam step; torch places eps after the bias correction, TensorFlow before."""
    b1, b2 = betas
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    if eps_before_bias_correction:
        x = x - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (torch.sqrt(v) + eps)
    else:
        x = x - lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
    return x, m, v


def run_adam_explore_reference(steps, placement, *, lr, sigma_lr, betas, eps, prec0):
    """AdamExplore's docstring in float64: yields (mu, prec) after each step."""
    adam = dict(betas=betas, eps=eps, eps_before_bias_correction=placement)
    noise = torch.Generator().manual_seed(7)
    mu = [w.clone() for w in INIT]
    prec = [torch.full_like(w, prec0) for w in INIT]
    moments = [[torch.zeros_like(w) for w in INIT] for _ in range(4)]
    for t in range(1, steps + 1):
        eps_draw = randn_like_params(noise, mu)
        theta = [w + e / torch.sqrt(p) for w, e, p in zip(mu, eps_draw, prec, strict=True)]
        g = grad_at(theta, lambda w, t=t: mean_loss(w, t - 1))
        g_prec = [
            -0.5 * g_i * e * p**-1.5 for g_i, e, p in zip(g, eps_draw, prec, strict=True)
        ]  # d theta / d prec = -1/2 eps prec^(-3/2)
        m, v, mp, vp = moments
        for i in range(len(mu)):
            mu[i], m[i], v[i] = adam_reference(mu[i], g[i], m[i], v[i], t, lr=lr, **adam)
            prec[i], mp[i], vp[i] = adam_reference(
                prec[i], g_prec[i], mp[i], vp[i], t, lr=sigma_lr, **adam
            )
        yield mu, prec


@pytest.mark.parametrize("eps_before_bias_correction", [False, True], ids=["torch", "tensorflow"])
def test_adam_explore_matches_a_float64_reference_with_two_adams(eps_before_bias_correction):
    # Large noise, a fast precision and a visible eps, so that every term of the update shows.
    hyper = dict(lr=0.01, sigma_lr=0.5, betas=(0.9, 0.99), eps=1e-3)
    params = fresh_params()
    optimizer = AdamExplore(params, init_precision=25.0, **hyper,
                            eps_before_bias_correction=eps_before_bias_correction,
                            generator=torch.Generator().manual_seed(7))  # fmt: skip
    reference = run_adam_explore_reference(50, eps_before_bias_correction, prec0=25.0, **hyper)
    for t, (mu, prec) in enumerate(reference):
        optimizer.step(closure_for(optimizer, params, t))
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"
        assert max_abs_diff([optimizer.state[p]["precision"] for p in params], prec) < 1e-12
        assert max_abs_diff(optimizer.posterior_std(), [p.rsqrt() for p in prec]) < 1e-12
    assert max_abs_diff(prec, [torch.full_like(w, 25.0) for w in INIT]) > 1.0  # prec learned


def test_adam_explore_eps_placement_changes_the_result():
    """Negative control for the test above: the two placements are not the same update."""
    hyper = dict(lr=0.01, sigma_lr=0.5, betas=(0.9, 0.99), eps=1e-3, init_precision=25.0)
    finals = []
    for placement in (False, True):
        params = fresh_params()
        optimizer = AdamExplore(params, **hyper, eps_before_bias_correction=placement,
                                generator=torch.Generator().manual_seed(7))  # fmt: skip
        run(optimizer, params, range(10))
        finals.append(params)
    assert max_abs_diff(*finals) > 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"learning rate lr: -1.0 \(must be >= 0"),
        ({"sigma_lr": -0.1}, r"sigma_lr: -0.1 \(must be >= 0"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\]: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"betas": (0.9, 1.5)}, r"betas\[1\]: 1.5 \(must be in \[0.0, 1.0\)"),
        ({"eps": -1e-8}, r"eps: -1e-08 \(must be >= 0"),
        ({"init_precision": 0.0}, r"init_precision: 0.0 \(must be > 0"),
    ],
)
def test_adam_explore_rejects_invalid_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdamExplore(fresh_params(), **kwargs)


# -- IVON adapter -------------------------------------------------------------------------------

IVON_HYPER = dict(lr=0.05, ess=10.0, hess_init=0.3, beta2=0.9, weight_decay=0.1)


def ivon_adapter(params, seed, **kwargs):
    from vadam_rl.optim.ivon import IVON

    return IVON(params, **{**IVON_HYPER, **kwargs}, generator=torch.Generator().manual_seed(seed))


@needs_ivon
@pytest.mark.parametrize("mc_samples", [1, 2])
def test_ivon_step_matches_ivon_driven_directly_from_the_same_seed(mc_samples):
    """The adapter's noise comes from its generator as ivon's would from the global RNG."""
    import ivon

    ours = fresh_params()
    adapter = ivon_adapter(ours, seed=3, mc_samples=mc_samples)
    theirs = fresh_params()
    direct = ivon.IVON(theirs, **IVON_HYPER, mc_samples=mc_samples)
    torch.manual_seed(3)
    for t in range(20):
        adapter.step(closure_for(adapter, ours, t))
        # ivon's README: sampled_params(train=True) around each backward, then step().
        for _ in range(mc_samples):
            with direct.sampled_params(train=True):
                closure_for(direct, theirs, t)()
        direct.step()
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), f"step {t}"
        assert torch.equal(adapter.param_groups[0]["hess"], direct.param_groups[0]["hess"])
    assert max_abs_diff(ours, INIT) > 0.05
    assert (adapter.param_groups[0]["hess"] - IVON_HYPER["hess_init"]).abs().max() > 0.01


@needs_ivon
def test_ivon_step_leaves_the_global_rng_alone():
    params = fresh_params()
    adapter = ivon_adapter(params, seed=3)
    before = torch.get_rng_state()
    run(adapter, params, range(3))
    with adapter.sampled_params():
        pass
    adapter.sample_into([torch.empty_like(p) for p in params])
    assert torch.equal(torch.get_rng_state(), before)


@needs_ivon
def test_ivon_posterior_std_is_one_over_sqrt_of_ess_times_hess_plus_weight_decay():
    params = fresh_params()
    adapter = ivon_adapter(
        [{"params": params[:2]}, {"params": params[2:], "ess": 40.0, "weight_decay": 0.5}],
        seed=3,
    )
    run(adapter, params, range(10))
    expected = []
    for group in adapter.param_groups:
        hess = group["hess"].to(DTYPE)
        assert hess.std() > 0  # hess is per weight by now, so the split below is tested
        flat = 1 / torch.sqrt(group["ess"] * (hess + group["weight_decay"]))
        sizes = [p.numel() for p in group["params"]]
        expected += [
            part.reshape(p.shape)
            for part, p in zip(flat.split(sizes), group["params"], strict=True)
        ]
    assert max_abs_diff(adapter.posterior_std(), expected) < 1e-12


@needs_ivon
@pytest.mark.parametrize("train", [False, True])
def test_ivon_sampled_params_restores_mu_when_the_body_raises(train):
    params = fresh_params()
    adapter = ivon_adapter(params, seed=3)
    run(adapter, params, range(3))
    before = [p.detach().clone() for p in params]
    with pytest.raises(KeyError), adapter.sampled_params(train=train):
        assert max_abs_diff(params, before) > 1e-3  # the body saw a draw
        raise KeyError("boom")
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    # The failed body recorded no gradient: the next step runs as usual.
    run(adapter, params, range(3, 4))
    assert torch.isfinite(torch.cat([p.detach().flatten() for p in params])).all()


@needs_ivon
def test_ivon_state_dict_saves_the_step_counter_and_resumes_bit_identically():
    params = fresh_params()
    adapter = ivon_adapter(params, seed=3, mc_samples=2)
    run(adapter, params, range(10))
    buffer = io.BytesIO()
    torch.save(
        {"optimizer": adapter.state_dict(), "params": [p.detach().clone() for p in params],
         "generator": adapter.generator.get_state()},
        buffer,
    )  # fmt: skip
    run(adapter, params, range(10, 20))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optimizer"]["state"]["current_step"] == 10
    resumed_params = [w.clone().requires_grad_() for w in saved["params"]]
    resumed = ivon_adapter(resumed_params, seed=999, mc_samples=2)
    resumed.load_state_dict(saved["optimizer"])
    resumed.generator.set_state(saved["generator"])
    assert resumed.current_step == 10
    run(resumed, resumed_params, range(10, 20))

    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params, strict=True))
    assert torch.equal(adapter.param_groups[0]["hess"], resumed.param_groups[0]["hess"])
    assert torch.equal(adapter.param_groups[0]["momentum"], resumed.param_groups[0]["momentum"])


@needs_ivon
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"Invalid learning rate: -1.0"),
        ({"ess": 0.0}, r"Invalid effective sample size: 0.0"),
        ({"beta1": 1.0}, r"Invalid beta1: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"beta2": 1.5}, r"Invalid beta2 parameter: 1.5"),
        ({"beta2": 1.0}, r"Invalid beta2: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"hess_init": 0.0}, r"Invalid Hessian initialization: 0.0"),
        ({"weight_decay": -1.0}, r"Invalid weight decay: -1.0"),
        ({"mc_samples": 0}, r"Invalid number of MC samples: 0"),
    ],
)
def test_ivon_rejects_invalid_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ivon_adapter(fresh_params(), seed=0, **kwargs)
