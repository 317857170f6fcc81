"""Variational optimizers with a posterior you can sample (see ``base.VariationalOptimizer``)."""

from vadam_rl.optim.base import VariationalOptimizer

__all__ = ["VariationalOptimizer"]
