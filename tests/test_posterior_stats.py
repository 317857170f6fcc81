"""The posterior's shape per layer (``vadam_rl.posterior_stats``) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vadam_rl.optim import VOGN, Vadam
from vadam_rl.posterior_stats import group_floor_precision, layer_sigma_stats


def known_sigma(shape, seed=0) -> torch.Tensor:
    """Positive, spread over two orders of magnitude, with ties and a value at the floor."""
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.randn(shape, generator=gen, dtype=torch.float64))
    sigma.view(-1)[:3] = 0.5  # ties
    return sigma


def test_percentiles_and_their_ratio_match_numpy():
    sigma = known_sigma((7, 11))
    stats = layer_sigma_stats(sigma)
    p10, p50, p90 = np.percentile(sigma.numpy(), [10, 50, 90])
    assert stats["p10"].item() == pytest.approx(p10, rel=1e-14)
    assert stats["p50"].item() == pytest.approx(p50, rel=1e-14)
    assert stats["p90"].item() == pytest.approx(p90, rel=1e-14)
    assert stats["p90_over_p10"].item() == pytest.approx(p90 / p10, rel=1e-14)
    assert stats["at_floor"].item() == 0.0  # no floor given


def test_each_agent_gets_its_own_statistics():
    sigma = torch.stack([known_sigma((5, 4), seed=1), 3.0 * known_sigma((5, 4), seed=2)])
    stats = layer_sigma_stats(sigma, agent_dim=True)
    for k in range(2):
        expected = np.percentile(sigma[k].numpy(), [10, 50, 90])
        got = [stats[key][k].item() for key in ("p10", "p50", "p90")]
        np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert stats["p50"].shape == (2,)


def test_an_isotropic_layer_has_ratio_one():
    stats = layer_sigma_stats(torch.full((4, 6), 0.01))
    assert stats["p90_over_p10"].item() == 1.0


def test_at_floor_counts_sigmas_within_one_percent_of_the_floors_precision():
    c = 1e4  # sigma at the floor alone: 0.01; within 1% of the precision: >= 0.01/sqrt(1.01)
    sigma = torch.tensor([0.01, 0.01 / 1.01**0.5 * 1.000001, 0.0099, 0.005], dtype=torch.float64)
    stats = layer_sigma_stats(sigma, c)
    assert stats["at_floor"].item() == pytest.approx(2 / 4)
    expected = np.mean(sigma.numpy() ** 2 * c >= 1 / 1.01)
    assert stats["at_floor"].item() == pytest.approx(expected)


def test_the_floor_precision_of_vadam_and_vogn_groups():
    params = list(nn.Linear(2, 2).parameters())
    vadam = Vadam(params, train_set_size=100.0, precision_floor=1e4)
    vogn = VOGN(params, train_set_size=100.0, damping=3.0)
    assert group_floor_precision(vadam.param_groups[0]) == 1e4
    assert group_floor_precision(vogn.param_groups[0]) == 300.0
    assert group_floor_precision(torch.optim.Adam(params).param_groups[0]) == 0.0
    # VOGN's damping bounds sigma <= 1/sqrt(N * damping): at the start every weight is there
    # up to the initial precision lambda = 1 (1/301 of the precision, inside the 1% margin).
    for sigma in vogn.posterior_std():
        stats = layer_sigma_stats(sigma, group_floor_precision(vogn.param_groups[0]))
        assert stats["at_floor"].item() == 1.0


def test_training_logs_every_statistic_per_actor_layer_and_agent():
    from vadam_rl.training.outputs import _posterior_shapes

    params = [torch.zeros(2, 3, 4, requires_grad=True), torch.zeros(2, 3, requires_grad=True)]
    optimizer = VOGN(params, train_set_size=10.0, init_precision=4.0, damping=0.2)
    for p in params:  # a state with shape: s differs per weight and per agent
        optimizer.state[p]["exp_avg_sq"] = known_sigma(p.shape, seed=p.dim()) ** -2
    sigmas = optimizer.posterior_std()
    logged = _posterior_shapes(optimizer, sigmas)
    for layer, sigma in zip(logged, sigmas, strict=True):
        for k in range(2):
            expected = layer_sigma_stats(sigma[k], 10.0 * 0.2)
            assert {key: values[k] for key, values in layer.items()} == {
                key: value.item() for key, value in expected.items()
            }
        assert layer["p90_over_p10"][0] != layer["p90_over_p10"][1]
