"""Extreme eigenpairs of a curvature operator: Lanczos stopped by an error bound, warm-startable.

Stopping rule. For a Ritz pair ``(θ, y)`` with residual ``r = ‖Ay − θy‖`` some eigenvalue ``λ``
satisfies ``|λ − θ| ≤ r``; if moreover no other eigenvalue lies within ``δ`` of ``θ``, then
``|λ − θ| ≤ r²/δ`` (Kato–Temple; Parlett, *The Symmetric Eigenvalue Problem*, Thm. 11.7.1). The
gap ``δ`` is estimated conservatively: from the other Ritz values, each widened by its own
residual, ``δ_i = min_{j≠i} (|θ_i − θ_j| − r_j)``; never wider than the gaps between the Ritz
values of a previous solve (``prior``); and the quadratic bound is trusted to improve on ``r`` by at
most ``MAX_GAIN`` (6×). We stop as soon as the bound is ``≤ tol·|θ|`` for
each wanted value.

What no Krylov method can do is *certify* that no eigenvalue hides above ``θ``, and the
quadratic bound is only as good as the gap estimate: before a cluster of top eigenvalues is
resolved, the Ritz values do not show its inner gap, and ``r²/δ`` with the gap to the *next Ritz
value* can accept the mixture of a pair 1.3% apart (seen on the edge-of-stability demo, a cold
start: 18.705 returned between 18.829 and 18.582). Two safeguards, each measured along the demo
(``benchmarks/warm_start.py``, float64 ARPACK references):

* the gap is never taken wider than the smallest gap between the Ritz values of the previous
  measurement (``prior``; ``init`` on a warm start, passed by :class:`EigenTracker` to its cold
  re-measurements too) — this alone removes the cold miss above;
* the quadratic bound is trusted to improve on the residual bound ``r`` by at most ``MAX_GAIN``
  (6×): right after a loss spike at the edge, a new top direction outside the warm block leaves
  the block's Ritz value on the *second* eigenvalue with a small residual (20.08 missed, 19.08
  returned at tol 1e-3 with the bound fully trusted); a few more residual expansions find it.

With both, no logged value along the demo is beyond ``tol`` (warm median 4 products, against 5
with the earlier 1.5× cap; a 12× cap gives 4 misses), and the truth beats the bound by a median
~400× — Kato–Temple's own looseness when the gap is a fraction of a percent.

Warm start. ``init`` is the previous :class:`EigenResult` (or plain vectors). Its
``warm_start`` columns are the wanted Ritz vectors plus guard vectors — the next Ritz vectors of
the previous solve (one, or all within 5% of the last wanted value, up to four). The first
``k + 1`` of them start a block subspace method (:class:`DavidsonIteration`): Rayleigh–Ritz on
the block, then one residual added per product. At the edge of stability the top two eigenvalues
exchange places between measurements; the new top eigenvector is then mostly the previous
*second* Ritz vector, which the block holds as a direction of its own, so the first Rayleigh–Ritz
step already resolves the pair (a single Lanczos vector combining them must separate them first,
slowly, since they are close). On the demo run this takes a median of 5 products per warm
measurement against 8 for the combined Lanczos start, with no miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Optional, Union

import numpy as np
import torch

from ..sampling import private_generator
from .davidson import DavidsonIteration
from .lanczos import LanczosIteration
from .operator import CurvatureOperator

#: the quadratic bound r²/δ is trusted to improve on the residual bound r by at most this factor
MAX_GAIN = 6.0
#: Ritz vectors kept beyond the ``k`` wanted ones for the next warm start: at least one, and every
#: Ritz value within ``GUARD_WINDOW`` (relative) of the k-th, up to ``MAX_GUARD_VECTORS``
GUARD_WINDOW = 0.05
MAX_GUARD_VECTORS = 4
#: a warm solve whose bound has not fallen below STAGNATION × its best in STAGNATION_STEPS products
#: stops (``converged`` False): the residual has reached the products' own noise — central
#: differences through an ill-conditioned preconditioner (Adam's) — and more products would not help
STAGNATION = 0.9
STAGNATION_STEPS = 8


@dataclass
class EigenResult:
    """Result of :func:`~lightning_dyn.curvature.top_eigenpairs`.

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


def _warm_block(op: CurvatureOperator, init: Union[torch.Tensor, EigenResult], k: int,
                guards: int = 1) -> torch.Tensor:
    """The first ``k + guards`` warm-start directions (the wanted vectors and the guards), as columns."""
    vectors = init.warm_start if isinstance(init, EigenResult) else init
    vectors = vectors.to(device=op.device, dtype=op.dtype)
    if vectors.dim() == 1:
        vectors = vectors[:, None]
    if vectors.shape[0] != op.size:
        raise ValueError(f"init must have {op.size} rows (the operator's size), got shape {tuple(vectors.shape)}")
    block = torch.zeros((op.size, k + guards), device=op.device, dtype=op.dtype)  # zero columns become random ones
    columns = vectors[:, : k + guards]
    block[:, : columns.shape[1]] = columns
    return block


def top_eigenpairs(
    op: CurvatureOperator,
    k: int = 1,
    *,
    tol: float = 1e-3,
    max_matvecs: int = 100,
    init: Union[None, torch.Tensor, EigenResult] = None,
    generator: Optional[torch.Generator] = None,
    which: Literal["LA", "SA"] = "LA",
    prior: Optional[EigenResult] = None,
) -> EigenResult:
    """The ``k`` largest (``"LA"``) or most negative (``"SA"``) eigenpairs of a symmetric operator.

    Cold: Lanczos with full reorthogonalisation from a random vector; warm (``init``): the block
    subspace method from the previous vectors. Both run on the operator's device and stop when
    every wanted eigenvalue is accurate to ``tol`` relative by the bound ``min(r, max(r²/δ,
    r/MAX_GAIN))``, ``δ`` no wider than the prior's gaps (module docstring).

    Args:
        op: a :class:`CurvatureOperator` (e.g. :class:`HessianOperator`).
        k: number of eigenpairs (``1 ≤ k ≤ op.dimension``).
        tol: relative accuracy of the returned eigenvalues.
        max_matvecs: cap on products; ``converged`` is False if it is reached first.
        init: warm start: the previous :class:`EigenResult` (recommended: it brings guard vectors
            and a gap prior), or a vector, or ``(size, j)`` columns.
        generator: private generator for the random start (default: a fresh one, seed 0).
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic.
        prior: an earlier result at nearby parameters whose Ritz values bound the gaps trusted in
            the quadratic bound (default: ``init`` when it is an :class:`EigenResult`). Give it to a
            cold solve too: before Lanczos resolves a close pair, its Ritz values do not show the
            pair's gap, the previous measurement's do.

    Returns:
        :class:`EigenResult`.
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' or 'SA', got {which!r}")
    if not 1 <= k <= op.dimension:
        raise ValueError(f"k must be between 1 and the operator's dimension {op.dimension}, got {k}")
    if max_matvecs < k:
        raise ValueError(f"max_matvecs ({max_matvecs}) must be at least k ({k})")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    generator = private_generator(generator)
    sign = 1.0 if which == "LA" else -1.0  # "SA": the largest of −A
    product = op.matvec if which == "LA" else (lambda v: -op.matvec(v))
    max_gap = _prior_gap(init if prior is None else prior)
    if init is None:
        theta, bounds, residuals, converged, num_matvecs, keep_of = _lanczos(
            product, op, k, tol, max_matvecs, generator, max_gap)
    else:
        theta, bounds, residuals, converged, num_matvecs, keep_of = _davidson(
            product, op, _warm_block(op, init, k)[:, :max_matvecs], k, tol, max_matvecs, generator, max_gap)
    kth = theta[k - 1]
    near = int(np.sum(np.abs(theta[k:] - kth) <= GUARD_WINDOW * abs(kth)))
    keep = min(len(theta), k + min(max(1, near), MAX_GUARD_VECTORS))
    warm = keep_of(keep)
    as_host = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    # an eigenvalue is no more accurate than the products it came from (Weyl: |Δλ| ≤ ‖E‖)
    bounds = np.maximum(bounds, op.relative_error * np.abs(theta[:k]))
    return EigenResult(
        values=as_host(sign * theta[:k]),
        vectors=warm[:, :k],
        num_matvecs=num_matvecs,
        residuals=as_host(residuals[:k]),
        converged=converged,
        error_bounds=as_host(bounds),
        warm_start=warm,
        warm_values=as_host(sign * theta[:keep]),
    )


def _verdict(op: CurvatureOperator, theta: np.ndarray, bounds: np.ndarray, k: int,
             tol: float) -> tuple[bool, bool, np.ndarray]:
    """``(stop, converged, relative bounds)`` for the wanted Ritz values ``theta[:k]`` (descending).
    Converged: every bound within ``tol``, relative. Stop: within ``tol`` or within the products' own
    accuracy when that is worse (central differences) — iterating further would not make the
    eigenvalue more accurate, and ``converged`` then says that ``tol`` was not reached."""
    sqrt_eps = float(np.sqrt(torch.finfo(op.dtype).eps))
    scale = np.maximum(np.abs(theta[:k]), sqrt_eps * np.max(np.abs(theta)))
    floor = max(tol, op.relative_error)
    relative = bounds / scale
    return bool(np.all(relative <= floor)), bool(np.all(relative <= tol)), relative


class Solve(NamedTuple):
    """What a solver hands :func:`~lightning_dyn.curvature.top_eigenpairs`: Ritz values (descending), the bounds and residuals
    of the wanted ones, the verdict, the products spent, and the first ``keep`` Ritz vectors."""

    theta: np.ndarray
    bounds: np.ndarray
    residuals: np.ndarray
    converged: bool
    num_matvecs: int
    vectors: Callable[[int], torch.Tensor]


def _lanczos(product, op, k, tol, max_matvecs, generator, max_gap=float("inf")) -> Solve:
    """Cold: Lanczos from a random vector. Ritz values descending, their bounds and residuals."""
    start = op.space.random((op.size,), device=op.device, dtype=op.dtype, generator=generator)
    lanczos = LanczosIteration(product, start, max_steps=max_matvecs, generator=generator, space=op.space,
                               dimension=op.dimension)
    while True:
        lanczos.step()
        theta, S, residuals = lanczos.ritz()
        order = np.argsort(-theta, kind="stable")
        # a breakdown step has residual 0 for the invariant block found so far, which need not
        # hold the wanted eigenvalues (repeated eigenvalues): judge only after the fresh block starts
        bounds = _error_bounds(theta[order], residuals[order], np.arange(k), max_gap, MAX_GAIN) \
            if len(theta) >= k else None
        if len(theta) >= k and not lanczos.restarted:
            stop, converged, _ = _verdict(op, theta[order], bounds, k, tol)
            if stop or lanczos.exhausted:
                converged = converged or lanczos.exhausted
                break
        if lanczos.num_steps >= lanczos.max_steps or lanczos.exhausted:
            converged = lanczos.exhausted  # the whole space spanned: Ritz values are eigenvalues
            break
    return Solve(theta[order], bounds, residuals[order], converged, lanczos.num_steps,
                 lambda keep: lanczos.ritz_vectors(S[:, order[:keep]]))


def _davidson(product, op, block, k, tol, max_matvecs, generator, max_gap) -> Solve:
    """Warm: the block subspace method from the previous vectors (module docstring)."""
    iteration = DavidsonIteration(product, block, generator=generator, space=op.space, dimension=op.dimension)
    best, since = np.inf, 0
    while True:
        keep = min(iteration.num_matvecs, k + MAX_GUARD_VECTORS)
        theta, residuals, R = iteration.ritz(keep)
        bounds = _error_bounds(theta, residuals, np.arange(k), max_gap, MAX_GAIN)
        stop, converged, relative = _verdict(op, theta, bounds, k, tol)
        converged = converged or iteration.exhausted
        worst = float(relative.max())
        best, since = (worst, 0) if worst < STAGNATION * best else (best, since + 1)
        if stop or converged or iteration.num_matvecs >= max_matvecs or since >= STAGNATION_STEPS:
            break
        iteration.expand(R[:, int(np.argmax(relative))])
    return Solve(theta, bounds, residuals, converged, iteration.num_matvecs, iteration.ritz_vectors)
