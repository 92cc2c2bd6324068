"""Optimizer stability thresholds: the sharpness at which a step becomes unstable on a quadratic.

On ``f(x) = ½ h x²`` (one eigen-direction of the Hessian, curvature ``h``) each optimizer is a
linear recursion; it diverges once ``h`` exceeds (Cohen et al. 2021,
arXiv:2103.00065; Cohen et al. 2022, arXiv:2207.14484):

========================================  ===========================================
``SGD(lr=η)``                             ``2/η``
``SGD(lr=η, momentum=β)`` (heavy ball)     ``(2 + 2β)/η``
``SGD(..., nesterov=True)``                ``(2 + 2β)/(η(1 + 2β))``
``SGD(..., dampening=d)``                  the above with ``η(1 − d)`` in place of ``η``
``Adam/AdamW(lr=η, betas=(β1, β2))``       ``(2 + 2β1)/((1 − β1)η)`` for ``λ_max(P^{-1}H)``
``RMSprop(lr=η, momentum=μ)``              ``(2 + 2μ)/η`` for ``λ_max(P^{-1}H)``
========================================  ===========================================

For the adaptive methods the threshold applies to the *preconditioned* sharpness
``λ_max(P^{-1/2} H P^{-1/2})`` with the optimizer's current diagonal preconditioner:
Adam ``P = (1 − β1^t)(√(v_t/(1 − β2^t)) + ε)`` (``t`` PyTorch's 1-based step, ``max_exp_avg_sq``
with AMSGrad), RMSprop ``P = √v + ε`` (``√(v − ḡ²) + ε`` centered). SGD's coupled weight decay
``w`` adds ``w·I`` to the Hessian, so the threshold on the loss's sharpness is lowered by ``w``.
With several parameter groups of different learning rates the comparison is of
``λ_max(D H D)`` with ``D² = diag(η_i / P_i)`` against the threshold at ``η = 1``.

Coordinates an adaptive optimizer has never updated. Where the second-moment estimate is exactly
0 — every gradient so far was exactly 0 there, e.g. the embedding rows of tokens training has not
met yet — the frozen preconditioner is ``ε`` alone, and ``P^{-1/2} H P^{-1/2}`` would amplify any
curvature there by ``1/ε`` (10⁸). That number describes no step Adam takes: the linearisation
holds the preconditioner fixed, while Adam's first nonzero gradient ``g`` on such a coordinate sets
``v = (1 − β2) g²`` and its step to about ``η (1 − β1)/√(1 − β2)`` in size whatever the curvature
— the preconditioner is set by the very gradient that would drive an instability. So these
coordinates are left out (``D = 0`` there): the preconditioned sharpness is that of the subspace
the optimizer has acted on, and ``StabilityScaling.never_updated`` counts what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from ..curvature.sharded import local

SUPPORTED = "SGD (plain, heavy ball, Nesterov), Adam, AdamW, RMSprop"


class UnsupportedOptimizer(ValueError):
    """The optimizer has no stability threshold here (the message names the supported ones)."""


@dataclass
class StabilityScaling:
    """What to compare: ``λ_max(D H D)`` (``D = diag(scale)``, or ``H`` itself when ``scale`` is
    ``None``) against ``threshold``. ``preconditioned`` tells whether ``D`` holds a preconditioner."""

    threshold: float
    scale: Optional[torch.Tensor]
    preconditioned: bool
    #: coordinates whose adaptive preconditioner is unset (second moment exactly 0), left out
    never_updated: int = 0


def _kind(optimizer: torch.optim.Optimizer) -> str:
    for cls, name in ((torch.optim.AdamW, "adam"), (torch.optim.Adam, "adam"), (torch.optim.SGD, "sgd"),
                      (torch.optim.RMSprop, "rmsprop")):
        if isinstance(optimizer, cls):
            return name
    raise UnsupportedOptimizer(f"no stability threshold for {type(optimizer).__name__}; supported: {SUPPORTED}")


def _unit_threshold(kind: str, group: dict) -> float:
    """The threshold at learning rate 1 (the learning rate is applied by the caller)."""
    if kind == "sgd":
        beta, damp = group.get("momentum", 0.0), group.get("dampening", 0.0)
        if beta == 0:
            return 2.0
        base = (2 + 2 * beta) / (1 - damp)
        return base / (1 + 2 * beta) if group.get("nesterov", False) else base
    if kind == "adam":
        beta1 = group["betas"][0]
        return (2 + 2 * beta1) / (1 - beta1)
    return 2 + 2 * group.get("momentum", 0.0)


def _shared(groups: list[dict], key: str, kind: str) -> float:
    values = {(g[key] if not isinstance(g[key], tuple) else g[key][0]) for g in groups}
    if len(values) > 1:
        raise UnsupportedOptimizer(f"parameter groups with different {key} have no single {kind} threshold")
    return values.pop()


def is_adaptive(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's threshold is about a preconditioned sharpness (Adam, AdamW, RMSprop)."""
    return _kind(optimizer) != "sgd"


def check_supported(optimizer: torch.optim.Optimizer) -> None:
    """Raise :class:`UnsupportedOptimizer` unless :func:`stability_scaling` can serve this optimizer."""
    kind = _kind(optimizer)
    _shared(optimizer.param_groups, {"sgd": "momentum", "adam": "betas", "rmsprop": "momentum"}[kind], kind)


def stability_threshold(optimizer: torch.optim.Optimizer, *, lr_scale: float = 1.0) -> float:
    """The sharpness at which the optimizer's *current* step becomes unstable (table above), read
    live from its parameter groups (a learning-rate scheduler changes it). For Adam/AdamW/RMSprop it
    is the threshold of the preconditioned sharpness. All groups must share the learning rate and
    momentum; otherwise use :func:`stability_scaling`. ``lr_scale``: the optimizer steps with
    ``lr_scale ×`` its groups' rate (a reduction applied around the step). A rate of 0 takes no
    step, which is never unstable: ``inf``."""
    kind = _kind(optimizer)
    groups = optimizer.param_groups
    lr = _shared(groups, "lr", kind)
    for key in {"sgd": ("momentum", "dampening", "nesterov", "weight_decay"), "adam": ("betas",),
                "rmsprop": ("momentum",)}[kind]:
        _shared(groups, key, kind)
    if float(lr) * lr_scale == 0:
        return float("inf")  # no step, never unstable
    threshold = _unit_threshold(kind, groups[0]) / (float(lr) * lr_scale)
    if kind == "sgd":
        threshold -= groups[0].get("weight_decay", 0.0)
    return threshold


def _adam_preconditioner(state: dict, group: dict, p: nn.Parameter) -> Optional[torch.Tensor]:
    if "exp_avg_sq" not in state:
        return None
    beta1, beta2 = group["betas"]
    t = float(state["step"])
    v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
    return (1 - beta1**t) * (torch.sqrt(v / (1 - beta2**t)) + group["eps"])


def _rmsprop_preconditioner(state: dict, group: dict, p: nn.Parameter) -> Optional[torch.Tensor]:
    if "square_avg" not in state:
        return None
    v = state["square_avg"]
    if group.get("centered", False):
        v = v - state["grad_avg"] ** 2
    return torch.sqrt(v) + group["eps"]


def stability_scaling(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], *,
                      lr_scale: float = 1.0) -> StabilityScaling:
    """The scaling ``D`` over the flat layout of ``params`` and the threshold to compare
    ``λ_max(D H D)`` with, for per-group learning rates and adaptive preconditioners.

    Parameters the optimizer does not update get ``D = 0``. ``lr_scale``: the optimizer steps with
    ``lr_scale ×`` its groups' rates. When every rate is 0 (the end of a cosine schedule) no step
    is taken and nothing is unstable: the threshold is ``inf`` and ``D`` is that of equal rates
    (``D² = 1/P`` for adaptive methods, ``H`` itself for SGD), so the sharpness is still measured.
    Raises :class:`UnsupportedOptimizer` for an optimizer or a mix of groups it cannot serve, and
    ``RuntimeError`` before an adaptive optimizer's first step (its preconditioner does not exist
    yet)."""
    kind = _kind(optimizer)
    groups = optimizer.param_groups
    momentum_key = {"sgd": "momentum", "adam": "betas", "rmsprop": "momentum"}[kind]
    _shared(groups, momentum_key, kind)
    lrs = {float(g["lr"]) * lr_scale for g in groups}
    resting = lrs == {0.0}
    if kind == "sgd" and len(lrs) == 1:
        return StabilityScaling(stability_threshold(optimizer, lr_scale=lr_scale), None, False)
    group_of = {id(p): g for g in groups for p in g["params"]}
    pieces, never_updated = [], 0
    for p in params:
        group = group_of.get(id(p))
        shard = local(p.detach())  # sharded training: this rank's entries, like the operator's vectors
        if group is None:
            pieces.append(torch.zeros(shard.numel(), device=shard.device, dtype=shard.dtype))
            continue
        rate = 1.0 if resting else float(group["lr"]) * lr_scale
        lr = torch.full((shard.numel(),), rate, device=shard.device, dtype=torch.float64)
        if kind == "sgd":
            pieces.append(lr.sqrt())
            continue
        precondition = _adam_preconditioner if kind == "adam" else _rmsprop_preconditioner
        state = {k: local(v) if isinstance(v, torch.Tensor) else v for k, v in optimizer.state.get(p, {}).items()}
        P = precondition(state, group, p)
        if P is None:
            raise RuntimeError(f"{type(optimizer).__name__} has no preconditioner before its first step")
        seen = _second_moment(state, group).reshape(-1) != 0
        never_updated += int((~seen).sum())
        pieces.append(torch.where(seen, (lr / P.reshape(-1).double()).sqrt(), torch.zeros_like(lr)))
    scale = torch.cat(pieces)
    weight_decay = groups[0].get("weight_decay", 0.0) if kind == "sgd" else 0.0
    if kind == "sgd" and weight_decay:
        raise UnsupportedOptimizer("SGD with weight decay and per-group learning rates has no single threshold")
    threshold = float("inf") if resting else _unit_threshold(kind, groups[0])
    return StabilityScaling(threshold, scale, kind != "sgd", never_updated)


def _second_moment(state: dict, group: dict) -> torch.Tensor:
    """The second-moment estimate the preconditioner is built from (Adam's ``v``, RMSprop's)."""
    if "square_avg" in state:
        return state["square_avg"]
    return state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
