"""Extreme eigenpairs of a curvature operator: Lanczos stopped by an error bound, warm-startable.

Stopping rule. For a Ritz pair ``(θ, y)`` with residual ``r = ‖Ay − θy‖`` some eigenvalue ``λ``
satisfies ``|λ − θ| ≤ r``; if moreover no other eigenvalue lies within ``δ`` of ``θ``, then
``|λ − θ| ≤ r²/δ`` (Kato–Temple; Parlett, *The Symmetric Eigenvalue Problem*, Thm. 11.7.1). The
gap ``δ`` is estimated conservatively: from the other Ritz values, each widened by its own
residual, ``δ_i = min_{j≠i} (|θ_i − θ_j| − r_j)``; never wider than the gaps between the previous
solve's Ritz values on a warm start; and, on a warm start, the quadratic bound is trusted to
improve on ``r`` by at most ``MAX_GAIN`` (3×). We stop as soon as the bound is ``≤ tol·|θ|`` for
each wanted value.

What no Krylov method can do is *certify* that no eigenvalue hides above ``θ``. A random start
has a component along every eigenvector and Lanczos amplifies those at the top of the spectrum
first, so its Ritz gaps are trusted. A warm start is concentrated on a few directions: if the new
top eigenvector is not among them (at the edge of stability the top three or four eigenvalues lie
within 1% and exchange places), the Krylov space can lock onto a lower eigenvalue with a small
residual. On the edge-of-stability benchmark (``benchmarks/RESULTS.md``) the safeguards below
cut such misses to 1–2 of 60 warm measurements (worst 6e-3 relative), not to zero: where a miss
matters, re-measure cold now and then.

Warm start. ``init`` is the previous :class:`EigenResult` (or plain vectors). Its
``warm_start`` columns — the wanted Ritz vectors plus guard vectors, the next Ritz vectors of
the previous solve (one, or all within 5% of the last wanted value, up to four) — are combined
into one start vector with equal weights, plus a small random component, and the solve is not judged before Lanczos has had one step per combined direction
plus one. A start built from the previous top vector alone can lock onto it after the top two
eigenvalues cross: it is then an eigenvector of the *second* eigenvalue, with a tiny residual
(seen along edge-of-stability runs: 20.26 returned where the top was 20.44). The guard vectors
give the new top eigenvector a large component — at the edge of stability the top three or four
eigenvalues lie within a few percent and exchange places between measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

import numpy as np
import torch

from ._random import private_generator, random_vectors
from .lanczos import LanczosIteration
from .operator import CurvatureOperator

#: relative weight of the random component mixed into a warm start
WARM_START_NOISE = 1e-3
#: the quadratic bound r²/δ is trusted to improve on the residual bound r by at most this factor
MAX_GAIN = 3.0
#: Ritz vectors kept beyond the ``k`` wanted ones for the next warm start: at least one, and every
#: Ritz value within ``GUARD_WINDOW`` (relative) of the k-th, up to ``MAX_GUARD_VECTORS``
GUARD_WINDOW = 0.05
MAX_GUARD_VECTORS = 4


@dataclass
class EigenResult:
    """Result of :func:`top_eigenpairs`.

    Attributes:
        values: the ``k`` eigenvalue estimates (float64, host), largest first for ``"LA"``,
            most negative first for ``"SA"``.
        vectors: the Ritz vectors, shape ``(size, k)``, on the operator's device.
        num_matvecs: products spent.
        residuals: ``‖A y_i − θ_i y_i‖`` (float64, host).
        converged: every wanted value met the ``tol`` bound.
        error_bounds: the bound ``min(r, r²/δ)`` of each value (float64, host).
        warm_start: ``vectors`` plus guard Ritz vectors, the start of the next call.
        warm_values: the Ritz values of ``warm_start`` (float64, host).

    Pass the whole result as ``init`` to the next call to warm-start it.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    num_matvecs: int
    residuals: torch.Tensor
    converged: bool
    error_bounds: torch.Tensor
    warm_start: torch.Tensor
    warm_values: torch.Tensor


def _error_bounds(theta: np.ndarray, residuals: np.ndarray, wanted: np.ndarray, max_gap: float,
                  max_gain: float) -> np.ndarray:
    bounds = residuals[wanted].copy()
    for n, i in enumerate(wanted):
        others = np.delete(np.arange(len(theta)), i)
        if len(others) == 0:
            continue
        gap = min(np.min(np.abs(theta[i] - theta[others]) - residuals[others]), max_gap)
        if gap > 0:
            bounds[n] = min(bounds[n], max(residuals[i] ** 2 / gap, residuals[i] / max_gain))
    return bounds


def _prior_gap(init: Union[None, torch.Tensor, EigenResult]) -> float:
    """The smallest gap between the previous solve's Ritz values (inf without one)."""
    if not isinstance(init, EigenResult) or init.warm_values.numel() < 2:
        return float("inf")
    return float(torch.diff(torch.sort(init.warm_values).values).min())


def _start_vector(op: CurvatureOperator, init: Union[None, torch.Tensor, EigenResult],
                  generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """The start vector, and how many directions it combines."""
    if isinstance(init, EigenResult):
        init = init.warm_start
    noise = random_vectors((op.size,), device=op.device, dtype=op.dtype, generator=generator)
    noise /= torch.linalg.vector_norm(noise)
    if init is None:
        return noise, 1
    init = init.to(device=op.device, dtype=op.dtype)
    if init.dim() == 1:
        init = init[:, None]
    if init.shape[0] != op.size:
        raise ValueError(f"init must have {op.size} rows (the operator's size), got shape {tuple(init.shape)}")
    norms = torch.linalg.vector_norm(init, dim=0)
    keep = torch.isfinite(norms) & (norms > 0)
    if not bool(keep.any()):
        return noise, 1
    combined = (init[:, keep] / norms[keep]).sum(dim=1)
    combined /= torch.linalg.vector_norm(combined)
    return combined + WARM_START_NOISE * noise, int(keep.sum())


def top_eigenpairs(
    op: CurvatureOperator,
    k: int = 1,
    *,
    tol: float = 1e-3,
    max_matvecs: int = 100,
    init: Union[None, torch.Tensor, EigenResult] = None,
    generator: Optional[torch.Generator] = None,
    which: Literal["LA", "SA"] = "LA",
) -> EigenResult:
    """The ``k`` largest (``"LA"``) or most negative (``"SA"``) eigenpairs of a symmetric operator.

    Lanczos with full reorthogonalisation on the operator's device, stopped when every wanted
    eigenvalue is accurate to ``tol`` relative by the bound ``min(r, r²/δ)`` (module docstring).

    Args:
        op: a :class:`CurvatureOperator` (e.g. :class:`HessianOperator`).
        k: number of eigenpairs (``1 ≤ k ≤ op.size``).
        tol: relative accuracy of the returned eigenvalues.
        max_matvecs: cap on products; ``converged`` is False if it is reached first.
        init: warm start: the previous :class:`EigenResult` (recommended: it brings guard vectors
            and a gap prior), or a vector, or ``(size, j)`` columns.
        generator: private generator for the random start (default: a fresh one, seed 0).
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic.

    Returns:
        :class:`EigenResult`.
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' or 'SA', got {which!r}")
    if not 1 <= k <= op.size:
        raise ValueError(f"k must be between 1 and the operator's size {op.size}, got {k}")
    if max_matvecs < k:
        raise ValueError(f"max_matvecs ({max_matvecs}) must be at least k ({k})")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    generator = private_generator(generator)
    start, combined = _start_vector(op, init, generator)
    # a start combining j directions is judged only once Lanczos can tell them apart
    min_steps = min(combined + 1 if combined > 1 else 1, op.size)
    max_gap = _prior_gap(init)
    # a random start sees every direction, so its Ritz gaps are trusted; a warm start is biased
    max_gain = MAX_GAIN if init is not None else float("inf")
    lanczos = LanczosIteration(op.matvec, start, max_steps=max_matvecs, generator=generator)
    sqrt_eps = float(np.sqrt(torch.finfo(op.dtype).eps))
    converged = False
    while True:
        lanczos.step()
        theta, S, residuals = lanczos.ritz()
        order = np.argsort(-theta if which == "LA" else theta, kind="stable")
        # a breakdown step has residual 0 for the invariant block found so far, which need not
        # hold the wanted eigenvalues (repeated eigenvalues): judge only after the fresh block starts
        if len(theta) >= max(k, min_steps) and not lanczos.restarted:
            wanted = order[:k]
            bounds = _error_bounds(theta, residuals, wanted, max_gap, max_gain)
            scale = np.maximum(np.abs(theta[wanted]), sqrt_eps * np.max(np.abs(theta)))
            converged = bool(np.all(bounds <= tol * scale)) or lanczos.exhausted
            if converged:
                break
        if lanczos.num_steps >= lanczos.max_steps or lanczos.exhausted:
            wanted = order[:k]
            bounds = _error_bounds(theta, residuals, wanted, max_gap, max_gain)
            converged = lanczos.exhausted  # the whole space spanned: Ritz values are eigenvalues
            break
    kth = theta[order[k - 1]]
    near = int(np.sum(np.abs(theta[order[k:]] - kth) <= GUARD_WINDOW * abs(kth)))
    keep = order[: min(len(theta), k + min(max(1, near), MAX_GUARD_VECTORS))]
    ritz_vectors = lanczos.ritz_vectors(S[:, keep])
    as_host = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    return EigenResult(
        values=as_host(theta[wanted]),
        vectors=ritz_vectors[:, :k],
        num_matvecs=lanczos.num_steps,
        residuals=as_host(residuals[wanted]),
        converged=converged,
        error_bounds=as_host(bounds),
        warm_start=ritz_vectors,
        warm_values=as_host(theta[keep]),
    )
