"""Vadam: the paper's six lines, its RL variant, Bayesian linear regression, Adam, resuming."""

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
    closure_for,
    fresh_params,
    grad_at,
    max_abs_diff,
    mean_loss,
    randn_like_params,
    reference_rl_vadam,
    run,
)

from vadam_rl.optim import Vadam, vadam

# -- the algorithm, line by line ----------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 3])
def test_vadam_matches_a_float64_reference_of_the_six_lines_over_50_steps(num_samples):
    n, lam, prec0, lr, b1, b2 = 10.0, 1.0, 4.0, 0.01, 0.9, 0.999
    params = fresh_params()
    optimizer = Vadam(
        params,
        train_set_size=n,
        lr=lr,
        betas=(b1, b2),
        prior_precision=lam,
        init_precision=prec0,
        num_samples=num_samples,
        generator=torch.Generator().manual_seed(7),
    )
    # The reference, written from the paper, replays the same eps from its own generator.
    ref_noise = torch.Generator().manual_seed(7)
    mu = [w.clone() for w in INIT]
    m = [torch.zeros_like(w) for w in INIT]
    s = [torch.full_like(w, (prec0 - lam) / n) for w in INIT]  # precision starts at prec0
    for t in range(1, 51):
        optimizer.step(closure_for(optimizer, params, t))

        sigma = [1 / torch.sqrt(n * s_i + lam) for s_i in s]  # 1
        g = [torch.zeros_like(w) for w in INIT]
        g2 = [torch.zeros_like(w) for w in INIT]
        for _ in range(num_samples):
            eps = randn_like_params(ref_noise, mu)
            theta = [mu_i + sig * e for mu_i, sig, e in zip(mu, sigma, eps, strict=True)]
            grads = grad_at(theta, lambda w, t=t: mean_loss(w, t))  # 2
            g = [a + b / num_samples for a, b in zip(g, grads, strict=True)]
            g2 = [a + b * b / num_samples for a, b in zip(g2, grads, strict=True)]
        m = [
            b1 * m_i + (1 - b1) * (g_i + lam * mu_i / n)
            for m_i, g_i, mu_i in zip(m, g, mu, strict=True)
        ]  # 3
        s = [b2 * s_i + (1 - b2) * g2_i for s_i, g2_i in zip(s, g2, strict=True)]  # 4
        m_hat = [m_i / (1 - b1**t) for m_i in m]  # 5
        s_hat = [s_i / (1 - b2**t) for s_i in s]
        mu = [
            mu_i - lr * mh / (torch.sqrt(sh) + lam / n)  # 6
            for mu_i, mh, sh in zip(mu, m_hat, s_hat, strict=True)
        ]
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"

    expected_sigma = [1 / torch.sqrt(n * s_i + lam) for s_i in s]
    assert max_abs_diff(optimizer.posterior_std(), expected_sigma) < 1e-12


def test_foreach_and_single_tensor_kernels_agree():
    gen = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (3,), (2, 4)]
    mu = [torch.randn(s, generator=gen, dtype=DTYPE) for s in shapes]
    m = [torch.randn(s, generator=gen, dtype=DTYPE) for s in shapes]
    v = [torch.rand(s, generator=gen, dtype=DTYPE) for s in shapes]
    states = {flag: ([x.clone() for x in mu], [x.clone() for x in m], [x.clone() for x in v])
              for flag in (True, False)}  # fmt: skip
    for t in range(1, 6):
        grads = [torch.randn(s, generator=gen, dtype=DTYPE) for s in shapes]
        grad_sqs = None if t % 2 else [g * g + 0.1 for g in grads]  # one draw / several draws
        for foreach, (p, exp_avg, exp_avg_sq) in states.items():
            vadam(p, grads, grad_sqs, exp_avg, exp_avg_sq, [t] * 3, beta1=0.9, beta2=0.99,
                  lr=0.1, prior_precision=0.3, train_set_size=7.0,
                  damping_before_bias_correction=t > 3, foreach=foreach)  # fmt: skip
    for a, b in zip(states[True], states[False], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# -- the paper's RL setting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lam_ref", "c_ref"),
    [(1e-8, 1e4), (0.01, 3.0)],
    ids=["paper-values", "exaggerated-so-every-term-shows"],
)
def test_vadam_reproduces_the_reference_rl_update_on_summed_gradients(lam_ref, c_ref):
    """The RL mapping of the Vadam docstring: N = B^2, lambda = B*lambda_ref, TF damping."""
    lr, b1, b2 = 1e-3, 0.9, 0.999
    obs = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    params = fresh_params()
    optimizer = Vadam(
        params,
        train_set_size=BATCH**2,
        lr=lr,
        betas=(b1, b2),
        prior_precision=BATCH * lam_ref,
        precision_floor=c_ref + lam_ref - BATCH * lam_ref,
        damping_before_bias_correction=True,
        generator=torch.Generator().manual_seed(9),
    )

    closure = actor_closure(optimizer, params, obs)  # our convention: the batch mean
    reference = reference_rl_vadam(obs, torch.Generator().manual_seed(9), steps=50, lr=lr,
                                   betas=(b1, b2), lam_ref=lam_ref, c_ref=c_ref)  # fmt: skip
    for t, (mu, sigma) in enumerate(reference, start=1):
        optimizer.step(closure)
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"
        assert max_abs_diff(optimizer.posterior_std(), sigma) < 1e-12


def test_the_rl_match_needs_the_tensorflow_damping_placement():
    """Negative control: the same mapping with torch's placement of lambda/N drifts away."""
    lam_ref, c_ref, lr = 0.01, 3.0, 1e-3
    obs = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    finals = []
    for placement in (True, False):
        params = fresh_params()
        optimizer = Vadam(params, train_set_size=BATCH**2, lr=lr, prior_precision=BATCH * lam_ref,
                          precision_floor=c_ref + lam_ref - BATCH * lam_ref,
                          damping_before_bias_correction=placement,
                          generator=torch.Generator().manual_seed(9))  # fmt: skip
        for _ in range(10):
            optimizer.step(actor_closure(optimizer, params, obs))
        finals.append(params)
    assert max_abs_diff(*finals) > 1e-9


# -- Bayesian linear regression -----------------------------------------------------------------


def fit_linear_regression(batch_size, steps, lr_at, average_from):
    """Vadam on y = Xw + N(0, 1) noise with prior N(0, 1/lambda), N = 200, lambda = 50.

    The loss is the minibatch-mean NLL; minibatches of ``batch_size`` rows are drawn without
    replacement. Returns the data, the exact posterior, Vadam's final mu and sigma, and mu
    averaged from step ``average_from`` on (averaging iterates removes the jitter that the
    noisy gradients cause, leaving the fixed point).
    """
    n, lam = 200, 50.0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen, dtype=DTYPE) * torch.tensor([1.0, 0.5, 2.0], dtype=DTYPE)
    y = x @ torch.tensor([1.0, -0.5, 0.25], dtype=DTYPE) + torch.randn(
        n, generator=gen, dtype=DTYPE
    )
    hessian = x.T @ x
    precision = hessian + lam * torch.eye(3, dtype=DTYPE)
    theta = torch.zeros(3, dtype=DTYPE, requires_grad=True)
    optimizer = Vadam([theta], train_set_size=n, prior_precision=lam,
                      generator=torch.Generator().manual_seed(1))  # fmt: skip
    batches = torch.Generator().manual_seed(2)
    mu_sum = torch.zeros(3, dtype=DTYPE)
    for t in range(steps):
        rows = torch.randperm(n, generator=batches)[:batch_size]

        def closure(rows=rows):
            optimizer.zero_grad()
            loss = 0.5 * (y[rows] - x[rows] @ theta).pow(2).mean()
            loss.backward()
            return loss

        optimizer.param_groups[0]["lr"] = lr_at(t)
        optimizer.step(closure)
        if t >= average_from:
            mu_sum += theta.detach()
    return dict(
        x=x, y=y, n=n, m=batch_size, lam=lam, hessian=hessian,
        posterior_mean=torch.linalg.solve(precision, x.T @ y),
        least_squares=torch.linalg.solve(hessian, x.T @ y),
        exact_mean_field_precision=torch.diag(precision),
        mu=theta.detach().clone(), mu_avg=mu_sum / (steps - average_from),
        sigma=optimizer.posterior_std()[0],
    )  # fmt: skip


def test_vadam_mean_converges_to_the_posterior_mean():
    """The fixed point of m is E[g(theta)] + lambda*mu/N = 0, the posterior mean (linear g)."""
    r = fit_linear_regression(
        batch_size=200, steps=8000, lr_at=lambda t: 0.01 if t < 1000 else 0.002, average_from=2000
    )
    posterior_sd = r["exact_mean_field_precision"].rsqrt()
    error = ((r["mu_avg"] - r["posterior_mean"]) / posterior_sd).abs().max()
    assert error < 0.1, f"mu is {error:.3f} posterior sds from the posterior mean"
    # The prior matters here: ignoring it (least squares) would be several sds off.
    assert ((r["least_squares"] - r["posterior_mean"]) / posterior_sd).abs().max() > 2.0


def test_vadam_sigma_is_within_the_bias_theorem_1_predicts():
    """Vadam's precision N*s + lambda tracks N*E[g_hat^2] + lambda, not the Hessian.

    Theorem 1 of the paper: for a minibatch of M of N examples drawn without replacement,
    E[g_hat^2] = w * (1/N) sum_i g_i^2 + (1 - w) * g_bar^2 with w = (N - M) / (M (N - 1)):
    the squared minibatch gradient mixes the gradient-magnitude (GM) approximation of the
    Hessian with the square of the full gradient, which is near 0 at the optimum. For linear
    regression everything is Gaussian, so E over theta ~ N(mu, sigma^2) has a closed form:
    with residuals r_i = x_i.theta - y_i, g_ij = x_ij r_i and E[r_i^2] = (x_i.mu - y_i)^2 +
    sum_k x_ik^2 sigma_k^2. We check that Vadam's precision matches this prediction (within
    the noise of s's moving average) and therefore sits far below the exact mean-field
    posterior precision diag(X^T X) + lambda: with M = 10 the bias is 1.5- to 6-fold, as
    predicted, and the exact precision is no closer than the prediction allows.
    """
    steps = 6000
    r = fit_linear_regression(
        batch_size=10,
        steps=steps,
        lr_at=lambda t: 1e-4 + 0.5 * (0.01 - 1e-4) * (1 + math.cos(math.pi * t / steps)),
        average_from=steps,
    )
    x, y, n, m, lam, mu, sigma = r["x"], r["y"], r["n"], r["m"], r["lam"], r["mu"], r["sigma"]
    var = sigma**2
    mean_sq_residual = (x @ mu - y) ** 2 + (x**2) @ var
    gm_over_n = ((x**2) * mean_sq_residual[:, None]).mean(dim=0)  # (1/N) sum_i E[g_ij^2]
    g_bar = (r["hessian"] @ mu - x.T @ y) / n
    g_bar_sq = g_bar**2 + (r["hessian"] ** 2) @ var / n**2  # E[g_bar_j^2]
    w = (n - m) / (m * (n - 1))
    predicted = n * (w * gm_over_n + (1 - w) * g_bar_sq) + lam
    vadam_precision = 1 / var
    exact = r["exact_mean_field_precision"]

    torch.testing.assert_close(vadam_precision, predicted, rtol=0.1, atol=0)
    assert torch.all(exact > 1.5 * predicted)  # the bias is real and large here ...
    assert torch.all((vadam_precision - exact).abs() <= (predicted - exact).abs() + 0.1 * predicted)


# -- Adam equivalence ---------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [True, False])
def test_without_perturbation_and_prior_vadam_is_adam_bit_for_bit(foreach):
    """precision_floor = inf gives sigma = 0 and lambda = 0 removes the prior: Adam(eps=0).

    With a prior no ``torch.optim.Adam`` setting can match, and this is why: Vadam adds the
    prior's gradient lambda*mu/N to g in m only (the reference squares the data gradient
    alone for s), whereas Adam's coupled weight_decay adds it before both moments and its
    decoupled one (AdamW) to neither. The prior's path is pinned down by the float64
    six-line reference above instead.
    """
    ours, theirs = fresh_params(), fresh_params()
    vadam_opt = Vadam(ours, train_set_size=7.0, lr=0.01, prior_precision=0.0,
                      precision_floor=math.inf, foreach=foreach)  # fmt: skip
    adam_opt = torch.optim.Adam(theirs, lr=0.01, eps=0.0, foreach=foreach)
    for t in range(20):
        vadam_opt.step(closure_for(vadam_opt, ours, t))
        adam_opt.step(closure_for(adam_opt, theirs, t))
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), f"step {t}"
    assert all(torch.equal(s, torch.zeros_like(s)) for s in vadam_opt.posterior_std())


# -- exact restore and resume -------------------------------------------------------------------


def test_step_restores_mu_exactly_before_updating_it():
    """With lr = 0 the update is a no-op, so the parameters must come back bit for bit."""
    params = fresh_params()
    before = [p.detach().clone() for p in params]
    optimizer = Vadam(params, train_set_size=10, lr=0.0, generator=torch.Generator().manual_seed(0))
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in params])
        return closure_for(optimizer, params, 0)()

    for _ in range(3):
        optimizer.step(closure)
    assert all(max_abs_diff(theta, before) > 1e-3 for theta in seen)  # the closure saw theta
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_step_restores_mu_when_the_closure_raises():
    params = fresh_params()
    before = [p.detach().clone() for p in params]
    optimizer = Vadam(params, train_set_size=10, generator=torch.Generator().manual_seed(0))

    def closure():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        optimizer.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_state_dict_round_trip_resumes_bit_identically():
    """Save after 10 steps (optimizer state, weights, generator state), reload, continue."""
    params = fresh_params()
    generator = torch.Generator().manual_seed(11)
    optimizer = Vadam(params, train_set_size=20, lr=0.01, num_samples=2, generator=generator)
    run(optimizer, params, range(10))
    buffer = io.BytesIO()
    torch.save(
        {"optimizer": optimizer.state_dict(), "params": [p.detach() for p in params],
         "generator": generator.get_state()},
        buffer,
    )  # fmt: skip
    run(optimizer, params, range(10, 20))

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_params = [w.clone().requires_grad_() for w in saved["params"]]
    resumed_generator = torch.Generator().manual_seed(999)
    resumed = Vadam(resumed_params, train_set_size=20, lr=0.01, num_samples=2,
                    generator=resumed_generator)  # fmt: skip
    resumed.load_state_dict(saved["optimizer"])
    resumed_generator.set_state(saved["generator"])
    run(resumed, resumed_params, range(10, 20))

    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params, strict=True))
    assert all(
        torch.equal(a, b)
        for a, b in zip(optimizer.posterior_std(), resumed.posterior_std(), strict=True)
    )


# -- param groups, dtypes -----------------------------------------------------------------------


def test_each_param_group_uses_its_own_train_set_size_and_prior():
    params = fresh_params()
    optimizer = Vadam(
        [
            {"params": params[:2]},
            {"params": params[2:], "train_set_size": 1e4, "prior_precision": 4.0},
        ],
        train_set_size=10,
        prior_precision=1.0,
    )
    sigma = optimizer.posterior_std()
    assert all(torch.equal(s, torch.ones_like(s)) for s in sigma[:2])  # 1/sqrt(1)
    assert all(torch.equal(s, torch.full_like(s, 0.5)) for s in sigma[2:])  # 1/sqrt(4)


def test_float32_parameters_get_float32_state_and_noise():
    params = fresh_params(dtype=torch.float32)
    optimizer = Vadam(params, train_set_size=10, generator=torch.Generator().manual_seed(0))
    run(optimizer, params, range(3))
    assert all(p.dtype == torch.float32 for p in params)
    assert all(s.dtype == torch.float32 for s in optimizer.posterior_std())
    assert all(optimizer.state[p]["exp_avg_sq"].dtype == torch.float32 for p in params)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"learning rate lr: -1.0 \(must be >= 0"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\]: 1.0 \(must be in \[0.0, 1.0\)"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]: -0.1 \(must be in \[0.0, 1.0\)"),
        ({"train_set_size": 0}, r"train_set_size: 0 \(must be > 0"),
        ({"prior_precision": -1.0}, r"prior_precision: -1.0 \(must be >= 0"),
        ({"precision_floor": -1.0}, r"precision_floor: -1.0 \(must be >= 0"),
        ({"init_precision": 0.5}, r"init_precision: 0.5 \(must be >= prior_precision"),
        ({"num_samples": 0}, r"num_samples: 0 \(must be an integer >= 1"),
        ({"prior_precision": 0.0}, r"initial precision .* must be > 0"),
    ],
)
def test_invalid_arguments_raise_value_errors_naming_the_argument_and_range(kwargs, message):
    arguments = {"train_set_size": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        Vadam(fresh_params(), **arguments)


def test_invalid_per_group_hyperparameters_are_rejected_too():
    with pytest.raises(ValueError, match="train_set_size"):
        Vadam([{"params": fresh_params(), "train_set_size": -5}], train_set_size=10)


def test_step_without_closure_raises_a_value_error():
    optimizer = Vadam(fresh_params(), train_set_size=10)
    with pytest.raises(ValueError, match="needs a closure"):
        optimizer.step()
