"""The shape of a posterior: percentiles of sigma within a layer, per agent.

A mean sigma per layer says how much a layer explores, not how: the same mean can be every
weight alike (isotropic noise, what parameter noise adds) or a few weights carrying most of
it (the posterior telling the weights apart). Per layer and agent this reports

- ``p10``, ``p50``, ``p90``: the 10th, 50th and 90th percentile of sigma over the layer's
  weights (linear interpolation between order statistics, numpy's default);
- ``p90_over_p10``: their ratio, one number for how much shape there is (1.0 = isotropic);
- ``at_floor``: the share of weights whose precision is at the optimizer's floor c, where the
  data's part is under 1% of c, so sigma >= 1/sqrt(1.01 c) (0 without a floor).

It depends on torch alone, so the training loop's logging and scripts reading checkpoints
share it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

PERCENTILES = (10, 50, 90)


def group_floor_precision(param_group: dict[str, Any]) -> float:
    """c, the constant a variational optimizer's param group adds to the posterior precision
    (so sigma <= 1/sqrt(c)): Vadam's and Vprop's ``precision_floor``, VOGN's N * ``damping``;
    0 for the others."""
    if "damping" in param_group and "train_set_size" in param_group:  # VOGN
        return float(param_group["train_set_size"] * param_group["damping"])
    return float(param_group.get("precision_floor", 0.0))


def layer_sigma_stats(
    sigma: Tensor, floor_precision: float = 0.0, *, agent_dim: bool = False
) -> dict[str, Tensor]:
    """Percentiles, their 90/10 ratio and the at-floor share of one layer's sigma.

    sigma: the layer's posterior std, any shape; with ``agent_dim`` (K, ...) and every
    statistic is computed per agent. ``floor_precision``: c, the constant the optimizer adds
    to the precision (Vadam's ``precision_floor``, VOGN's N * ``damping``), 0 for none.
    Returns {"p10", "p50", "p90", "p90_over_p10", "at_floor"}: 0-d tensors, or (K,) with
    ``agent_dim``, in float64 on sigma's device (no host sync here).
    """
    flat = sigma.detach().to(torch.float64)
    flat = flat.reshape(flat.shape[0], -1) if agent_dim else flat.reshape(1, -1)
    q = torch.tensor([p / 100 for p in PERCENTILES], dtype=torch.float64, device=flat.device)
    p10, p50, p90 = torch.quantile(flat, q, dim=1)  # each (K,)
    if floor_precision > 0:
        at_floor = (flat.square() * floor_precision >= 1 / 1.01).to(torch.float64).mean(dim=1)
    else:
        at_floor = torch.zeros_like(p10)
    stats = {"p10": p10, "p50": p50, "p90": p90, "p90_over_p10": p90 / p10, "at_floor": at_floor}
    return stats if agent_dim else {key: value[0] for key, value in stats.items()}
