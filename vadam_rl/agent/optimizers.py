"""``build_optimizer``: the optimizer an ``OptimizerConfig`` names, for any network's params."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from vadam_rl.config import ConfigError, OptimizerConfig, TrainConfig
from vadam_rl.optim.adam import Adam
from vadam_rl.optim.adam_explore import AdamExplore
from vadam_rl.optim.vadagrad import VadaGrad
from vadam_rl.optim.vadam import Vadam
from vadam_rl.optim.vogn import VOGN
from vadam_rl.optim.vprop import Vprop
from vadam_rl.rng import Generators

Params = Iterable[Tensor] | Iterable[dict[str, Any]]
Builder = Callable[[Params, OptimizerConfig, Generators], torch.optim.Optimizer]


def build_optimizer(
    params: Params, cfg: OptimizerConfig, *, generator: Generators = None
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` names, built from the fields it uses.

    ``generator`` is the noise source of the variational optimizers (it must live on the
    parameters' device); plain Adam ignores it. Fields a name does not use are ignored.
    """
    try:
        builder = _BUILDERS[cfg.name]
    except KeyError:
        valid = ", ".join(_BUILDERS)
        raise ValueError(f"Invalid optimizer name: {cfg.name!r} (valid: {valid})") from None
    return builder(params, cfg, generator)


def check_optimizers(config: TrainConfig) -> None:
    """ConfigError for optimizer settings out of range: each optimizer's own checks, as
    ``torch.optim`` classes validate in ``__init__``, run on a one-weight stand-in."""
    for name in ("actor", "critic"):
        try:
            build_optimizer([torch.zeros(1, requires_grad=True)], getattr(config, name).optimizer)
        except (ValueError, ImportError) as err:  # ImportError: an optional optimizer package
            raise ConfigError(f"{name}.optimizer: {err}") from None


def _adam(params: Params, cfg: OptimizerConfig, generator: Generators):
    # vadam-rl's Adam: torch's, plus a graph mode for the compiled update.
    return Adam(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        # One kernel for all parameters: on a 2-core CPU the fused step takes half the time
        # of the foreach one (bench/optim_step.py), and torch has it on CPU and CUDA alike.
        fused=True,
    )


def _vadam(params: Params, cfg: OptimizerConfig, generator: Generators):
    return Vadam(
        params,
        train_set_size=cfg.train_set_size,
        num_samples=cfg.num_samples,
        lr=cfg.lr,
        betas=cfg.betas,
        prior_precision=cfg.prior_precision,
        precision_floor=cfg.precision_floor,
        damping_before_bias_correction=cfg.damping_before_bias_correction,
        generator=generator,
    )


def _vadagrad(params: Params, cfg: OptimizerConfig, generator: Generators):
    return VadaGrad(
        params,
        train_set_size=cfg.train_set_size,
        num_samples=cfg.num_samples,
        lr=cfg.lr,
        beta=cfg.betas[1],
        init_precision=cfg.init_precision,
        generator=generator,
    )


def _vprop(params: Params, cfg: OptimizerConfig, generator: Generators):
    return Vprop(
        params,
        train_set_size=cfg.train_set_size,
        num_samples=cfg.num_samples,
        lr=cfg.lr,
        beta=cfg.betas[1],
        prior_precision=cfg.prior_precision,
        precision_floor=cfg.precision_floor,
        generator=generator,
    )


def _ivon(params: Params, cfg: OptimizerConfig, generator: Generators):
    from vadam_rl.optim.ivon import IVON  # optional dependency: imported only when asked for

    n = cfg.train_set_size
    # IVON's precision is ess * (hess + weight_decay): ess = N, weight_decay = lambda/N, and
    # hess_init = init_precision/N makes the initial precision init_precision + lambda.
    return IVON(
        params,
        lr=cfg.lr,
        ess=n,
        hess_init=cfg.init_precision / n,
        beta1=cfg.betas[0],
        beta2=cfg.betas[1],
        weight_decay=cfg.prior_precision / n,
        mc_samples=cfg.num_samples,
        generator=generator,
    )


def _adam_explore(params: Params, cfg: OptimizerConfig, generator: Generators):
    return AdamExplore(
        params,
        lr=cfg.lr,
        sigma_lr=cfg.sigma_lr,
        betas=cfg.betas,
        eps=cfg.eps,
        init_precision=cfg.init_precision,
        eps_before_bias_correction=cfg.damping_before_bias_correction,
        generator=generator,
    )


def _vogn(params: Params, cfg: OptimizerConfig, generator: Generators):
    n = cfg.train_set_size
    # precision_floor c keeps its meaning, sigma <= 1/sqrt(c), as VOGN's damping c/N (which
    # also damps VOGN's Newton-like step: its preconditioner is the posterior precision).
    return VOGN(
        params,
        train_set_size=n,
        num_samples=cfg.num_samples,
        lr=cfg.lr,
        betas=cfg.betas,
        prior_precision=cfg.prior_precision,
        init_precision=cfg.init_precision,
        damping=cfg.precision_floor / n,
        generator=generator,
    )


_BUILDERS: dict[str, Builder] = {
    "adam": _adam,
    "vadam": _vadam,
    "vadagrad": _vadagrad,
    "vprop": _vprop,
    "ivon": _ivon,
    "adam-explore": _adam_explore,
    "vogn": _vogn,
}
