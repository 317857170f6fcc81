"""The ``VariationalOptimizer`` contract, kept by all five optimizers, and ``build_optimizer``.

The contract (``vadam_rl.optim.base``): mu lives in the parameters outside ``step`` and
``sampled_params`` and comes back bit for bit, draws are theta = mu + sigma * eps with eps from
the optimizer's generator, ``sample_into`` fills other tensors, and a checkpoint resumes
bit-identically. The numbers each optimizer computes are pinned down in
``test_optim_vadam.py`` and ``test_optim_variants.py``.
"""

from __future__ import annotations

import io

import pytest
import torch
from optim_helpers import (
    BATCH,
    DTYPE,
    INIT,
    actor_closure,
    closure_for,
    fresh_params,
    max_abs_diff,
    needs_ivon,
    randn_like_params,
    reference_rl_vadam,
    run,
)
from torch import nn

from vadam_rl.agent.optimizers import _BUILDERS, build_optimizer
from vadam_rl.config import OptimizerConfig, list_presets, load_preset
from vadam_rl.optim import (
    VOGN,
    Adam,
    AdamExplore,
    VadaGrad,
    Vadam,
    VariationalOptimizer,
    Vprop,
)

VARIATIONAL = ["vadam", "vadagrad", "vprop", "adam-explore", pytest.param("ivon", marks=needs_ivon)]
CLASSES = {"vadam": Vadam, "vadagrad": VadaGrad, "vprop": Vprop, "adam-explore": AdamExplore}

# Each starts at precision 4 (sigma = 0.5), so that a draw is plainly visible.
HYPERPARAMETERS = {
    "vadam": dict(train_set_size=10, lr=0.01, init_precision=4.0),
    "vadagrad": dict(train_set_size=10, lr=0.01, init_precision=4.0),
    "vprop": dict(train_set_size=10, lr=0.01, init_precision=4.0),
    "adam-explore": dict(lr=0.01, sigma_lr=0.1, init_precision=4.0),
    "ivon": dict(lr=0.05, ess=10.0, hess_init=0.3, weight_decay=0.1, beta2=0.9),
}


# A second param group that differs in the scale of its sigma (one scale per group).
SECOND_GROUP = {
    "vadam": dict(train_set_size=40),
    "vadagrad": dict(train_set_size=40),
    "vprop": dict(train_set_size=40),
    "adam-explore": dict(init_precision=16.0),
    "ivon": dict(ess=40.0),
}
GROUPS = pytest.mark.parametrize("groups", [1, 2], ids=["one-group", "two-groups"])


def build(name: str, params, seed: int = 0, groups: int = 1, **overrides):
    """Optimizer ``name`` with a generator seeded with ``seed`` (IVON imported only here).

    ``groups=2`` puts the last two parameters in a param group of their own.
    """
    if name == "ivon":
        from vadam_rl.optim.ivon import IVON as cls
    else:
        cls = CLASSES[name]
    if groups == 2:
        params = [{"params": params[:2]}, {"params": params[2:], **SECOND_GROUP[name]}]
    hyper = {**HYPERPARAMETERS[name], **overrides}
    return cls(params, **hyper, generator=torch.Generator().manual_seed(seed))


def replayed_draw(name: str, optimizer, generator_state: torch.Tensor) -> list[torch.Tensor]:
    """mu + sigma * eps with eps replayed as documented, from a copy of the generator's state.

    The diagonal optimizers draw one ``torch.randn(p.shape)`` per parameter; IVON, like
    ``ivon``, one flat ``torch.randn(numel)`` per param group.
    """
    noise = torch.Generator()
    noise.set_state(generator_state)
    mu = [p.detach() for group in optimizer.param_groups for p in group["params"]]
    if name == "ivon":
        eps = []
        for group in optimizer.param_groups:
            flat = torch.randn(sum(p.numel() for p in group["params"]), generator=noise,
                               dtype=DTYPE)  # fmt: skip
            sizes = [p.numel() for p in group["params"]]
            eps += [e.reshape(p.shape) for e, p in zip(flat.split(sizes), group["params"],
                                                      strict=True)]  # fmt: skip
    else:
        eps = randn_like_params(noise, mu)
    sigma = optimizer.posterior_std()
    return [m + s * e for m, s, e in zip(mu, sigma, eps, strict=True)]


def same_shaped_module() -> nn.Module:
    """A network whose parameters have the shapes of ``INIT``: (5, 3), (5,), (2, 5), (2,)."""
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(DTYPE)


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from tensors_in(value)


def holds_a_generator(obj) -> bool:
    if isinstance(obj, torch.Generator):
        return True
    if isinstance(obj, dict):
        return any(holds_a_generator(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(holds_a_generator(v) for v in obj)
    return False


# -- the protocol -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIATIONAL)
def test_is_a_torch_optimizer_and_a_variational_optimizer(name):
    optimizer = build(name, fresh_params())
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert isinstance(optimizer, VariationalOptimizer)
    assert not isinstance(torch.optim.Adam(fresh_params()), VariationalOptimizer)


@pytest.mark.parametrize("name", VARIATIONAL)
def test_posterior_std_is_a_fresh_positive_tensor_per_parameter(name):
    params = fresh_params()
    optimizer = build(name, params)
    sigma = optimizer.posterior_std()
    assert [s.shape for s in sigma] == [p.shape for p in params]
    assert all(torch.all(s > 0) for s in sigma)
    for s in sigma:
        s.zero_()  # callers may keep and modify what they get
    assert all(torch.all(s > 0) for s in optimizer.posterior_std())


@pytest.mark.parametrize("name", VARIATIONAL)
@GROUPS
def test_sampled_params_writes_one_posterior_draw_and_restores_mu_bit_for_bit(name, groups):
    params = fresh_params()
    optimizer = build(name, params, seed=4, groups=groups)
    run(optimizer, params, range(3))
    mu = [p.detach().clone() for p in params]
    expected = replayed_draw(name, optimizer, optimizer.generator.get_state())
    with optimizer.sampled_params():
        assert max_abs_diff(params, expected) < 1e-12
        assert max_abs_diff(params, mu) > 0.1
    assert all(torch.equal(p, m) for p, m in zip(params, mu, strict=True))


@pytest.mark.parametrize("name", VARIATIONAL)
def test_sampled_params_restores_mu_when_the_body_raises(name):
    params = fresh_params()
    optimizer = build(name, params, seed=4)
    run(optimizer, params, range(3))
    mu = [p.detach().clone() for p in params]
    with pytest.raises(KeyError), optimizer.sampled_params():
        raise KeyError("boom")
    assert all(torch.equal(p, m) for p, m in zip(params, mu, strict=True))


@pytest.mark.parametrize("name", VARIATIONAL)
def test_step_evaluates_the_closure_at_a_draw_and_restores_mu_before_updating(name):
    """With lr = 0 the mean does not move, so it must come back bit for bit."""
    params = fresh_params()
    optimizer = build(name, params, seed=4, lr=0.0)
    mu = [p.detach().clone() for p in params]
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in params])
        return closure_for(optimizer, params, 0)()

    for _ in range(3):
        optimizer.step(closure)
    assert all(max_abs_diff(theta, mu) > 0.1 for theta in seen)
    assert all(torch.equal(p, m) for p, m in zip(params, mu, strict=True))


@pytest.mark.parametrize("name", VARIATIONAL)
def test_step_restores_mu_when_the_closure_raises(name):
    params = fresh_params()
    optimizer = build(name, params, seed=4)
    mu = [p.detach().clone() for p in params]

    def closure():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        optimizer.step(closure)
    assert all(torch.equal(p, m) for p, m in zip(params, mu, strict=True))


@pytest.mark.parametrize("name", VARIATIONAL)
@GROUPS
def test_sample_into_writes_a_draw_into_another_module_and_leaves_mu_alone(name, groups):
    params = fresh_params()
    optimizer = build(name, params, seed=4, groups=groups)
    run(optimizer, params, range(3))
    mu = [p.detach().clone() for p in params]
    behaviour = same_shaped_module()
    expected = replayed_draw(name, optimizer, optimizer.generator.get_state())
    optimizer.sample_into(behaviour.parameters())
    assert max_abs_diff(list(behaviour.parameters()), expected) < 1e-12
    assert all(torch.equal(p, m) for p, m in zip(params, mu, strict=True))
    # A second call draws afresh.
    first = [w.detach().clone() for w in behaviour.parameters()]
    optimizer.sample_into(behaviour.parameters())
    assert max_abs_diff(list(behaviour.parameters()), first) > 0.1


@pytest.mark.parametrize("name", VARIATIONAL)
def test_sample_into_rejects_tensors_of_other_shapes(name):
    params = fresh_params()
    optimizer = build(name, params)
    wrong = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DTYPE)
    before = [w.detach().clone() for w in wrong.parameters()]
    with pytest.raises(ValueError, match=r"shaped like the optimizer's parameters.*\(5, 3\)"):
        optimizer.sample_into(wrong.parameters())
    with pytest.raises(ValueError, match="shaped like"):
        optimizer.sample_into(params[:3])  # one tensor short
    assert all(torch.equal(w, b) for w, b in zip(wrong.parameters(), before, strict=True))


@pytest.mark.parametrize("name", VARIATIONAL)
@GROUPS
def test_state_dict_through_torch_load_weights_only_resumes_bit_identically(name, groups):
    """Save after 5 steps (optimizer, weights, generator state), reload into fresh objects."""
    params = fresh_params()
    optimizer = build(name, params, seed=11, groups=groups)
    run(optimizer, params, range(5))
    buffer = io.BytesIO()
    torch.save(
        {"optimizer": optimizer.state_dict(), "params": [p.detach().clone() for p in params],
         "generator": optimizer.generator.get_state()},
        buffer,
    )  # fmt: skip
    run(optimizer, params, range(5, 10))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_params = [w.clone().requires_grad_() for w in saved["params"]]
    resumed = build(name, resumed_params, seed=999, groups=groups)
    generator = resumed.generator
    resumed.load_state_dict(saved["optimizer"])
    generator.set_state(saved["generator"])
    run(resumed, resumed_params, range(5, 10))

    assert resumed.generator is generator  # loading state does not replace the caller's
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params, strict=True))
    assert all(
        torch.equal(a, b)
        for a, b in zip(optimizer.posterior_std(), resumed.posterior_std(), strict=True)
    )


@pytest.mark.parametrize("name", VARIATIONAL)
def test_the_generator_is_the_callers_not_optimizer_state(name):
    params = fresh_params()
    optimizer = build(name, params)
    run(optimizer, params, range(2))
    assert isinstance(optimizer.generator, torch.Generator)
    assert not holds_a_generator(optimizer.param_groups)
    assert not holds_a_generator(optimizer.state_dict())


@pytest.mark.parametrize("name", VARIATIONAL)
def test_float32_parameters_get_float32_state_and_draws(name):
    params = fresh_params(dtype=torch.float32)
    optimizer = build(name, params)
    run(optimizer, params, range(3))
    state = list(tensors_in(optimizer.state_dict()))
    assert state  # the walk found the moments / precisions
    assert all(t.dtype == torch.float32 for t in state if t.is_floating_point())
    assert all(s.dtype == torch.float32 for s in optimizer.posterior_std())
    assert all(p.dtype == torch.float32 for p in params)
    behaviour = same_shaped_module().float()
    optimizer.sample_into(behaviour.parameters())
    assert all(torch.isfinite(w).all() for w in behaviour.parameters())


@pytest.mark.parametrize("name", VARIATIONAL)
def test_a_negative_learning_rate_is_rejected_with_a_readable_message(name):
    with pytest.raises(ValueError, match=r"Invalid learning rate.*-1.0"):
        build(name, fresh_params(), lr=-1.0)


@pytest.mark.parametrize("name", VARIATIONAL)
def test_step_without_closure_raises_a_value_error_that_says_what_to_pass(name):
    optimizer = build(name, fresh_params())
    with pytest.raises(ValueError, match=r"needs a closure.*backward\(\)"):
        optimizer.step()


# -- build_optimizer ----------------------------------------------------------------------------

# Every field away from its default, so that a field that does not land shows.
CONFIG = dict(lr=0.0123, betas=(0.8, 0.95), weight_decay=0.01, eps=1e-5,
              damping_before_bias_correction=True, prior_precision=0.3, train_set_size=50.0,
              precision_floor=2.0, init_precision=7.0, sigma_lr=0.02)  # fmt: skip
EXPECTED = {
    "adam": (Adam, dict(lr=0.0123, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.01)),
    "vadam": (Vadam, dict(lr=0.0123, betas=(0.8, 0.95), prior_precision=0.3, train_set_size=50.0,
                          precision_floor=2.0, damping_before_bias_correction=True)),
    "vadagrad": (VadaGrad, dict(lr=0.0123, beta=0.95, train_set_size=50.0, init_precision=7.0)),
    "vprop": (Vprop, dict(lr=0.0123, beta=0.95, prior_precision=0.3, train_set_size=50.0,
                          precision_floor=2.0)),
    "adam-explore": (AdamExplore, dict(lr=0.0123, sigma_lr=0.02, betas=(0.8, 0.95), eps=1e-5,
                                       init_precision=7.0, eps_before_bias_correction=True)),
    # IVON's precision ess * (hess + weight_decay) read as N*h + lambda: see the factory.
    "ivon": (None, dict(lr=0.0123, ess=50.0, hess_init=7.0 / 50.0, beta1=0.8, beta2=0.95,
                        weight_decay=0.3 / 50.0)),
    # precision_floor c as VOGN's damping c/N (its contract is tested in test_optim_vogn.py:
    # its closure hands over per-example curvature, which the closures here do not).
    "vogn": (VOGN, dict(lr=0.0123, betas=(0.8, 0.95), prior_precision=0.3, train_set_size=50.0,
                        init_precision=7.0, damping=2.0 / 50.0)),
}  # fmt: skip


def test_every_factory_name_is_covered_here():
    assert set(_BUILDERS) == set(EXPECTED)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=needs_ivon) if n == "ivon" else n for n in EXPECTED]
)
def test_every_name_builds_its_optimizer_with_the_configs_values(name):
    cls, expected = EXPECTED[name]
    if name == "ivon":
        from vadam_rl.optim.ivon import IVON as cls
    generator = torch.Generator().manual_seed(0)
    optimizer = build_optimizer(
        fresh_params(), OptimizerConfig(name=name, **CONFIG), generator=generator
    )
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert {key: group[key] for key in expected} == expected
    if name != "adam":
        assert optimizer.generator is generator


@needs_ivon
def test_ivon_from_the_factory_starts_at_precision_init_precision_plus_prior():
    cfg = OptimizerConfig(name="ivon", **CONFIG)
    optimizer = build_optimizer(fresh_params(), cfg)
    expected = [
        torch.full_like(w, (cfg.init_precision + cfg.prior_precision) ** -0.5) for w in INIT
    ]
    # ivon fills its hess through a default-dtype (float32) scalar: hess_init is rounded there.
    torch.testing.assert_close(optimizer.posterior_std(), expected, rtol=1e-7, atol=0)


def test_an_unknown_name_raises_a_value_error_listing_the_valid_names():
    valid = "adam, vadam, vadagrad, vprop, ivon, adam-explore, vogn"
    with pytest.raises(ValueError, match=rf"Invalid optimizer name: 'sgd' \(valid: {valid}\)"):
        build_optimizer(fresh_params(), OptimizerConfig(name="sgd"))  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_every_shipped_preset_builds_both_its_optimizers(preset):
    cfg = load_preset(preset)
    for network in (cfg.actor, cfg.critic):
        if network.optimizer.name == "ivon":
            pytest.importorskip("ivon", reason="the optional package ivon-opt is not installed")
        optimizer = build_optimizer(fresh_params(), network.optimizer)
        assert isinstance(optimizer, torch.optim.Optimizer)
    if cfg.exploration.kind == "posterior":
        assert isinstance(build_optimizer(fresh_params(), cfg.actor.optimizer),
                          VariationalOptimizer)  # fmt: skip


def test_the_ddpg_vadam_preset_builds_the_reference_rl_vadam():
    """The paper's actor: summed gradient over B = 64, lambda_ref 1e-8, c 1e4, lr 1e-4."""
    cfg = load_preset("ddpg-vadam")
    assert cfg.batch_size == BATCH
    obs = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    params = fresh_params()
    optimizer = build_optimizer(params, cfg.actor.optimizer,
                                generator=torch.Generator().manual_seed(9))  # fmt: skip
    assert isinstance(optimizer, Vadam)
    closure = actor_closure(optimizer, params, obs)
    reference = reference_rl_vadam(obs, torch.Generator().manual_seed(9), steps=50, lr=1e-4,
                                   betas=(0.9, 0.999), lam_ref=1e-8, c_ref=1e4)  # fmt: skip
    for t, (mu, sigma) in enumerate(reference):
        optimizer.step(closure)
        assert max_abs_diff(params, mu) < 1e-12, f"step {t}"
        # The preset's lambda + c is 1e4 + 6.4e-7, the reference's 1e4 + 1e-8: sigma differs
        # by 3e-11 relatively (far below the float32 the reference ran in).
        torch.testing.assert_close(optimizer.posterior_std(), sigma, rtol=1e-10, atol=0)
    assert max_abs_diff(mu, INIT) > 1e-3
