"""Critical points of a scalar map on a box: multi-start Newton on ∇ₓf, deduplicated and classified.

A critical point of ``f: ℝⁿ → ℝ`` is a root of ``g(x) = ∇ₓf(x)``. From ``starts`` points of a
scrambled Sobol sequence on the box (plus any ``init`` points, e.g. last measurement's critical
points), all at once as one batch, Newton's method for ``g = 0``

    x ← x − H(x)⁻¹ g(x),   H = ∇²ₓf  (symmetric: inverted on its eigenvectors, eigenvalues
                                        below ``1e-12·max|λ|`` regularised),

finds minima, saddles and maxima alike (Newton on ``g`` does not descend ``f``). A step is capped
at a trust radius (a tenth of the box's diagonal at first) and accepted only if ``‖g‖`` decreases;
otherwise the point stays and its radius halves. At a non-degenerate critical point Newton
converges quadratically; at a degenerate one linearly.

A point has converged when ``‖g‖ ≤ grad_tol`` *and* its Newton step ``‖H⁻¹g‖`` is below ``step_tol``
times the box's diagonal: a small gradient alone is not a critical point (where tanh units
saturate, ``f`` flattens towards a constant and ``‖g‖`` is tiny while ``H⁻¹g`` points far away).
Each converged point inside the box is kept once (points closer than
``merge_radius`` are one), with

- its **Morse index**: the number of negative eigenvalues of ``∇²ₓf`` (0 a minimum, ``n`` a maximum,
  between them a saddle);
- its smallest ``|eigenvalue|`` and **degeneracy**: ``min|λ| ≤ degeneracy_tol·max|λ|`` (then the
  *nullity*, the number of such eigenvalues, says how many directions are flat);
- a **certificate**: the final ``‖∇ₓf‖``, the last Newton step ``‖H⁻¹g‖`` (the distance to the
  exact root to first order) and the *contraction* ``‖Δ_k‖/‖Δ_{k−1}‖`` of the last two steps
  (≪ 1: quadratic convergence was observed).

When nothing converges, the evidence is the smallest ``‖∇ₓf‖`` seen on the box (over all starts
and iterates) and where. The count is a lower bound: a point whose basin no start falls into is
missed. How many starts reached each point (``hits``) says how complete the search looks: many
points reached once mean more are likely (``estimated_count``, the Chao1 estimate). Random
augmented networks in 4 and 8 dimensions can have dozens of critical points in a box; ``starts``
must grow with them.

Derivatives are batched autograd: per Newton iteration one forward pass and ``n + 1`` backward
passes (the gradient, then one Hessian row per input coordinate by double backward) over the
batch of points, so a search costs about ``max_iter·(n + 2)`` passes over ``starts`` inputs and
``O(starts·n²)`` memory: cheap for ``n ≤ 10``, affordable to ``n`` in the low hundreds. It works
with any differentiable module — MLPs, neural ODEs through the solver — on CPU or GPU (the points
live on the module's device). Rows of the batch must not interact (eval mode: no batch statistics).
By default the search runs in float64 on a float64 copy of the parameters (the module is not
touched), so ``‖∇ₓf‖`` can be driven to ~1e-10 rather than float32's ~1e-4.

References: Kuehn & Kuntz, *Analysis of the geometric structure of neural networks and neural ODEs
via Morse functions*, arXiv:2405.09351; Milnor, *Morse Theory* (1963) for index and degeneracy.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call

Box = Sequence[Sequence[float]]


def morse_kind(index: int, n: int) -> str:
    """``"minimum"`` (index 0), ``"maximum"`` (index ``n``) or ``"saddle"`` (between)."""
    return "minimum" if index == 0 else "maximum" if index == n else "saddle"


def describe_counts(counts_by_index: dict[int, int], n: int, degenerate: int = 0) -> str:
    """``"2 minima, 1 saddle of index 1, 1 degenerate"`` from Morse index → count (``""`` if none)."""
    plural = {"minimum": "minima", "maximum": "maxima", "saddle": "saddles"}
    parts = []
    for i, c in sorted(counts_by_index.items()):
        if c:
            kind = morse_kind(i, n)
            parts.append(f"{c} {kind if c == 1 else plural[kind]}" + (f" of index {i}" if kind == "saddle" else ""))
    if degenerate:
        parts.append(f"{degenerate} degenerate")
    return ", ".join(parts)


@dataclass
class CriticalPointSearch:
    """What :func:`find_critical_points` found.

    Attributes (``k`` points, input dimension ``n``):
        points: ``(k, n)`` critical points, ordered by index then position.
        values: ``(k,)`` ``f`` at each.
        eigenvalues: ``(k, n)`` eigenvalues of ``∇²ₓf`` there, ascending.
        index: ``(k,)`` Morse index (number of eigenvalues below ``−degeneracy_tol·max|λ|``).
        nullity: ``(k,)`` eigenvalues with ``|λ| ≤ degeneracy_tol·max|λ|`` (0: non-degenerate).
        grad_norm: ``(k,)`` final ``‖∇ₓf‖``.
        newton_step: ``(k,)`` ``‖H⁻¹∇ₓf‖`` at the final point (first-order distance to the root).
        contraction: ``(k,)`` ratio of the last two Newton step lengths (NaN if one step sufficed).
        hits: ``(k,)`` how many starts converged to each point (the size of its basin, sampled).
        min_grad_norm: smallest ``‖∇ₓf‖`` seen on the box, over all starts and iterates.
        min_grad_point: ``(n,)`` where.
        starts: starting points used; converged: how many converged inside the box.
        backward_passes: backward passes over the batch (``iterations·(n + 1)``); iterations run.
        seconds: wall time.
        box: ``(n, 2)`` the box searched.
    """

    points: torch.Tensor
    values: torch.Tensor
    eigenvalues: torch.Tensor
    index: torch.Tensor
    nullity: torch.Tensor
    grad_norm: torch.Tensor
    newton_step: torch.Tensor
    contraction: torch.Tensor
    hits: torch.Tensor
    min_grad_norm: float
    min_grad_point: torch.Tensor
    starts: int
    converged: int
    iterations: int
    backward_passes: int
    seconds: float
    box: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.points.shape[0])

    @property
    def degenerate(self) -> torch.Tensor:
        """``(k,)`` whether each critical point is degenerate (``nullity > 0``)."""
        return self.nullity > 0

    @property
    def smallest_abs_eigenvalue(self) -> torch.Tensor:
        """``(k,)`` ``min |λ(∇²ₓf)|`` at each point: its distance from degeneracy."""
        return self.eigenvalues.abs().min(dim=1).values if self.count else self.eigenvalues.new_zeros(0)

    @property
    def estimated_count(self) -> float:
        """How many critical points the starts' basins suggest there are (bias-corrected Chao1,
        ``k + f₁(f₁ − 1)/(2(f₂ + 1))`` with ``f₁``, ``f₂`` the points reached by one and by two starts;
        Chao 1984): equal to ``count`` when every point was reached several times; well above it when
        many were reached once — more starts would find more. A lower-bound estimate: basins of
        unequal size hide small ones."""
        f1, f2 = int((self.hits == 1).sum()), int((self.hits == 2).sum())
        return self.count + f1 * (f1 - 1) / (2 * (f2 + 1))

    @property
    def kinds(self) -> list[str]:
        """The kind of each point — ``"minimum"``, ``"saddle"``, ``"maximum"`` or ``"degenerate"``."""
        n = self.box.shape[0]
        return ["degenerate" if d else morse_kind(int(i), n) for i, d in zip(self.index, self.degenerate)]

    def counts_by_index(self) -> dict[int, int]:
        """Morse index → number of non-degenerate critical points with it (degenerate ones apart)."""
        keep = ~self.degenerate
        return {i: int(((self.index == i) & keep).sum()) for i in range(self.box.shape[0] + 1)}

    def summary(self) -> str:
        """One line: what was found, or the evidence that nothing was."""
        if not self.count:
            where = ", ".join(f"{v:.3g}" for v in self.min_grad_point.tolist())
            return (f"no critical point found in the box from {self.starts} starts ({self.iterations} Newton "
                    f"iterations): smallest ‖∇ₓf‖ = {self.min_grad_norm:.3g} at ({where})")
        counts = describe_counts(self.counts_by_index(), self.box.shape[0], int(self.degenerate.sum()))
        text = (f"{self.count} critical point{'s' if self.count != 1 else ''}: {counts} "
                f"(max ‖∇ₓf‖ {float(self.grad_norm.max()):.1e})")
        if self.estimated_count >= self.count + 1:
            text += (f"; {int((self.hits == 1).sum())} reached by a single start: more starts would likely find more "
                     f"(estimated ≥ {self.estimated_count:.0f})")
        return text


def _as_box(box: Box | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    b = torch.as_tensor(box, dtype=dtype, device=device)
    if b.dim() != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ValueError(f"box must be a sequence of (low, high) pairs, one per input coordinate; got shape "
                         f"{tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()) or not bool((b[:, 1] > b[:, 0]).all()):
        raise ValueError(f"box needs finite low < high in every coordinate, got {b.tolist()}")
    return b


def _scalar_function(f: Callable[[torch.Tensor], torch.Tensor], dtype: Optional[torch.dtype]
                     ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.device]:
    """``f`` as a map ``(S, n) → (S,)``; a module evaluated on a ``dtype`` copy of its parameters."""
    device, call = torch.device("cpu"), f
    if isinstance(f, nn.Module):
        tensors = {**dict(f.named_parameters()), **dict(f.named_buffers())}
        if tensors:
            device = next(iter(tensors.values())).device
        cast = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
                for k, v in tensors.items()}
        call = functools.partial(functional_call, f, cast)  # f's forward on the cast tensors

    def scalar(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):  # in the search dtype, not bf16
            out = call(x)
        if not isinstance(out, torch.Tensor) or out.shape[0] != x.shape[0] or out[0].numel() != 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"f must map a batch (S, n) to one number per row, (S,) or (S, 1); got {shape}")
        return out.reshape(-1)

    return scalar, device


def _derivatives(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``f``, ``∇f`` and ``∇²f`` at each row of ``x``: one forward, ``n + 1`` backward passes."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = f(x)
        grad, = torch.autograd.grad(value.sum(), x, create_graph=True)
        rows = []
        for j in range(x.shape[1]):
            if grad.requires_grad:
                row, = torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True, allow_unused=True)
            else:
                row = None
            rows.append(torch.zeros_like(x) if row is None else row)
    hessian = torch.stack(rows, dim=1)
    return value.detach(), grad.detach(), 0.5 * (hessian + hessian.transpose(1, 2)).detach()


def _newton_step(grad: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """``−H⁻¹g`` on ``H``'s eigenvectors, eigenvalues below ``1e-12·max|λ|`` regularised."""
    lam, vec = torch.linalg.eigh(hessian)
    floor = 1e-12 * lam.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
    safe = torch.where(lam.abs() < floor, torch.where(lam < 0, -floor, floor), lam)
    coefficients = (vec.transpose(1, 2) @ grad.unsqueeze(2)).squeeze(2) / safe
    return -(vec @ coefficients.unsqueeze(2)).squeeze(2)


def find_critical_points(
    f: Callable[[torch.Tensor], torch.Tensor],
    box: Box | torch.Tensor,
    *,
    starts: Optional[int] = None,
    init: Optional[torch.Tensor] = None,
    max_iter: int = 50,
    grad_tol: Optional[float] = None,
    step_tol: float = 1e-6,
    degeneracy_tol: float = 1e-6,
    merge_radius: Optional[float] = None,
    dtype: Optional[torch.dtype] = torch.float64,
    seed: int = 0,
) -> CriticalPointSearch:
    """Critical points of ``f`` in ``box`` by batched multi-start Newton (module docstring).

    Args:
        f: a module or function mapping inputs ``(S, n)`` to ``(S,)`` or ``(S, 1)``, rows independent.
        box: ``[(low_1, high_1), …, (low_n, high_n)]``.
        starts: Sobol starting points (default ``64·n``, at least 64).
        init: extra starting points ``(m, n)``, tried first (warm start: earlier critical points).
        max_iter: Newton iterations.
        grad_tol: ``‖∇ₓf‖`` below which a point has converged; default ``√eps·max(1, median ‖∇ₓf‖ at
            the starts)`` in the search dtype (1.5e-8 relative in float64).
        step_tol: the Newton step ``‖H⁻¹∇ₓf‖`` of a converged point is below ``step_tol·`` the box's
            diagonal.
        degeneracy_tol: an eigenvalue with ``|λ| ≤ degeneracy_tol·max|λ|`` counts as zero.
        merge_radius: points closer than this are one; default ``1e-4·`` the box's diagonal.
        dtype: dtype of the search (a module's parameters are cast in a copy); ``None``: as given.
        seed: seed of the Sobol scrambling (a private generator; no global RNG is drawn).

    Raises:
        FloatingPointError: ``f`` or its gradient is not finite at any starting point.
    """
    start_time = time.perf_counter()
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    for name, value in (("step_tol", step_tol), ("degeneracy_tol", degeneracy_tol)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    scalar, device = _scalar_function(f, dtype)
    work = dtype or torch.get_default_dtype()
    b = _as_box(box, work, device)
    n = b.shape[0]
    starts = max(64, 64 * n) if starts is None else starts
    if not (isinstance(starts, int) and starts >= 1):
        raise ValueError(f"starts must be a positive integer, got {starts!r}")
    low, width = b[:, 0], b[:, 1] - b[:, 0]
    diagonal = float(width.norm())
    sobol = torch.quasirandom.SobolEngine(n, scramble=True, seed=seed).draw(starts).to(device=device, dtype=work)
    x = low + sobol * width
    if init is not None and init.numel():
        x = torch.cat([init.to(device=device, dtype=work).reshape(-1, n), x])
    radius = torch.full((x.shape[0],), 0.1 * diagonal, dtype=work, device=device)

    value, grad, hessian = _derivatives(scalar, x)
    norm = grad.norm(dim=1)
    finite = torch.isfinite(norm) & torch.isfinite(value)
    if not bool(finite.any()):
        raise FloatingPointError(f"f or ∇ₓf is not finite at any of the {x.shape[0]} starting points")
    scale = float(norm[finite].median())
    tol = grad_tol if grad_tol is not None else math.sqrt(torch.finfo(work).eps) * max(1.0, scale)
    merge = merge_radius if merge_radius is not None else 1e-4 * diagonal
    inside = lambda p: ((p >= b[:, 0] - 1e-9 * width) & (p <= b[:, 1] + 1e-9 * width)).all(dim=1)  # noqa: E731
    best = norm.masked_fill(~(finite & inside(x)), math.inf)
    min_norm, min_point = float(best.min()), x[int(best.argmin())].clone()
    last = torch.full_like(norm, math.nan)
    previous = torch.full_like(norm, math.nan)
    iterations = 0
    for _ in range(max_iter):
        newton = _newton_step(grad, hessian)
        # rows still searching: not converged, not stalled (radius collapsed), not far outside the box
        far = ((x < b[:, 0] - width) | (x > b[:, 1] + width)).any(dim=1)
        stalled = radius < 1e-12 * diagonal
        active = finite & ~far & ~stalled & ~((norm <= tol) & (newton.norm(dim=1) <= step_tol * diagonal))
        if not bool(active.any()):
            break
        iterations += 1
        step = newton * (radius / newton.norm(dim=1).clamp_min(torch.finfo(work).tiny)).clamp(max=1.0).unsqueeze(1)
        length = step.norm(dim=1)
        trial = torch.where(active.unsqueeze(1), x + step, x)
        t_value, t_grad, t_hessian = _derivatives(scalar, trial)
        t_norm = t_grad.norm(dim=1)
        better = active & torch.isfinite(t_norm) & (t_norm < norm)
        seen = t_norm.masked_fill(~(torch.isfinite(t_norm) & inside(trial)), math.inf)
        if float(seen.min()) < min_norm:
            min_norm, min_point = float(seen.min()), trial[int(seen.argmin())].clone()
        previous = torch.where(better, last, previous)
        last = torch.where(better, length, last)
        radius = torch.where(better, torch.maximum(radius, 2 * length).clamp(max=0.1 * diagonal),
                             torch.where(active, radius / 2, radius))
        keep = better.unsqueeze(1)
        x = torch.where(keep, trial, x)
        value, norm = torch.where(better, t_value, value), torch.where(better, t_norm, norm)
        grad = torch.where(keep, t_grad, grad)
        hessian = torch.where(keep.unsqueeze(2), t_hessian, hessian)
        finite = finite & torch.isfinite(norm)

    final_step = _newton_step(grad, hessian).norm(dim=1)
    converged = finite & (norm <= tol) & (final_step <= step_tol * diagonal) & inside(x)
    by_norm = torch.argsort(norm.masked_fill(~converged, math.inf))
    chosen: list[int] = []
    hits: dict[int, int] = {}  # starts that converged to each point
    for i in by_norm.tolist()[:int(converged.sum())]:
        near = next((j for j in chosen if float((x[i] - x[j]).norm()) <= merge), None)
        if near is None:
            chosen.append(i)
            hits[i] = 1
        else:
            hits[near] += 1
    pick = torch.as_tensor(chosen, dtype=torch.long, device=device)
    lam = torch.linalg.eigvalsh(hessian[pick]) if chosen else hessian.new_zeros(0, n)
    zero = degeneracy_tol * lam.abs().amax(dim=1, keepdim=True)
    index = (lam < -zero).sum(dim=1)
    # ordered by index, then lexicographically by position
    order = sorted(range(len(chosen)), key=lambda k: (int(index[k]), x[chosen[k]].tolist()))
    sel = torch.as_tensor(order, dtype=torch.long, device=device)
    pick, lam, zero, index = pick[sel], lam[sel], zero[sel], index[sel]
    return CriticalPointSearch(
        points=x[pick].cpu(), values=value[pick].cpu(), eigenvalues=lam.cpu(), index=index.cpu(),
        nullity=(lam.abs() <= zero).sum(dim=1).cpu(), grad_norm=norm[pick].cpu(), newton_step=final_step[pick].cpu(),
        contraction=(last / previous)[pick].cpu(), hits=torch.tensor([hits[chosen[k]] for k in order], dtype=torch.long),
        min_grad_norm=min_norm, min_grad_point=min_point.cpu(),
        starts=int(x.shape[0]), converged=int(converged.sum()), iterations=iterations,
        backward_passes=(iterations + 1) * (n + 1), seconds=time.perf_counter() - start_time, box=b.cpu())
