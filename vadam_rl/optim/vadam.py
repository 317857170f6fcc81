r"""Vadam: Adam whose gradients are taken at weights drawn from a Gaussian posterior.

Khan, Nielsen, Tangkaratt, Lin, Gal, Srivastava. "Fast and Scalable Bayesian Deep Learning by
Weight-Perturbation in Adam", ICML 2018, https://arxiv.org/abs/1806.04854. Reference code:
https://github.com/emtiyaz/vadam (``pytorch/vadam/optimizers.py``; the RL variant in
``tensorflow_RL/ActorNetworkEpsilon.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from vadam_rl.optim.gaussian import (
    Closure,
    DiagonalGaussianOptimizer,
    check_num_samples,
    check_range,
)
from vadam_rl.rng import Generators

__all__ = ["Vadam", "vadam"]


class Vadam(DiagonalGaussianOptimizer):
    r"""Variational Adam: a mean-field Gaussian posterior N(mu, sigma^2) trained like Adam.

    Per weight, with N = ``train_set_size``, lambda = ``prior_precision``, c =
    ``precision_floor`` and (m, s) Adam's moments, one ``step(closure)`` does

    .. code-block:: text

        sigma = 1 / sqrt(N*s + lambda + c);  eps ~ N(0, I);  theta = mu + sigma * eps
        g     = gradient at theta of the closure's loss (the minibatch *mean* NLL)
        m     = b1*m + (1-b1) * (g + lambda*mu/N)
        s     = b2*s + (1-b2) * g*g
        m_hat = m / (1 - b1^t);  s_hat = s / (1 - b2^t)
        mu    = mu - lr * m_hat / (sqrt(s_hat) + lambda/N)

    and restores mu in the parameters bit for bit before updating it. As in the reference
    code: there is no Adam eps (lambda/N takes its place); s starts at
    ``(init_precision - lambda) / N`` so the initial precision is ``init_precision`` (default:
    lambda, i.e. s = 0); sigma uses the raw, not bias-corrected, s; with ``num_samples`` > 1,
    g and g*g (each draw's minibatch-mean gradient, squared) are averaged over the draws.

    Additions to the reference, both off by default:

    - ``precision_floor`` c, added to the precision of the *sampling* distribution only, so
      sigma <= 1/sqrt(c) (the reference RL code's ``min_prec``). ``float("inf")`` switches the
      perturbation off: with lambda = 0 as well, Vadam is then ``torch.optim.Adam`` with
      ``eps=0``, bit for bit (tested). With a prior no Adam setting matches: lambda*mu/N is
      Adam's coupled weight decay in m but, unlike Adam's, it never enters s (the reference
      squares the data gradient alone), and lambda/N stands where Adam's eps does.
    - ``damping_before_bias_correction``: add lambda/N to sqrt(s) *before* the bias
      correction, mu = mu - lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(s) + lambda/N), as
      TensorFlow's Adam places its "epsilon hat" and as the reference RL code does.

    **The paper's DDPG actor in these terms.** The reference RL code (TensorFlow) uses, with
    G the gradient of the *summed* actor loss over a batch of B = 64 (so G = B*g for our mean
    loss g), lambda_ref = 1e-8, c_ref = 1e4, S starting at 0 (``prec_init`` = 0), lr 1e-4:

    .. code-block:: text

        sigma = 1/sqrt(S + lambda_ref + c_ref)
        S = b2*S + (1-b2)*G^2;   M = b1*M + (1-b1)*(G + lambda_ref*mu)
        mu = mu - lr * sqrt(1-b2^t)/(1-b1^t) * M / (sqrt(S) + lambda_ref)

    Substituting S = B^2 s and M = B m shows that ``Vadam`` reproduces it exactly with

    - ``train_set_size`` N = B^2 (4096): N*s = S, so sigma matches (the reference has no N; the
      square comes from summing, not averaging, the gradient before squaring it);
    - ``prior_precision`` lambda = B * lambda_ref (6.4e-7): the prior term of m,
      lambda*mu/N = lambda_ref*mu/B, and the denominator's lambda/N = lambda_ref/B are the
      reference's lambda_ref*mu and lambda_ref divided by B, like everything else in M and
      sqrt(S);
    - ``precision_floor`` c = c_ref + lambda_ref - lambda (1e4 - 6.3e-7) so that lambda + c =
      lambda_ref + c_ref in sigma. In float32 1e4 itself is exact: the difference is 1000
      times below float32's resolution at 1e4, and the reference ran in float32;
    - ``init_precision`` = lambda (the default), i.e. s = S = 0 at the start;
    - ``damping_before_bias_correction=True`` (the TensorFlow placement of the damping);
      without it the denominator's constant is lambda_ref/B/sqrt(1-b2^t) instead of
      lambda_ref/B, a difference no constant can absorb;
    - lr 1e-4, betas (0.9, 0.999) unchanged (Adam's step is invariant to the gradient's scale).

    Where this class deviates from the reference (on purpose): the noise of each step is a
    fresh draw, while the reference RL code reuses the draw that chose the last action (same
    distribution, different sample path); ``step`` returns the last draw's loss.

    Args:
        params: parameters or param-group dicts; each group may set its own ``lr``,
            ``betas``, ``prior_precision``, ``train_set_size``, ``init_precision``,
            ``precision_floor``.
        train_set_size: N > 0, the number of examples the minibatch-mean loss stands for.
        lr: learning rate alpha >= 0.
        betas: (b1, b2), each in [0, 1).
        prior_precision: lambda >= 0, the precision of the prior N(0, 1/lambda).
        init_precision: initial precision N*s + lambda >= lambda (default: lambda).
        num_samples: Monte Carlo draws per step (>= 1); gradients are averaged over them.
        precision_floor: c >= 0, added to the sampling precision (sigma <= 1/sqrt(c)).
        damping_before_bias_correction: TensorFlow placement of lambda/N (see above).
        generator: source of the noise (must live on the parameters' device); None uses the
            global RNG. It is the caller's: to resume bit-identically, checkpoint its
            ``get_state()`` next to ``state_dict()``.
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
        precision_floor: float = 0.0,
        *,
        damping_before_bias_correction: bool = False,
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
            precision_floor=precision_floor,
            damping_before_bias_correction=damping_before_bias_correction,
            foreach=foreach,
        )
        super().__init__(params, defaults, generator=generator)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        check_vadam_group(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("damping_before_bias_correction", False)
            group.setdefault("foreach", None)

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        init_state_like_reference(group, p, state)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _group_std(self, group: dict[str, Any], params: list[Tensor]) -> tuple[list[Tensor], float]:
        return sigma_from_second_moment(
            [self.state[p]["exp_avg_sq"] for p in params],
            group["train_set_size"],
            group["prior_precision"] + group["precision_floor"],
        )

    graph_safe = True

    def _prepare_graph_scalars(self) -> None:
        """Advance every parameter's step count; per group, write the step size and sqrt of
        the second bias correction into a device tensor that ``step`` reads in graph mode."""
        if not hasattr(self, "_graph_scalars"):  # in the dtype eager kernels compute in
            firsts = [group["params"][0] for group in self.param_groups]
            self._graph_scalars = [torch.zeros(2, dtype=p.dtype, device=p.device) for p in firsts]
        for group in self.param_groups:  # check every group before changing any
            steps = {self.state[p]["step"] for p in group["params"]}
            if len(steps) > 1:
                raise RuntimeError(
                    f"graph mode needs one step count per param group, got {sorted(steps)}"
                )
        for group, scalars in zip(self.param_groups, self._graph_scalars, strict=True):
            for p in group["params"]:
                self.state[p]["step"] += 1
            step = self.state[group["params"][0]]["step"]
            step_size, bias_correction2_sqrt = vadam_step_scalars(
                group["betas"], group["lr"], step, group["damping_before_bias_correction"]
            )
            scalars[0].fill_(step_size)
            scalars[1].fill_(bias_correction2_sqrt)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """Draw theta, evaluate ``closure`` there, restore mu, update; returns the loss."""
        if self._graph_mode:
            return self.graph_step(closure)
        loss, per_group = self._gradients_at_samples(closure, self.num_samples)
        for group, found in zip(self.param_groups, per_group, strict=True):
            states = [self.state[p] for p in found.params]
            for state in states:
                state["step"] += 1
            beta1, beta2 = group["betas"]
            vadam(
                found.params,
                found.grads,
                found.grad_sqs,
                [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states],
                [state["step"] for state in states],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                prior_precision=group["prior_precision"],
                train_set_size=group["train_set_size"],
                damping_before_bias_correction=group["damping_before_bias_correction"],
                foreach=group["foreach"],
            )
        return loss

    @torch.no_grad()
    def graph_step(self, closure: Closure | None = None) -> Any:
        """``step`` in graph mode: the draws and scalars ``prepare_graph_step`` left on the
        device; a plain method, so a compiled graph traces no profiler hook."""
        loss, per_group = self._gradients_at_samples(closure, self.num_samples)
        self._graph_step(per_group)
        return loss

    def _graph_step(self, per_group: list) -> None:
        """The update of ``step`` with the scalars ``prepare_graph_step`` left on the device."""
        groups = zip(self.param_groups, per_group, self._graph_scalars, strict=True)
        for group, found, scalars in groups:
            if len(found.params) != len(group["params"]):
                raise RuntimeError("graph mode needs a gradient for every parameter at each step")
            beta1, beta2 = group["betas"]
            prior_decay = group["prior_precision"] / group["train_set_size"]
            _graph_vadam(
                found.params,
                found.grads,
                found.grad_sqs,
                [self.state[p]["exp_avg"] for p in found.params],
                [self.state[p]["exp_avg_sq"] for p in found.params],
                step_size=scalars[0],
                bias_correction2_sqrt=scalars[1],
                beta1=beta1,
                beta2=beta2,
                prior_decay=prior_decay,
                eps=prior_decay,
                eps_before_bias_correction=group["damping_before_bias_correction"],
            )


def vadam_step_scalars(
    betas: tuple[float, float], lr: float, step: int, eps_before_bias_correction: bool
) -> tuple[float, float]:
    """(step size, sqrt of the second bias correction) at step t, for every kernel: the mean
    moves by step_size * m / denom."""
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    if eps_before_bias_correction:
        return -(lr * bias_correction2_sqrt / bias_correction1), bias_correction2_sqrt
    return (lr / bias_correction1) * -1, bias_correction2_sqrt


def _update_moments(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor] | None,
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    beta1: float,
    beta2: float,
    prior_decay: float,
) -> None:
    """m and s in place (foreach); the prior's gradient lambda*mu/N enters m only."""
    grads_with_prior = (
        torch._foreach_add(grads, params, alpha=prior_decay) if prior_decay != 0 else grads
    )
    torch._foreach_lerp_(exp_avgs, grads_with_prior, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    if grad_sqs is None:
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    else:
        torch._foreach_add_(exp_avg_sqs, grad_sqs, alpha=1 - beta2)


def _graph_vadam(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor] | None,
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    step_size: Tensor,
    bias_correction2_sqrt: Tensor,
    beta1: float,
    beta2: float,
    prior_decay: float,
    eps: float,
    eps_before_bias_correction: bool,
) -> None:
    """``_multi_tensor_vadam`` with the step-dependent scalars read from 0-dim device tensors
    (so a captured graph replays with the current step's values)."""
    _update_moments(params, grads, grad_sqs, exp_avgs, exp_avg_sqs, beta1, beta2, prior_decay)
    step_along_moments(
        params,
        exp_avgs,
        exp_avg_sqs,
        step_size=step_size,
        bias_correction2_sqrt=None if eps_before_bias_correction else bias_correction2_sqrt,
        eps=eps,
    )


def step_along_moments(
    params: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    step_size: Tensor,
    bias_correction2_sqrt: Tensor | None,
    eps: float,
) -> None:
    """params += step_size * m / (sqrt(s) / bias_correction2_sqrt + eps), foreach, with the
    step's scalars read from 0-dim tensors (graph mode; also ``vadam_rl.optim.Adam``).
    ``bias_correction2_sqrt`` None: eps joins sqrt(s) unscaled (already bias-corrected)."""
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if bias_correction2_sqrt is not None:
        torch._foreach_div_(denom, bias_correction2_sqrt)
    if eps != 0:
        torch._foreach_add_(denom, eps)
    update = torch._foreach_div(exp_avgs, denom)
    torch._foreach_mul_(update, step_size)
    torch._foreach_add_(params, update)


def vadam(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor] | None,
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    prior_precision: float,
    train_set_size: float,
    damping_before_bias_correction: bool = False,
    foreach: bool | None = None,
) -> None:
    r"""Functional Vadam update of the mean (lines 3-6 of ``Vadam``), in place.

    params: the means mu (the parameters, *not* perturbed); grads: g, the gradients taken at
    theta (MC-averaged); grad_sqs: the MC average of g*g, or None for a single draw (then the
    kernel forms g*g itself, exactly as Adam does); exp_avgs, exp_avg_sqs: m and s, updated in
    place; state_steps: t for each parameter, already counting this step. ``foreach`` picks
    the ``torch._foreach_*`` path (default) or the loop over tensors; both give the same
    numbers, and with lambda = 0 the same numbers as ``torch.optim.Adam(eps=0)``, op for op.
    """
    if foreach is None:
        foreach = True
    kernel = _multi_tensor_vadam if foreach else _single_tensor_vadam
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
        # Adam's update with lambda/N both as eps and as an L2 term that enters m only.
        prior_decay=prior_precision / train_set_size,
        eps=prior_precision / train_set_size,
        eps_before_bias_correction=damping_before_bias_correction,
    )


def _single_tensor_vadam(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor] | None,
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    prior_decay: float,
    eps: float,
    eps_before_bias_correction: bool,
) -> None:
    for i, param in enumerate(params):
        grad, exp_avg, exp_avg_sq, step = grads[i], exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        # The prior's gradient lambda*mu/N enters m only: s sees the data gradient alone.
        grad_with_prior = grad.add(param, alpha=prior_decay) if prior_decay != 0 else grad
        exp_avg.lerp_(grad_with_prior, 1 - beta1)
        exp_avg_sq.mul_(beta2)
        if grad_sqs is None:
            exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
        else:
            exp_avg_sq.add_(grad_sqs[i], alpha=1 - beta2)

        step_size, bias_correction2_sqrt = vadam_step_scalars(
            (beta1, beta2), lr, step, eps_before_bias_correction
        )
        denom = exp_avg_sq.sqrt()
        if not eps_before_bias_correction:
            denom = denom / bias_correction2_sqrt
        param.addcdiv_(exp_avg, denom.add_(eps), value=step_size)


def _multi_tensor_vadam(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sqs: list[Tensor] | None,
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[int],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    prior_decay: float,
    eps: float,
    eps_before_bias_correction: bool,
) -> None:
    if not params:
        return
    _update_moments(params, grads, grad_sqs, exp_avgs, exp_avg_sqs, beta1, beta2, prior_decay)

    scalars = [
        vadam_step_scalars((beta1, beta2), lr, step, eps_before_bias_correction)
        for step in state_steps
    ]
    step_size = [size for size, _ in scalars]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if not eps_before_bias_correction:
        torch._foreach_div_(denom, [bias_correction2_sqrt for _, bias_correction2_sqrt in scalars])
    if eps != 0:
        torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


# -- shared with Vprop --------------------------------------------------------------------------


def check_vadam_group(group: dict[str, Any]) -> None:
    """ValueErrors for the hyperparameters Vadam and Vprop share, naming the valid range."""
    check_range("learning rate lr", group["lr"], 0.0)
    if "betas" in group:
        beta1, beta2 = group["betas"]
        check_range("betas[0]", beta1, 0.0, 1.0)
        check_range("betas[1]", beta2, 0.0, 1.0)
    check_range("train_set_size", group["train_set_size"], 0.0, low_open=True)
    check_range("prior_precision", group["prior_precision"], 0.0)
    check_range("precision_floor", group["precision_floor"], 0.0)
    init_precision = group["init_precision"]
    if init_precision is not None and not init_precision >= group["prior_precision"]:
        raise ValueError(
            f"Invalid init_precision: {init_precision} (must be >= prior_precision = "
            f"{group['prior_precision']}: the initial precision is N*s + lambda with s >= 0)"
        )
    start = group["prior_precision"] if init_precision is None else init_precision
    if not start + group["precision_floor"] > 0:
        raise ValueError(
            "Invalid init_precision, prior_precision and precision_floor: the initial "
            "precision init_precision + precision_floor must be > 0 (sigma would be infinite)"
        )


def init_state_like_reference(group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
    """step = 0; s = (init_precision - lambda) / N, so the precision starts at init_precision."""
    state["step"] = 0
    init_precision = group["init_precision"]
    if init_precision is None:
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    else:
        s0 = (init_precision - group["prior_precision"]) / group["train_set_size"]
        state["exp_avg_sq"] = torch.full_like(p, s0, memory_format=torch.preserve_format)


def sigma_from_second_moment(
    exp_avg_sqs: list[Tensor], train_set_size: float, extra_precision: float
) -> tuple[list[Tensor], float]:
    """sigma = 1/sqrt(N*s + extra) (extra = lambda + c) as (1/sqrt(s + extra/N), 1/sqrt(N))."""
    stds = torch._foreach_add(exp_avg_sqs, extra_precision / train_set_size)
    torch._foreach_rsqrt_(stds)
    return stds, train_set_size**-0.5
