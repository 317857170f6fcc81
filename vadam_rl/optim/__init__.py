"""Variational optimizers with a posterior you can sample (see ``base.VariationalOptimizer``).

``IVON`` needs the optional ``ivon-opt`` package and is imported only when first used.
"""

from typing import Any

from vadam_rl.optim.adam_explore import AdamExplore
from vadam_rl.optim.base import VariationalOptimizer
from vadam_rl.optim.factory import build_optimizer
from vadam_rl.optim.vadagrad import VadaGrad
from vadam_rl.optim.vadam import Vadam, vadam
from vadam_rl.optim.vprop import Vprop

__all__ = [
    "IVON",
    "AdamExplore",
    "VadaGrad",
    "Vadam",
    "VariationalOptimizer",
    "Vprop",
    "build_optimizer",
    "vadam",
]


def __getattr__(name: str) -> Any:
    if name == "IVON":
        from vadam_rl.optim.ivon import IVON

        return IVON
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
