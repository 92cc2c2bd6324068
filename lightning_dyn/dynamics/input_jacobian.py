"""The input–output Jacobian's singular values: dynamical isometry of the model being trained.

For a model ``f`` and probe inputs ``x_1 … x_B`` the per-sample Jacobians ``J_i = ∂f(x_i)/∂x_i``
(``d_out × d_in``) form the block-diagonal ``J = diag(J_i)``; ``JᵀJ v`` costs one JVP (forward
mode) and one VJP (reverse mode) for the whole batch. From it:

- the top singular values ``σ_1 ≥ … ≥ σ_k`` over all probe inputs, by Lanczos on ``JᵀJ`` (the
  curvature engine's :func:`~lightning_dyn.curvature.top_eigenpairs`, warm-startable);
- the mean squared singular value ``⟨σ²⟩ = tr(JᵀJ)/(B n)``, ``n = min(d_in, d_out)``, by Hutchinson:
  ``tr(JᵀJ) = E‖Jv‖²`` for Rademacher ``v``; and with the same probes the second moment
  ``⟨σ⁴⟩ = tr((JᵀJ)²)/(B n) = E‖JᵀJv‖²/(B n)``, hence the variance ``⟨σ⁴⟩ − ⟨σ²⟩²``.

When one side is narrow (``n = min(d_in, d_out) ≤ dense_limit``, e.g. a classifier's 10 logits)
the Jacobians are formed exactly instead, with ``n`` products for the whole batch (VJPs of the
output basis vectors, or JVPs of the input ones) and ``torch.linalg.svdvals``: exact singular
values and moments, at a cost Lanczos would not beat (``method="auto"``).

Dynamical isometry (Pennington, Schoenholz & Ganguli 2017, arXiv:1711.04735): a deep linear network
with orthogonal weights has every ``σ = 1``; with Gaussian weights of variance ``1/N`` the squared
singular values have mean 1 and variance ``L`` (depth ``L``, wide layers) — ill-conditioned with
depth although the mean is right. When ``d_out < d_in``, ``JᵀJ`` has ``d_in − d_out`` zero
eigenvalues per sample and ``⟨σ²⟩`` is the mean over the ``d_out`` others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch
from torch import nn

from ..sampling import private_generator, random_vectors
from ..curvature.eigen import EigenResult, top_eigenpairs
from ..curvature.context import measurement_context, twice_differentiable_kernels
from ..curvature.finite_difference import central_difference, difference_step
from ..curvature.operator import CurvatureOperator

Forward = Callable[[torch.Tensor], torch.Tensor]
#: ``method="auto"`` forms the Jacobians exactly when min(d_in, d_out) is at most this
DENSE_LIMIT = 64


@dataclass
class JacobianSpectrumResult:
    """What :func:`jacobian_spectrum` returns.

    Attributes:
        sigma: the ``k`` largest singular values over all probe inputs (descending).
        msv: mean squared singular value ``⟨σ²⟩``; ``msv_stderr`` its Hutchinson standard error.
        sv4: ``⟨σ⁴⟩``; ``sv2_variance = ⟨σ⁴⟩ − ⟨σ²⟩²`` the variance of the squared singular values.
        num_jvps, num_vjps: products spent (one of each per Lanczos step and per Hutchinson probe).
        eigen: the Lanczos result on ``JᵀJ`` (pass it as ``init`` to warm-start the next call);
            ``None`` for the dense method.
        method: ``"lanczos"`` or ``"dense"`` (then every number is exact and ``msv_stderr`` is 0).
        squares: every squared singular value (dense method only, else ``None``).
    """

    sigma: torch.Tensor
    msv: float
    msv_stderr: float
    sv4: float
    sv2_variance: float
    num_jvps: int
    num_vjps: int
    eigen: Optional[EigenResult]
    method: str
    squares: Optional[torch.Tensor] = None

    @property
    def sigma_max(self) -> float:
        return float(self.sigma[0])


class JacobianGramOperator(CurvatureOperator):
    """``v ↦ JᵀJ v`` for the block-diagonal input–output Jacobian of ``forward`` at ``inputs``
    (flat vectors of ``inputs.numel()`` entries). ``J v`` and ``Jᵀu`` are :meth:`jvp` and :meth:`vjp`."""

    def __init__(self, forward: Forward, inputs: torch.Tensor) -> None:
        super().__init__()
        if not inputs.is_floating_point():
            raise TypeError(f"the Jacobian needs floating-point inputs, got {inputs.dtype} (embed tokens first)")
        self.forward, self.inputs = forward, inputs.detach()
        self.size, self.device, self.dtype = inputs.numel(), inputs.device, inputs.dtype
        with torch.no_grad():
            self.outputs, self._vjp = torch.func.vjp(forward, self.inputs)
        if not isinstance(self.outputs, torch.Tensor) or self.outputs.shape[:1] != inputs.shape[:1]:
            raise TypeError("the model must map a batch of inputs to one output tensor with the same batch size")
        if not torch.isfinite(self.outputs).all():
            raise FloatingPointError("the model's outputs at the probe inputs are not finite")
        self.num_jvps = self.num_vjps = 0
        #: forward-mode AD works through the model (else central differences of the forward pass)
        self.forward_mode = True

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J v`` by forward-mode AD; where an operation has no forward-mode formula (a custom
        ``autograd.Function`` without ``jvp``), by central differences of the forward pass,
        ``‖v‖ (f(x+εu) − f(x−εu))/2ε`` (``curvature/finite_difference.py``'s step rule, from then on)."""
        self.num_jvps += 1
        with torch.no_grad():
            if self.forward_mode:
                try:
                    return torch.func.jvp(self.forward, (self.inputs,), (v.reshape(self.inputs.shape),))[1]
                except (RuntimeError, NotImplementedError):
                    self.forward_mode = False
            step = difference_step(self.inputs.reshape(-1))
            return central_difference(lambda shift: self.forward(self.inputs + shift.reshape(self.inputs.shape)),
                                      v, step).reshape(self.outputs.shape)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        self.num_vjps += 1
        with torch.no_grad():
            return self._vjp(u)[0].reshape(-1)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.vjp(self.jvp(v))

    def dense(self) -> torch.Tensor:
        """The per-sample Jacobians ``(B, d_out, d_in)``: ``d_out`` VJPs or ``d_in`` JVPs, whichever is fewer
        (a basis vector repeated on every sample gives that row or column of every ``J_i`` at once)."""
        batch, d_in, d_out = len(self.inputs), self.inputs[0].numel(), self.outputs[0].numel()
        if d_out <= d_in:
            basis = torch.eye(d_out, dtype=self.outputs.dtype, device=self.device)
            rows = [self.vjp(e.expand(batch, d_out).reshape(self.outputs.shape)).reshape(batch, d_in) for e in basis]
            return torch.stack(rows, dim=1)
        basis = torch.eye(d_in, dtype=self.dtype, device=self.device)
        columns = [self.jvp(e.expand(batch, d_in).reshape(-1)).reshape(batch, d_out) for e in basis]
        return torch.stack(columns, dim=2)


def jacobian_spectrum(
    model: Union[nn.Module, Forward],
    inputs: torch.Tensor,
    *,
    k: int = 1,
    method: Literal["auto", "lanczos", "dense"] = "auto",
    tol: float = 1e-3,
    max_matvecs: int = 100,
    num_probes: int = 16,
    init: Optional[EigenResult] = None,
    generator: Optional[torch.Generator] = None,
    train: bool = False,
) -> JacobianSpectrumResult:
    """Top singular values and moments of the input–output Jacobian at ``inputs`` (module docstring).

    Args:
        model: an ``nn.Module`` or any function of a batch ``(B, …)`` to outputs ``(B, …)``;
            samples must not interact (BatchNorm in eval mode, the default, is fine).
        inputs: probe inputs ``(B, …)``, floating point.
        k: number of top singular values.
        method: ``"lanczos"`` (Lanczos + Hutchinson), ``"dense"`` (exact Jacobians), or ``"auto"``:
            dense when ``min(d_in, d_out) ≤ DENSE_LIMIT`` (64).
        tol: relative accuracy of ``σ_i²`` (Lanczos stopping rule of :func:`~lightning_dyn.curvature.top_eigenpairs`).
        max_matvecs: cap on Lanczos steps (each one JVP and one VJP).
        num_probes: Hutchinson probes for ``⟨σ²⟩`` and ``⟨σ⁴⟩`` (≥ 2, for the standard error).
        init: a previous result's ``eigen`` to warm-start Lanczos.
        generator: private generator (default: a fresh one, seed 0).
        train: evaluate an ``nn.Module`` in train mode (default: eval mode; modes and the global
            RNG streams are restored).
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ValueError(f"method must be 'auto', 'lanczos' or 'dense', got {method!r}")
    if num_probes < 2:
        raise ValueError(f"num_probes must be at least 2 (for a standard error), got {num_probes}")
    if inputs.dim() < 2 or len(inputs) == 0:
        raise ValueError(f"inputs must be a non-empty batch (B, ...), got shape {tuple(inputs.shape)}")
    modes = measurement_context(model, train=train, seed=0) if isinstance(model, nn.Module) \
        else twice_differentiable_kernels()
    with modes:
        op = JacobianGramOperator(model, inputs)
        n = min(inputs[0].numel(), op.outputs[0].numel())
        if k > len(inputs) * n:
            raise ValueError(f"k ({k}) exceeds the number of singular values ({len(inputs)} inputs × {n})")
        if method == "dense" or method == "auto" and n <= DENSE_LIMIT:
            return _dense_spectrum(op, k)
        return _lanczos_spectrum(op, k, n, tol=tol, max_matvecs=max_matvecs, num_probes=num_probes, init=init,
                                 generator=private_generator(generator))


def _dense_spectrum(op: JacobianGramOperator, k: int) -> JacobianSpectrumResult:
    jacobians = op.dense()
    if not torch.isfinite(jacobians).all():
        raise FloatingPointError("the Jacobian at the probe inputs is not finite")
    squares = torch.linalg.svdvals(jacobians).double().square().flatten()
    msv, sv4 = float(squares.mean()), float(squares.square().mean())
    sigma = squares.sort(descending=True).values[:k].sqrt().cpu()
    return JacobianSpectrumResult(sigma, msv, 0.0, sv4, sv4 - msv**2, op.num_jvps, op.num_vjps, None, "dense",
                                  squares.cpu())


def _lanczos_spectrum(op: JacobianGramOperator, k: int, n: int, *, tol: float, max_matvecs: int, num_probes: int,
                      init: Optional[EigenResult], generator: torch.Generator) -> JacobianSpectrumResult:
    eigen = top_eigenpairs(op, k, tol=tol, max_matvecs=max_matvecs, init=init, generator=generator)
    first, second = [], []
    for _ in range(num_probes):
        v = random_vectors((op.size,), device=op.device, dtype=op.dtype, generator=generator, distribution="rademacher")
        jv = op.jvp(v)
        first.append(torch.linalg.vector_norm(jv, dtype=torch.float64).square())
        second.append(torch.linalg.vector_norm(op.vjp(jv), dtype=torch.float64).square())
    scale = len(op.inputs) * n
    first_t, second_t = torch.stack(first).cpu() / scale, torch.stack(second).cpu() / scale
    msv, sv4 = float(first_t.mean()), float(second_t.mean())
    sigma = eigen.values.clamp(min=0).sqrt()
    return JacobianSpectrumResult(sigma, msv, float(first_t.std() / math.sqrt(num_probes)), sv4, sv4 - msv**2,
                                  op.num_jvps, op.num_vjps, eigen, "lanczos")
