r"""VOGN: a Newton-like step whose curvature is the mean of squared per-example gradients.

Khan, Nielsen, Tangkaratt, Lin, Gal, Srivastava. "Fast and Scalable Bayesian Deep Learning by
Weight-Perturbation in Adam", ICML 2018, https://arxiv.org/abs/1806.04854 (Variational Online
Gauss-Newton, reference code ``VOGN`` in https://github.com/emtiyaz/vadam,
``pytorch/vadam/optimizers.py``); at scale with momentum and a damped curvature: Osawa,
Swaroop, Jain, Eschenhagen, Turner, Yokota, Khan. "Practical Deep Learning with Bayesian
Principles", NeurIPS 2019, https://arxiv.org/abs/1906.02506 (code:
https://github.com/team-approx-bayes/dl-with-bayes on PyTorch-SSO's ``torchsso.optim.VOGN``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vadam_rl.optim.gaussian import (
    Closure,
    DiagonalGaussianOptimizer,
    check_num_samples,
    check_range,
    require_closure,
)
from vadam_rl.optim.per_example import per_example_grads
from vadam_rl.optim.vadam import init_state_like_reference, sigma_from_second_moment
from vadam_rl.rng import Generators

__all__ = ["VOGN", "vogn", "vogn_closure"]


class VOGN(DiagonalGaussianOptimizer):
    r"""Variational Online Gauss-Newton: a mean-field Gaussian posterior N(mu, sigma^2) whose
    precision is N times a running mean of *per-example* squared gradients.

    Per weight, with N = ``train_set_size``, lambda = ``prior_precision``, delta =
    ``damping``, (b1, b2) = ``betas`` and (m, s) the state, one ``step(closure)`` does

    .. code-block:: text

        sigma = 1 / sqrt(N * (s + lambda/N + delta));  eps ~ N(0, I);  theta = mu + sigma*eps
        g     = (1/M) sum_i g_i    the minibatch-mean gradient at theta      (p.grad)
        h     = (1/M) sum_i g_i^2  the mean of per-example squared gradients at theta
        s     = b2*s + (1-b2) * h
        m     = b1*m + (1-b1) * (g + lambda*mu/N)
        mu    = mu - lr * m / (1 - b1^t) / (s + lambda/N + delta)

    The step divides by s itself, not sqrt(s): a Newton step with the Gauss-Newton
    (per-example) curvature in place of the Hessian, preconditioned by the posterior's own
    precision (s is not bias-corrected; it is what sigma is made of). Vadam, by contrast,
    squares the *minibatch* gradient, which Theorem 1 of the paper relates to h:
    for M of N examples drawn without replacement, E[g^2] = w*h_N + (1-w)*g_N^2 with
    w = (N-M)/(M(N-1)) (h_N, g_N the full-batch means; see ``docs/optimizers.md``).
    ``betas`` follow ``torch.optim.Adam``: b2 weighs the *old* s, so the papers' beta (the
    weight of the new h, PyTorch-SSO's curvature ``ema_decay``) is 1 - b2. s starts at
    ``(init_precision - lambda)/N`` (default init_precision: lambda, i.e. s = 0, as the 2018
    reference's ``prec_init`` = 0). With s = 0 the first steps divide by (1-b2)*h, up to
    1/(1-b2) times longer than the later ones: give ``init_precision`` (the builder passes the
    config's) or a ``damping``.

    **The interface.** torch.optim closures return only the loss; VOGN also needs h. The
    closure (zero grads, loss, gradients, return the loss, as for any optimizer here) runs at
    theta inside ``step`` and hands h over with one call, ``set_grad_sq_means(h)``, one tensor
    per parameter in ``param_groups`` order; it leaves the minibatch-mean gradient in
    ``p.grad`` as usual. ``vogn_closure`` builds such a closure from a module, a per-example
    loss and the minibatch, with ``per_example_grads`` (torch.func vmap over the examples):

    .. code-block:: python

        optimizer = VOGN(actor.parameters(), train_set_size=N, lr=1e-3, prior_precision=1.0,
                         init_precision=1e4)

        def closure():  # at the drawn weights
            optimizer.zero_grad()
            stats = per_example_grads(actor, lambda a, obs: -critic(obs, a)[..., 0], obs)
            for p, g in zip(actor.parameters(), stats.grads):
                p.grad = g
            optimizer.set_grad_sq_means(stats.grad_sqs)
            return stats.loss

        optimizer.step(closure)  # or: optimizer.step(vogn_closure(optimizer, actor, loss, obs))

    A stack of K agents (parameters (K, ...), inputs (K, batch, ...)) works unchanged with
    ``agent_dim=True``: the state is elementwise, so each agent's slice is its own run. With
    ``num_samples`` > 1, g and h are averaged over the draws.

    **What this leaves out of Osawa et al.'s VOGN** (``torchsso.optim.VOGN``, as used by
    dl-with-bayes): KL weighting (their ``kl_weighting`` tau scales the prior term and the
    variance, sigma^2 = tau / (N (s + delta + tau*lambda/N)); its warm-up from 0.01 over
    ``warmup_kl_weighting_steps``); their default of 50 MC samples per step (here 1);
    ``acc_steps`` gradient accumulation; a separate ``grad_ema_decay`` with a "raw" or
    "preconditioned" placement (here m is Adam's momentum of the raw gradient plus prior,
    bias-corrected, and the preconditioning follows); their EMA of lambda inside the
    damping; no-prior BatchNorm parameters (``non_reg_for_bn``); LARS, weight normalisation,
    a seeded global RNG per step and data-parallel MC groups; curvature only from
    Linear/Conv/BatchNorm layers through hooks (here any module, via per-example autograd);
    their "first h initialises s when no init_precision is given". Kept: ``damping`` delta
    (their curvature ``damping``, added to the precision in the step and in sigma) and
    ``init_precision``. There is no ``precision_floor``: delta bounds sigma <= 1/sqrt(N*delta).

    Args:
        params: parameters or param-group dicts; each group may set its own ``lr``,
            ``betas``, ``prior_precision``, ``train_set_size``, ``init_precision``,
            ``damping``.
        train_set_size: N > 0, the number of examples the minibatch-mean loss stands for.
        lr: learning rate alpha >= 0.
        betas: (b1, b2), each in [0, 1): momentum of m, running mean of s (Adam's).
        prior_precision: lambda >= 0, the precision of the prior N(0, 1/lambda).
        init_precision: initial precision N*s + lambda >= lambda (default: lambda).
        num_samples: Monte Carlo draws per step (>= 1); g and h are averaged over them.
        damping: delta >= 0, added to s + lambda/N in the step and in sigma.
        generator: source of the noise (must live on the parameters' device); None uses the
            global RNG. Checkpoint its ``get_state()`` next to ``state_dict()`` to resume
            bit-identically.
        foreach: use the ``torch._foreach_*`` kernel (default) or a loop over parameters.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        train_set_size: float,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        prior_precision: float = 1.0,
        init_precision: float | None = None,
        num_samples: int = 1,
        damping: float = 0.0,
        *,
        generator: Generators = None,
        foreach: bool | None = None,
    ) -> None:
        self.num_samples = check_num_samples(num_samples)
        defaults = dict(
            lr=lr,
            betas=betas,
            prior_precision=prior_precision,
            train_set_size=train_set_size,
            init_precision=init_precision,
            damping=damping,
            foreach=foreach,
        )
        super().__init__(params, defaults, generator=generator)
        # Where set_grad_sq_means leaves h while a step's closure runs; None outside a step.
        self._grad_sq_means: list[Tensor | None] | None = None
        self._in_step = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        check_vogn_group(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_grad_sq_means", None)
        self.__dict__.setdefault("_in_step", False)
        for group in self.param_groups:
            group.setdefault("damping", 0.0)
            group.setdefault("foreach", None)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        init_state_like_reference(group, p, state)  # step, s ("exp_avg_sq", a mean of h)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _group_std(self, group: dict[str, Any], params: list[Tensor]) -> tuple[list[Tensor], float]:
        n = group["train_set_size"]
        return sigma_from_second_moment(
            [self.state[p]["exp_avg_sq"] for p in params],
            n,
            group["prior_precision"] + n * group["damping"],
        )

    def set_grad_sq_means(self, grad_sq_means: Sequence[Tensor | None]) -> None:
        """Hand this draw's h = (1/M) sum_i g_i^2 to the running ``step``.

        Call it once from the closure, after the gradients: one tensor per parameter, in
        ``param_groups`` order, shaped like the parameter (None where the parameter got no
        gradient). The tensors are read, not kept past the step.
        """
        if not self._in_step:
            raise RuntimeError(
                "VOGN.set_grad_sq_means() is for the closure that step() evaluates: call it "
                "from inside the closure, at the drawn weights"
            )
        params = self._params()
        if len(grad_sq_means) != len(params):
            raise ValueError(
                f"set_grad_sq_means needs one tensor per parameter ({len(params)}), "
                f"got {len(grad_sq_means)}"
            )
        for i, (h, p) in enumerate(zip(grad_sq_means, params, strict=True)):
            if h is not None and h.shape != p.shape:
                raise ValueError(
                    f"set_grad_sq_means: tensor {i} has shape {tuple(h.shape)}, its parameter "
                    f"{tuple(p.shape)}"
                )
        self._grad_sq_means = list(grad_sq_means)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """Draw theta, evaluate ``closure`` there (it calls ``set_grad_sq_means``), restore
        mu, update; returns the (last draw's) loss."""
        closure = require_closure(self, closure)
        params = self._params()
        h_sums: list[Tensor | None] = [None] * len(params)

        def closure_with_h() -> Any:
            self._grad_sq_means, self._in_step = None, True
            try:
                loss = closure()
            finally:
                self._in_step = False
            found, self._grad_sq_means = self._grad_sq_means, None
            if found is None:
                raise RuntimeError(
                    "VOGN's closure must hand over the mean squared per-example gradients "
                    "with optimizer.set_grad_sq_means(...) (see vogn_closure)"
                )
            for i, h in enumerate(found):
                if h is None:
                    continue
                if h_sums[i] is None:  # one draw: h as handed over, no copy (like p.grad)
                    h_sums[i] = h.detach() if self.num_samples == 1 else h.detach().clone()
                else:
                    h_sums[i].add_(h)
            return loss

        loss, per_group = self._gradients_at_samples(closure_with_h, self.num_samples)
        if self.num_samples > 1:
            present = [h for h in h_sums if h is not None]
            torch._foreach_div_(present, float(self.num_samples))
        h_of = {id(p): h for p, h in zip(params, h_sums, strict=True)}
        for group, found in zip(self.param_groups, per_group, strict=True):
            grad_sqs = [h_of[id(p)] for p in found.params]
            missing = [i for i, h in enumerate(grad_sqs) if h is None]
            if missing:
                raise RuntimeError(
                    "set_grad_sq_means gave None for a parameter that has a gradient"
                )
            states = [self.state[p] for p in found.params]
            for state in states:
                state["step"] += 1
            beta1, beta2 = group["betas"]
            vogn(
                found.params,
                found.grads,
                grad_sqs,  # type: ignore[arg-type]
                [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states],
                [state["step"] for state in states],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                prior_precision=group["prior_precision"],
                train_set_size=group["train_set_size"],
                damping=group["damping"],
                foreach=group["foreach"],
            )
        return loss


def vogn_closure(
    optimizer: VOGN,
    module: nn.Module,
    loss_fn: Callable[..., Tensor],
    *inputs: Tensor,
    agent_dim: bool = False,
) -> Closure:
    """The closure ``VOGN.step`` takes, for a ``module`` that holds all of its parameters.

    At the drawn weights it computes ``per_example_grads(module, loss_fn, *inputs,
    agent_dim=agent_dim)``, writes the mean gradients into ``p.grad``, hands h to
    ``optimizer.set_grad_sq_means`` and returns the minibatch-mean loss (summed over agents:
    each agent's gradient is then its own run's). ``module.parameters()`` must be the
    optimizer's parameters, in order.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]

    def closure() -> Tensor:
        optimizer.zero_grad()
        stats = per_example_grads(module, loss_fn, *inputs, agent_dim=agent_dim)
        for p, g in zip(trainable, stats.grads, strict=True):
            p.grad = g
        optimizer.set_grad_sq_means(stats.grad_sqs)
        return stats.loss.sum()

    return closure


def vogn(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    prior_precision: float,
    train_set_size: float,
    damping: float = 0.0,
    foreach: bool | None = None,
) -> None:
    r"""Functional VOGN update of the mean and its moments (the last three lines of ``VOGN``).

    params: the means mu (not perturbed); grads: g, the minibatch-mean gradients at theta;
    grad_sqs: h, the means of the per-example squared gradients at theta (both MC-averaged);
    exp_avgs, exp_avg_sqs: m and s, updated in place; state_steps: t per parameter, already
    counting this step. ``foreach`` picks the ``torch._foreach_*`` path (default) or the loop
    over tensors; both give the same numbers, bit for bit.
    """
    if foreach is None:
        foreach = True
    kernel = _multi_tensor_vogn if foreach else _single_tensor_vogn
    kernel(
        params,
        grads,
        grad_sqs,
        exp_avgs,
        exp_avg_sqs,
        state_steps,
        beta1=beta1,
        beta2=beta2,
        lr=lr,
        prior_decay=prior_precision / train_set_size,
        damping=prior_precision / train_set_size + damping,
    )


def _single_tensor_vogn(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    prior_decay: float,
    damping: float,
) -> None:
    for i, param in enumerate(params):
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        # The prior's gradient lambda*mu/N enters m; its curvature lambda/N the denominator.
        grad = grads[i].add(param, alpha=prior_decay) if prior_decay != 0 else grads[i]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).add_(grad_sqs[i], alpha=1 - beta2)
        step_size = -lr / (1 - beta1 ** state_steps[i])
        denom = exp_avg_sq.add(damping) if damping != 0 else exp_avg_sq
        param.addcdiv_(exp_avg, denom, value=step_size)


def _multi_tensor_vogn(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    prior_decay: float,
    damping: float,
) -> None:
    if not params:
        return
    with_prior = torch._foreach_add(grads, params, alpha=prior_decay) if prior_decay != 0 else grads
    torch._foreach_lerp_(exp_avgs, with_prior, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_add_(exp_avg_sqs, grad_sqs, alpha=1 - beta2)
    step_sizes = [-lr / (1 - beta1**step) for step in state_steps]
    denom = torch._foreach_add(exp_avg_sqs, damping) if damping != 0 else exp_avg_sqs
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


def check_vogn_group(group: dict[str, Any]) -> None:
    """ValueErrors naming the argument and its valid range."""
    check_range("learning rate lr", group["lr"], 0.0)
    beta1, beta2 = group["betas"]
    check_range("betas[0]", beta1, 0.0, 1.0)
    check_range("betas[1]", beta2, 0.0, 1.0)
    check_range("train_set_size", group["train_set_size"], 0.0, low_open=True)
    check_range("prior_precision", group["prior_precision"], 0.0)
    check_range("damping", group["damping"], 0.0)
    init_precision = group["init_precision"]
    if init_precision is not None and not init_precision >= group["prior_precision"]:
        raise ValueError(
            f"Invalid init_precision: {init_precision} (must be >= prior_precision = "
            f"{group['prior_precision']}: the initial precision is N*s + lambda with s >= 0)"
        )
    start = group["prior_precision"] if init_precision is None else init_precision
    if not start + group["train_set_size"] * group["damping"] > 0:
        raise ValueError(
            "Invalid init_precision, prior_precision and damping: the initial precision "
            "init_precision + N*damping must be > 0 (sigma would be infinite and the first "
            "step divide by zero)"
        )
