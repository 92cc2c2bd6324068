"""SGD linearised at an interpolating minimum, as a random linear map (Wu, Ma & E 2018; Chemnitz & Engel 2024).

With the loss ``L = (1/n) Σ_i ℓ(f(x_i), y_i)`` and a mini-batch ``ξ`` of ``B`` samples, one SGD
step linearised at the minimum ``θ*`` maps a perturbation ``x`` to ``A_ξ x = (I − η H_ξ) x``,
``H_ξ = (1/B) Σ_{i∈ξ} ∇²ℓ_i(θ*)``. Two representations of that map:

- :class:`NormalSpaceSGD` ("gram"). At interpolation ``∇²ℓ_i = J_iᵀ Λ_i J_i`` (the Gauss–Newton
  term; the residual term vanishes with the residual), ``J_i`` the sample's output Jacobian and
  ``Λ_i = ∂²ℓ/∂f²`` the loss's output Hessian. Write ``Λ_i = S_i²`` (``S_i`` its symmetric square
  root) and ``G = blockdiag(S_i) J`` (``nC × P``). The normal space is ``N = range(Gᵀ)``; with a
  factor ``G Gᵀ = V Vᵀ`` (``V``: ``nC × r``, ``r = dim N``), ``G = V Qᵀ`` for an orthonormal basis
  ``Q`` of ``N``, and in the coordinates ``x = Q c``

      c ↦ c − (η/B) Σ_{i∈ξ} V_iᵀ V_i c        (V_i: the C rows of sample i)

  — an ``r``-dimensional system, exactly conjugate to ``A_ξ`` on ``N`` and free of the tangent
  directions, so no re-projection is needed. ``V`` is the Cholesky factor of ``G Gᵀ`` when that
  is positive definite, else ``U √D`` from its eigendecomposition (rank-revealing).
- :class:`ParameterSpaceSGD` ("hvp"): ``A_ξ V = V − η H_ξ V`` by mini-batch Hessian-vector
  products (any twice-differentiable loss), re-projected onto the span of the full-batch Hessian's
  top eigenvectors.

Both apply one map to a stack ``D`` of shape ``(E, dim, k)`` for ``E`` learning rates at once, with
the same batch (common random numbers make λ(η) a smooth curve).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Optional

import torch
from torch import nn
from torch.func import hessian, vmap

from ..curvature import HessianOperator
from ..curvature.batches import batch_size as count_samples
from ..curvature.batches import select_samples
from .ntk import empirical_ntk

Sampling = Literal["reshuffle", "iid"]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_mean_reduction(criterion: Criterion, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """The linearisation needs the batch loss to be the mean of per-sample losses."""
    if outputs.shape[0] < 2:
        return
    pair = criterion(outputs[:2], targets[:2])
    singles = (criterion(outputs[:1], targets[:1]) + criterion(outputs[1:2], targets[1:2])) / 2
    if not torch.allclose(pair, singles, rtol=1e-5, atol=1e-12):
        raise ValueError(
            f"criterion(outputs, targets) must average per-sample losses over the batch (reduction='mean'); "
            f"on two samples it gives {float(pair):.6g}, the mean of the two single-sample losses is {float(singles):.6g}")


def output_hessian_roots(criterion: Criterion, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``S_i = (∂²ℓ_i/∂f²)^{1/2}`` for every sample, shape ``(n, C, C)``, float64.

    Raises ``ValueError`` when the loss is not convex in the outputs (negative curvature): the
    Gauss–Newton form does not hold, use ``method='hvp'``."""
    n = outputs.shape[0]
    f = outputs.detach().double().reshape(n, -1)

    def per_sample(fi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return criterion(fi.reshape(1, *outputs.shape[1:]), yi.unsqueeze(0))

    lam = vmap(hessian(per_sample))(f, targets)
    w, U = torch.linalg.eigh(lam)
    scale = w.abs().amax().clamp_min(1e-300)
    if bool((w < -1e-8 * scale).any()):
        raise ValueError("the loss has negative curvature in the outputs; the Gauss–Newton form of 'gram' "
                         "does not apply: use method='hvp'")
    return (U * w.clamp_min(0).sqrt().unsqueeze(-2)) @ U.transpose(-1, -2)


#: above this many rows the factor is a jittered Cholesky factor (an eigendecomposition would
#: dominate the cost)
DENSE_EIGH_LIMIT = 3000
#: relative jitter of the large-problem factor, by precision
JITTER = {torch.float64: 1e-10, torch.float32: 1e-6}


def normal_space_factor(ntk: torch.Tensor, roots: torch.Tensor, dtype: Optional[torch.dtype] = None,
                        rank_tol: float = 1e-10) -> torch.Tensor:
    """``V`` (``n, C, r``) with ``V Vᵀ = G = blockdiag(S) Θ blockdiag(S)`` (module docstring).

    Up to ``DENSE_EIGH_LIMIT`` rows, exactly: the Cholesky factor of ``G`` when it is positive
    definite (``r = nC``), else ``U √D`` over the eigenvalues above ``rank_tol``·max (``r`` = the
    numerical rank). Beyond, the Cholesky factor of ``G + εI`` in ``dtype``, ``ε = JITTER``·max
    diag: directions of ``G`` with curvature below ε (and the tangent directions a rank deficit
    stands for) get curvature ≈ ε, i.e. exponents ``≈ −ηε/n`` — zero to every digit that matters."""
    n, C, _ = roots.shape
    ntk = ntk.to(roots.dtype) if ntk.shape[0] <= DENSE_EIGH_LIMIT else ntk
    roots = roots.to(ntk.dtype)
    eye = torch.eye(C, dtype=roots.dtype, device=roots.device)
    scalar = roots[:, 0, 0]
    if torch.allclose(roots, scalar.view(-1, 1, 1) * eye) and torch.allclose(scalar, scalar[0]):
        g = ntk * scalar[0] ** 2  # squared error: S_i = s·I
    else:
        g = torch.einsum("iab,ibjc,jdc->iajd", roots, ntk.view(n, C, n, C), roots).reshape(n * C, n * C)
        g = (g + g.T) / 2
    dtype = dtype or g.dtype
    if g.shape[0] > DENSE_EIGH_LIMIT:
        jitter = JITTER.get(dtype, 1e-6) * g.diagonal().max()
        low = g.to(dtype)
        for _ in range(3):
            chol, info = torch.linalg.cholesky_ex(low + jitter * torch.eye(g.shape[0], dtype=dtype, device=g.device))
            if int(info) == 0:
                return chol.view(n, C, n * C)
            jitter = jitter * 100
        raise ValueError("the Gram matrix of the probe set could not be factored; use method='hvp'")
    g = g.double()
    chol, info = torch.linalg.cholesky_ex(g)
    diag = chol.diagonal()
    if int(info) == 0 and bool(diag.min() ** 2 > rank_tol * diag.max() ** 2):
        return chol.view(n, C, n * C).to(dtype)
    w, U = torch.linalg.eigh(g)
    keep = w > rank_tol * w.max().clamp_min(1e-300)
    if not bool(keep.any()):
        raise ValueError("the loss has no curvature on this probe set (the Gauss–Newton matrix is zero)")
    return (U[:, keep] * w[keep].sqrt()).view(n, C, -1).to(dtype)


def batches(n: int, batch_size: int, sampling: Sampling, generator: torch.Generator,
            drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Endless mini-batches of sample indices, drawn the way training draws them:
    ``"reshuffle"`` — a fresh permutation each epoch, cut into consecutive batches (the last one
    smaller unless ``drop_last``); ``"iid"`` — each batch ``B`` distinct samples drawn uniformly."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and the probe set size {n}, got {batch_size}")
    while True:
        perm = torch.randperm(n, generator=generator)
        if sampling == "iid":
            yield perm[:batch_size]
            continue
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            if len(idx) == batch_size or not drop_last:
                yield idx


class NormalSpaceSGD:
    """Linearised SGD in normal-space coordinates ("gram"; module docstring).

    Args:
        factor: ``V`` of shape ``(n, C, r)`` from :func:`normal_space_factor`.
    """

    def __init__(self, factor: torch.Tensor) -> None:
        self.factor = factor.contiguous()
        self.device = factor.device
        self.num_samples, self.rows_per_sample, self.dim = factor.shape
        self.products = 0
        self._blocks = factor @ factor.transpose(1, 2)  # V_i V_iᵀ, (n, C, C)

    @classmethod
    def from_model(cls, model: nn.Module, criterion: Criterion, inputs: torch.Tensor, targets: torch.Tensor,
                   dtype: Optional[torch.dtype] = None, **ntk_kwargs: Any) -> tuple["NormalSpaceSGD", torch.Tensor]:
        """Build it at the model's current parameters; returns it and the probe loss."""
        ntk, outputs = empirical_ntk(model, inputs, **ntk_kwargs)
        outputs = outputs.reshape(inputs.shape[0], *outputs.shape[1:])
        with torch.no_grad():
            loss = criterion(model(inputs), targets).detach()
        if not bool(torch.isfinite(loss)) or not bool(torch.isfinite(outputs).all()):
            raise FloatingPointError(f"the probe loss is {float(loss)} at the current parameters")
        check_mean_reduction(criterion, outputs, targets)
        roots = output_hessian_roots(criterion, outputs, targets)
        return cls(normal_space_factor(ntk, roots, dtype)), loss

    def curvature(self, D: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``H_ξ D = (1/|ξ|) V_ξᵀ V_ξ D`` for ``D`` of shape ``(E, r, k)`` (one GEMM for all E)."""
        v = self.factor[idx.to(self.factor.device)].reshape(-1, self.dim).to(D.dtype)
        E, r, k = D.shape
        flat = D.permute(1, 0, 2).reshape(r, E * k)
        update = ((v @ flat).T @ v).T.reshape(r, E, k).permute(1, 0, 2)  # Vᵀ(V D), untransposed GEMMs
        return update / len(idx)

    def step(self, D: torch.Tensor, idx: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
        """``D − η H_ξ D`` for ``D`` of shape ``(E, r, k)`` and ``lrs`` of shape ``(E,)``."""
        return D - lrs.to(D).view(-1, 1, 1) * self.curvature(D, idx)

    # full-batch operators on N (for GD and the Wu–Ma–E condition); each pass over V is the cost
    def hessian_matvec(self, c: torch.Tensor) -> torch.Tensor:
        """``H c = (1/n) Vᵀ V c``."""
        V = self.factor.reshape(-1, self.dim)
        return V.T @ (V @ c) / self.num_samples

    def moments_matvec(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``H c`` and ``(1/n) Σ_i H_i² c`` (``H_i = V_iᵀ V_i``) in two passes over ``V``."""
        V = self.factor.reshape(-1, self.dim)
        y = V @ c
        z = (self._blocks @ y.view(self.num_samples, -1, 1)).reshape(-1)
        both = torch.stack([y, z]) @ V / self.num_samples  # (Vᵀ[y z])ᵀ without a transposed GEMM
        return both[0], both[1]


class ParameterSpaceSGD:
    """Linearised SGD in parameter space by mini-batch Hessian-vector products ("hvp").

    Args:
        model: the network at the minimum.
        loss_fn: ``loss_fn(model, batch) -> scalar``, the mean loss of a batch.
        data: the probe set as one batch (tensors with samples along dim 0).
        basis: ``(P, m)`` orthonormal basis of the retained normal directions (the full-batch
            Hessian's top eigenvectors above a cutoff); every step is projected onto it, which
            removes the tangent directions. Directions below the cutoff are dropped: their
            exponents are ``≈ −η h`` with ``h`` below the cutoff, i.e. ≈ 0⁻.
        mode: evaluation mode of the products (``"eval"``: Dropout off, BatchNorm running statistics).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], data: Any,
                 basis: torch.Tensor, mode: Literal["eval", "train"] = "eval") -> None:
        self.model, self.loss_fn, self.data, self.mode = model, loss_fn, data, mode
        self.basis = basis
        self.dim = basis.shape[1]
        self.device = basis.device
        self.num_samples = count_samples(data)
        self.products = 0

    def curvature(self, D: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``Uᵀ H_ξ U D`` for ``D`` of shape ``(E, m, k)`` in basis coordinates (``E·k`` products)."""
        batch = select_samples(self.data, idx)
        op = HessianOperator(self.model, self.loss_fn, [batch], mode=self.mode, distributed=False,
                             dtype=self.basis.dtype)
        E, m, k = D.shape
        U = self.basis
        X = U @ D.permute(1, 0, 2).reshape(m, E * k)  # (P, E·k)
        HX = torch.stack([op.matvec(X[:, j]) for j in range(E * k)], dim=1)
        self.products += op.num_matvecs
        return (U.T @ HX).reshape(m, E, k).permute(1, 0, 2)

    def step(self, D: torch.Tensor, idx: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
        """One map ``c ↦ Uᵀ(I − ηH_ξ)U c`` for ``D`` of shape ``(E, m, k)``."""
        return D - lrs.to(D).view(-1, 1, 1) * self.curvature(D, idx)


class MomentumSGD:
    """SGD with momentum β linearised on top of a plain linearisation ``inner`` (either form).

    PyTorch's SGD keeps ``b ← β b + g`` and steps ``x ← x − η b`` (Nesterov: ``x ← x − η (g + β b)``);
    linearised, ``g = H_ξ x`` and the state ``(x, b)`` evolves by

        b' = β b + H_ξ x,    x' = x − η b'          (heavy ball)
        x' = x − η (H_ξ x + β b')                   (Nesterov)

    a ``2r``-dimensional random linear system; the buffer lives in the normal space too (it sums
    ``H_ξ x``), so the reduction of ``inner`` carries over. On a quadratic this gives the thresholds
    of ``stability_threshold``: ``(2 + 2β)/η`` (heavy ball), ``(2 + 2β)/(η(1 + 2β))`` (Nesterov).
    """

    def __init__(self, inner: "NormalSpaceSGD | ParameterSpaceSGD", momentum: float, nesterov: bool = False) -> None:
        self.inner, self.momentum, self.nesterov = inner, momentum, nesterov
        self.dim = 2 * inner.dim
        self.num_samples, self.device = inner.num_samples, inner.device

    @property
    def products(self) -> int:
        return self.inner.products

    def step(self, D: torch.Tensor, idx: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
        r = self.inner.dim
        x, b = D[:, :r], D[:, r:]
        hx = self.inner.curvature(x, idx)
        b = self.momentum * b + hx
        lr = lrs.to(D).view(-1, 1, 1)
        x = x - lr * (hx + self.momentum * b if self.nesterov else b)
        return torch.cat([x, b], dim=1)
