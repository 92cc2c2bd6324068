"""Batch sharpness: the curvature mini-batch SGD is stable against (the function :func:`batch_sharpness`).

For mini-batch SGD ``w ← w − η g_B`` the quantity that settles at ``2/η`` is not the full-batch
``λ_max`` but the *batch sharpness* (Andreyev & Beneventano, "Edge of Stochastic Stability:
revisiting the edge of stability for SGD", arXiv:2412.20553): the expected directional curvature
of a mini-batch's Hessian along that mini-batch's own gradient::

    BS(w) = E_B [ g_Bᵀ H_B g_B / g_Bᵀ g_B ],     g_B = ∇L_B(w),  H_B = ∇²L_B(w)

over mini-batches ``B`` of the training batch size drawn uniformly without replacement from the
training set. A step along ``−η g_B`` raises ``L_B`` to second order when ``g_BᵀH_Bg_B/‖g_B‖² >
2/η``; the average over batches is what self-stabilises at ``2/η`` in their experiments, with
``λ_max`` below it — further below for smaller batches. The definition is the expectation of the
ratio (the paper's, and its authors' code's default); the ratio of expectations ``E[gᵀHg]/E[gᵀg]``
is reported beside it. With the whole training set as the only batch it is the Rayleigh quotient
of ``H`` along the full gradient, at most ``λ_max``.

One Hessian-vector product per mini-batch (plus its gradient): cheap beside ``λ_max`` over a probe
set. The estimate is a Monte-Carlo mean over ``num_batches`` draws, with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..sampling import generator_bytes, generator_from_bytes
from .hessian import HessianOperator, LossFn
from .probe import draw_minibatches


@dataclass
class BatchSharpnessEstimate:
    """A Monte-Carlo estimate of the batch sharpness.

    Attributes:
        value: ``mean_B[g_BᵀH_Bg_B / g_Bᵀg_B]`` — the batch sharpness.
        ratio_of_expectations: ``mean_B[g_BᵀH_Bg_B] / mean_B[g_Bᵀg_B]``.
        standard_error: the standard error of ``value`` over the batches (0 with one batch).
        num_batches: mini-batches averaged (batches with a zero gradient are left out).
        products: Hessian-vector products spent (one per batch).
    """

    value: float
    ratio_of_expectations: float
    standard_error: float
    num_batches: int
    products: int


def directional_curvature(model: nn.Module, loss_fn: LossFn, batch: Any, *, mode: str = "eval", seed: int = 0,
                          backend: str = "double_backward",
                          params: Optional[Iterable[nn.Parameter]] = None) -> tuple[float, float]:
    """``(g_BᵀH_Bg_B, g_Bᵀg_B)`` of one batch's loss at the model's current parameters: one
    gradient and one Hessian-vector product, on this process alone (the model is not disturbed:
    :class:`~lightning_dyn.curvature.HessianOperator`)."""
    op = HessianOperator(model, loss_fn, [batch], mode=mode, seed=seed, backend=backend,  # type: ignore[arg-type]
                         params=params, distributed=False)
    g = op.gradient()
    hg = op.matvec(g)
    return float(torch.dot(g.double(), hg.double())), float(torch.dot(g.double(), g.double()))


def batch_sharpness(model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], *, mode: str = "eval", seed: int = 0,
                    backend: str = "double_backward", params: Optional[Iterable[nn.Parameter]] = None,
                    distributed: Optional[bool] = None) -> BatchSharpnessEstimate:
    """The batch sharpness over ``batches`` (module docstring).

    Args:
        model, loss_fn: the model and ``loss_fn(model, batch)``, the mean loss of a batch.
        batches: mini-batches of the training batch size, drawn from the training distribution.
        mode, seed, backend, params: as for :class:`~lightning_dyn.curvature.HessianOperator`.
        distributed: under ``torch.distributed`` (default: when initialised) every rank passes the
            same batches; rank ``r`` of ``W`` takes every ``W``-th from the ``r``-th, and the sums are
            all-reduced, so every rank returns the same estimate.

    Returns:
        :class:`BatchSharpnessEstimate`.
    """
    if len(batches) == 0:
        raise ValueError("batch_sharpness needs at least one batch")
    params = None if params is None else list(params)
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    # sums of: ratio, ratio², gᵀHg, gᵀg, batches with a gradient, products
    sums = torch.zeros(6, dtype=torch.float64)
    for batch in list(batches)[rank::world]:
        curvature, norm2 = directional_curvature(model, loss_fn, batch, mode=mode, seed=seed, backend=backend,
                                                 params=params)
        sums[5] += 1
        if not norm2 > 0:  # a batch the model fits exactly has no direction
            continue
        ratio = curvature / norm2
        sums[:5] += torch.tensor([ratio, ratio * ratio, curvature, norm2, 1.0], dtype=torch.float64)
    if distributed:
        device = next(model.parameters()).device
        reduced = sums.to(device)
        dist.all_reduce(reduced)
        sums = reduced.cpu()
    total, total2, curvature, norm2, n, products = sums.tolist()
    if n == 0:
        nan = float("nan")
        return BatchSharpnessEstimate(nan, nan, nan, 0, int(products))
    mean = total / n
    variance = max(total2 / n - mean * mean, 0.0) * n / (n - 1) if n > 1 else 0.0
    return BatchSharpnessEstimate(mean, curvature / norm2, math.sqrt(variance / n), int(n), int(products))


class BatchSharpnessSampler:
    """The batch sharpness measured along a run: ``num_batches`` fresh mini-batches per measurement,
    drawn from the train loader's dataset by a private generator (checkpointed with
    :meth:`state_dict`, so a resumed run draws the batches the uninterrupted one would).

    Args:
        num_batches: mini-batches per measurement (the Monte-Carlo sample).
        seed: seed of the private generator.
    """

    def __init__(self, num_batches: int, *, seed: int = 0) -> None:
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"num_batches must be a positive int, got {num_batches!r}")
        self.num_batches = num_batches
        self.generator = torch.Generator().manual_seed(seed)

    def measure(self, model: nn.Module, loss_fn: LossFn, loader: Any, *, batch_size: Optional[int] = None,
                mode: str = "eval", seed: int = 0, backend: str = "double_backward",
                params: Optional[Iterable[nn.Parameter]] = None) -> BatchSharpnessEstimate:
        """Draw the mini-batches (:func:`~lightning_dyn.curvature.probe.draw_minibatches`; every rank
        the same ones) and estimate the batch sharpness over them."""
        device = next(model.parameters()).device
        batches = draw_minibatches(loader, self.num_batches, generator=self.generator, device=device,
                                   size=batch_size)
        return batch_sharpness(model, loss_fn, batches, mode=mode, seed=seed, backend=backend, params=params)

    # ``ddp_spawn`` pickles the callbacks: the generator crosses as bytes, not as a shared tensor
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "generator": generator_bytes(self.generator)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "generator": generator_from_bytes(state["generator"])})

    def state_dict(self) -> dict[str, Any]:
        return {"num_batches": self.num_batches, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
