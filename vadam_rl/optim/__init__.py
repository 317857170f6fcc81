"""Variational optimizers with a posterior you can sample (see ``base.VariationalOptimizer``),
and ``Adam``: torch's, with the graph mode a compiled update steps it through.

A library of ``torch.optim.Optimizer`` subclasses: it imports nothing of the rest of vadam-rl
but ``vadam_rl.rng`` (per-agent generators), so it can be used on any network.

``IVON`` needs the optional ``ivon-opt`` package and is imported only when first used.
"""

from typing import Any

from vadam_rl.optim.adam import Adam
from vadam_rl.optim.adam_explore import AdamExplore
from vadam_rl.optim.base import VariationalOptimizer
from vadam_rl.optim.per_example import PerExampleGradients, linear_grad_sq_means, per_example_grads
from vadam_rl.optim.vadagrad import VadaGrad
from vadam_rl.optim.vadam import Vadam, vadam
from vadam_rl.optim.vogn import VOGN, vogn, vogn_closure
from vadam_rl.optim.vprop import Vprop

__all__ = [
    "IVON",
    "VOGN",
    "Adam",
    "AdamExplore",
    "PerExampleGradients",
    "VadaGrad",
    "Vadam",
    "VariationalOptimizer",
    "Vprop",
    "linear_grad_sq_means",
    "per_example_grads",
    "vadam",
    "vogn",
    "vogn_closure",
]


def __getattr__(name: str) -> Any:
    if name == "IVON":
        from vadam_rl.optim.ivon import IVON

        return IVON
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
