"""Is this minimum stable for SGD? The top Lyapunov exponent of linearised SGD (Chemnitz & Engel 2024).

Linearised at an interpolating minimum, SGD with learning rate ``η`` and batch size ``B`` is the
random linear system ``x ↦ (I − η H_ξ) x`` on the normal space ``N`` of the minimum manifold.
Its top Lyapunov exponent

    λ = lim_{t→∞} (1/t) log ‖A_{ξ_t} ⋯ A_{ξ_1}|_N‖

decides: ``λ < 0`` — SGD converges to the manifold near this minimum (with positive probability);
``λ > 0`` — it leaves (Chemnitz & Engel, arXiv:2407.20209, Thm. 2.4). Reported alongside:

- GD's exponent ``μ = log max_{h ∈ spec(H|N)} |1 − ηh|`` (stable iff ``μ < 0``, i.e. ``η < 2/h_max``);
  with momentum, the log spectral radius of the heavy-ball (Nesterov) map, and SGD itself is
  simulated with its momentum buffer (``lightning_dyn.dynamics.linearised_sgd.MomentumSGD``);
- the mean-square (linear-stability) analysis of Wu, Ma & E (NeurIPS 2018): sharpness
  ``a = λ_max(H)``, non-uniformity ``s = λ_max(Σ)^{1/2}`` with ``Σ = (1/n) Σ_i H_i² − H²``, and the
  verdict ``λ_max{(I − ηH)² + η² (n−B)/(B(n−1)) Σ} ≤ 1`` — sufficient for ``λ < 0``, not necessary
  (a minimum can be SGD-stable yet not mean-square stable);
- the critical learning rate: the smallest ``η`` on a grid at which ``λ(η)`` crosses 0 for the
  current ``B`` (interpolated in ``log η``). ``λ(η)`` need not be monotone (it dips to ``−∞`` where
  ``η = 1/h`` annihilates a direction), so stable islands can exist beyond it; the stability
  diagram shows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..curvature import HessianOperator, MatrixFreeOperator, top_eigenpairs
from ..curvature.batches import batch_size as batch_size_of
from ..curvature.batches import tensors_of
from ..sampling import private_generator
from ..curvature.context import measurement_context
from .linearised_sgd import Criterion, MomentumSGD, NormalSpaceSGD, ParameterSpaceSGD, Sampling, batches
from .lyapunov import lyapunov_spectrum
from .ntk import MAX_JACOBIAN_BYTES

Method = Literal["gram", "hvp"]
#: systems up to this dimension get exact dense eigenvalues instead of Lanczos
DENSE_LIMIT = 64
Linearisation = Union[NormalSpaceSGD, ParameterSpaceSGD, MomentumSGD]


@dataclass
class StabilityDiagram:
    """``exponents[b, e]`` (± ``stderr``) is λ at ``batch_sizes[b]`` and ``lrs[e]``."""

    lrs: list[float]
    batch_sizes: list[int]
    exponents: list[list[float]]
    stderr: list[list[float]]


@dataclass
class SGDStability:
    """Result of :func:`sgd_lyapunov` (all floats; NaN where a quantity was not computed).

    Attributes:
        exponent, stderr: λ at (``lr``, ``batch_size``) and its standard error.
        gd_exponent: μ = log max ``|1 − η h|`` over the normal-space curvatures.
        sharpness, nonuniformity: Wu–Ma–E's ``a`` and ``s`` (``nonuniformity`` in ``"gram"`` only).
        mean_square: ``λ_max{(I−ηH)² + η²(n−B)/(B(n−1)) Σ}``; mean-square stable iff ≤ 1 (``"gram"`` only).
        critical_lr: the smallest η at which λ crosses 0 for this B (NaN if no crossing on the grid).
        loss: the probe loss; near_interpolation: whether it is ≤ ``interpolation_tol``.
        dim: dimension of the system simulated (``dim N`` in ``"gram"``, retained directions in ``"hvp"``).
        products: Hessian-vector products spent (``"hvp"``), or 0.
        diagram: λ over the (η, B) grid.
    """

    lr: float
    batch_size: int
    exponent: float
    stderr: float
    gd_exponent: float
    sharpness: float
    nonuniformity: float
    mean_square: float
    critical_lr: float
    loss: float
    near_interpolation: bool
    dim: int
    method: str
    sampling: str
    num_steps: int
    products: int
    diagram: StabilityDiagram

    @property
    def stable(self) -> bool:
        """Whether λ < 0, i.e. the minimum is stable for SGD at this (η, B)."""
        return self.exponent < 0

    @property
    def mean_square_stable(self) -> bool:
        return self.mean_square <= 1


def _extreme(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, like: torch.Tensor, which: str,
             generator: torch.Generator, max_matvecs: int = 30) -> float:
    """An extreme eigenvalue: exactly from the dense matrix up to ``DENSE_LIMIT`` dimensions, else
    by Lanczos (relative accuracy 1e-3; the smallest one of a clustered low end may stop at the
    cap, as an upper bound)."""
    if dim <= DENSE_LIMIT:
        eye = torch.eye(dim, dtype=like.dtype, device=like.device)
        dense = torch.stack([matvec(e) for e in eye], dim=1)
        values = torch.linalg.eigvalsh((dense + dense.T) / 2)
        return float(values[-1] if which == "LA" else values[0])
    op = MatrixFreeOperator(matvec, dim, device=like.device, dtype=like.dtype)
    result = top_eigenpairs(op, k=1, tol=1e-3, max_matvecs=min(dim, max_matvecs), which=which, generator=generator)
    return float(result.values[0])


def gd_threshold_lr(sharpness: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """The η at which (momentum) GD becomes unstable on curvature ``a``: 2/a, (2+2β)/a, (2+2β)/((1+2β)a)."""
    return (2 + 2 * momentum) / ((1 + 2 * momentum) if nesterov else 1.0) / sharpness


def gd_exponent(lr: float, curvatures: Sequence[float], momentum: float = 0.0, nesterov: bool = False) -> float:
    """``log`` of the largest spectral radius of the (momentum) GD map over the given curvatures
    (the extremes of spec(H|N): on [h_min, h_max] the radius peaks at an end)."""
    radii = []
    for h in curvatures:
        if nesterov:  # x' = x − η(hx + βb'), b' = βb + hx
            m = [[1 - lr * h * (1 + momentum), -lr * momentum**2], [h, momentum]]
        elif momentum:  # x' = x − ηb', b' = βb + hx
            m = [[1 - lr * h, -lr * momentum], [h, momentum]]
        else:
            m = [[1 - lr * h]]
        radii.append(float(np.abs(np.linalg.eigvals(np.array(m, dtype=float))).max()))
    return math.log(max(radii)) if max(radii) > 0 else -math.inf


def lr_grid(sharpness: float, num: int, momentum: float = 0.0, nesterov: bool = False) -> torch.Tensor:
    """``num`` learning rates, geometric from edge/16 to 8·edge around GD's threshold (the edge)."""
    edge = gd_threshold_lr(sharpness, momentum, nesterov)
    return torch.logspace(math.log10(edge / 16), math.log10(edge * 8), num, dtype=torch.float64)


def critical_lr(lrs: Sequence[float], exponents: Sequence[float]) -> float:
    """The first η (ascending) where λ goes from < 0 to ≥ 0, interpolated linearly in log η; NaN
    when λ does not change sign on the grid from below."""
    pairs = sorted(zip(lrs, exponents))
    for (l0, e0), (l1, e1) in zip(pairs, pairs[1:]):
        if e0 < 0 <= e1:
            if not math.isfinite(e0):
                return l0
            w = -e0 / (e1 - e0)
            return math.exp(math.log(l0) + w * (math.log(l1) - math.log(l0)))
    return math.nan


def _simulate(lin: Linearisation, lrs: torch.Tensor, batch_size: int, sampling: Sampling, drop_last: bool,
              num_steps: int, k: int, generator: torch.Generator, dtype: torch.dtype):
    draws = batches(lin.num_samples, batch_size, sampling, generator, drop_last)
    lr = lrs.to(device=lin.device, dtype=dtype)
    return lyapunov_spectrum(lambda D: lin.step(D, next(draws), lr), lin.dim, min(k, lin.dim), num_steps,
                             generator=generator, batch_shape=(len(lrs),), device=lin.device, dtype=dtype)


def _hvp_linearisation(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], data: Any,
                       directions: int, cutoff: float, generator: torch.Generator) -> tuple[ParameterSpaceSGD, list[float], float]:
    op = HessianOperator(model, loss_fn, [data], mode="eval", distributed=False)
    k = min(directions, op.size)
    eig = top_eigenpairs(op, k=k, tol=1e-6, max_matvecs=min(op.size, 4 * k + 60), generator=generator)
    keep = eig.values > cutoff * eig.values[0]
    basis = torch.linalg.qr(eig.vectors[:, torch.as_tensor(keep)].double())[0]
    values = eig.values[torch.as_tensor(keep)].tolist()
    return ParameterSpaceSGD(model, loss_fn, data, basis), values, float(op.loss().detach())


def _check_loss_arguments(model: nn.Module, criterion: Any, data: Any, loss_fn: Any, method: str) -> None:
    """Name the argument when ``criterion``, ``data`` and ``loss_fn`` are mixed up (the usual slip:
    a ``loss_fn(model, batch)`` passed where ``criterion(outputs, targets)`` goes)."""
    if criterion is not None and not callable(criterion):
        raise TypeError(f"criterion must be callable as criterion(outputs, targets), got {type(criterion).__name__}"
                        + (" — the probe set goes third: sgd_lyapunov(model, criterion, (inputs, targets), ...)"
                           if isinstance(criterion, (tuple, list, torch.Tensor)) else ""))
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}")
    if criterion is None and (method == "gram" or loss_fn is None):
        raise TypeError("criterion(outputs, targets) is needed" + (" by method='gram'" if method == "gram" else
                                                                   " (or pass loss_fn(model, batch))"))
    if method == "hvp" and loss_fn is not None:  # any batch loss_fn takes: a dict, a BatchEncoding, ...
        if callable(data) or not tensors_of(data):
            raise TypeError(f"data must be the probe set as one batch of tensors, got {type(data).__name__}"
                            + (" — is it in the criterion's place?" if callable(data) else ""))
        return
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError(f"data must be the probe set (inputs, targets) as two tensors, got {type(data).__name__}"
                        + (" — is it in the criterion's place?" if callable(data) else "")
                        + ("" if method == "hvp" else "; with method='hvp' and loss_fn(model, batch) any batch works"))
    if data[0].shape[0] != data[1].shape[0]:
        raise ValueError(f"data: inputs and targets hold {data[0].shape[0]} and {data[1].shape[0]} samples")


def _check_criterion_call(model: nn.Module, criterion: Optional[Criterion], data: Any) -> None:
    """``criterion(model(x), y)`` on two probe samples is a scalar (run inside the measurement context)."""
    if criterion is None:
        return
    x, y = data[0][:2], data[1][:2]
    with torch.no_grad():
        try:
            value = criterion(model(x), y)
        except (TypeError, AttributeError) as err:
            raise TypeError(f"criterion(outputs, targets) failed on two probe samples ({err}). criterion takes the "
                            "model's outputs and the targets, as nn.MSELoss() or F.cross_entropy do; a function of "
                            "(model, batch) is a loss_fn: pass it as loss_fn=..., with method='hvp'") from err
    if not (isinstance(value, torch.Tensor) and value.numel() == 1):
        raise TypeError(f"criterion(outputs, targets) must return the mean loss as a scalar tensor, got "
                        f"{type(value).__name__}{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}")


def sgd_lyapunov(
    model: nn.Module,
    criterion: Optional[Criterion],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    batch_size: int,
    method: Method = "gram",
    momentum: float = 0.0,
    nesterov: bool = False,
    loss_fn: Optional[Callable[[nn.Module, Any], torch.Tensor]] = None,
    sampling: Sampling = "reshuffle",
    drop_last: bool = False,
    num_steps: int = 2000,
    k: int = 1,
    num_lrs: int = 24,
    batch_sizes: Optional[Sequence[int]] = None,
    diagram_steps: Optional[int] = None,
    interpolation_tol: float = 1e-3,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    hvp_directions: int = 32,
    hvp_cutoff: float = 1e-4,
    ntk_method: Literal["auto", "structured", "explicit"] = "auto",
    max_jacobian_bytes: int = MAX_JACOBIAN_BYTES,
    seed: int = 0,
) -> SGDStability:
    """The top Lyapunov exponent of SGD linearised at the model's current parameters.

    Args:
        model: the network ``f``; ``model(inputs)`` gives the outputs. Evaluated in eval mode
            (Dropout off, BatchNorm running statistics) with global RNG streams untouched.
        criterion: ``criterion(outputs, targets)``, the *mean* loss of a batch (e.g.
            ``nn.MSELoss()``, ``F.cross_entropy``); checked on two samples. May be ``None`` with
            ``method="hvp"`` and a ``loss_fn``.
        data: the probe set ``(inputs, targets)`` — the samples SGD draws its batches from; with
            ``method="hvp"`` and a ``loss_fn``, any batch ``loss_fn`` takes (a dict, a ``transformers``
            ``BatchEncoding``, ...: samples along the leading dimension of its tensors).
        lr, batch_size: the (η, B) to judge.
        method: ``"gram"`` (normal-space form from the NTK and the loss's output Hessians: exact at
            interpolation, cheap per step, needs a loss convex in the outputs) or ``"hvp"``
            (mini-batch Hessian-vector products in parameter space projected on the full-batch
            Hessian's top ``hvp_directions`` eigenvectors above ``hvp_cutoff``·top: any
            twice-differentiable ``loss_fn``; ``k·(num_lrs+1)`` products per simulated step).
        momentum, nesterov: SGD's momentum β (PyTorch's convention, no dampening) and Nesterov flag:
            the system simulated is then the ``2r``-dimensional heavy-ball (or Nesterov)
            linearisation (``MomentumSGD``); Wu–Ma–E's analysis is for plain SGD and is skipped.
        loss_fn: ``loss_fn(model, batch)`` for ``"hvp"`` (default: ``criterion(model(x), y)``).
        sampling: ``"reshuffle"`` (a permutation per epoch, as a shuffling DataLoader) or ``"iid"``.
        drop_last: drop the last, smaller batch of an epoch (``"reshuffle"``).
        num_steps: simulated SGD steps per exponent (after a burn-in of ``min(100, num_steps/10)``).
        k: number of exponents tracked (the top one is reported).
        num_lrs: learning rates on the grid for the critical η and the diagram.
        batch_sizes: further batch sizes for the stability diagram (the current one is always in).
        diagram_steps: simulated steps for those further rows (default ``num_steps // 4``: they
            are drawn with their standard errors; the current B's row, which decides the
            critical η, gets ``num_steps``).
        interpolation_tol: probe loss below which the point counts as interpolating.
        generator: private generator (batches, start vectors, Lanczos).
        dtype: precision of the simulation.
        hvp_directions, hvp_cutoff: the ``"hvp"`` projection (see ``method``).
        ntk_method, max_jacobian_bytes: how the NTK is built (:func:`empirical_ntk`).
        seed: seed of the private RNG used while evaluating the model.

    Returns:
        :class:`SGDStability`. Far from interpolation (loss > ``interpolation_tol``) the numbers
        describe the linearisation at the current point and ``near_interpolation`` is False.
    """
    if method not in ("gram", "hvp"):
        raise ValueError(f"method must be 'gram' or 'hvp', got {method!r}")
    _check_loss_arguments(model, criterion, data, loss_fn, method)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if sampling not in ("reshuffle", "iid"):
        raise ValueError(f"sampling must be 'reshuffle' or 'iid', got {sampling!r}")
    if not (isinstance(lr, (int, float)) and lr >= 0):
        raise ValueError(f"lr must be a number >= 0, got {lr!r}")
    n = batch_size_of(data)
    sizes = sorted({batch_size, *(batch_sizes or ())})
    for b in sizes:
        if not (isinstance(b, int) and 1 <= b <= n):
            raise ValueError(f"batch_size {b!r} must be an integer between 1 and the probe set size ({n})")
    generator = private_generator(generator, seed)
    with measurement_context(model, train=False, seed=seed), torch.enable_grad():
        if method == "gram" or loss_fn is None:  # a criterion that will be used: checked on two samples
            _check_criterion_call(model, criterion, data)
        if method == "gram":
            inputs, targets = data
            lin, loss_t = NormalSpaceSGD.from_model(model, criterion, inputs, targets, method=ntk_method,
                                                   max_bytes=max_jacobian_bytes, dtype=dtype)
            loss = float(loss_t)
            like = lin.factor.new_zeros(lin.dim)
            sharpness = _extreme(lin.hessian_matvec, lin.dim, like, "LA", generator)
            h_min = _extreme(lin.hessian_matvec, lin.dim, like, "SA", generator)
        else:
            def default_loss(m: nn.Module, batch: Any) -> torch.Tensor:
                return criterion(m(batch[0]), batch[1])

            lin, values, loss = _hvp_linearisation(model, loss_fn or default_loss, data,
                                                   hvp_directions, hvp_cutoff, generator)
            sharpness, h_min = values[0], values[-1]
        gd = gd_exponent(lr, [h_min, sharpness], momentum, nesterov)
        nonuniformity = mean_square = math.nan
        if isinstance(lin, NormalSpaceSGD) and not momentum:
            nonuniformity, mean_square = _wu_ma_e(lin, lr, batch_size, like, generator)
        if momentum:
            lin = MomentumSGD(lin, momentum, nesterov)
        grid = lr_grid(sharpness, num_lrs, momentum, nesterov)
        rows, errs = [], []
        here = None
        for b in sizes:
            lrs = torch.cat([torch.tensor([float(lr)], dtype=torch.float64), grid]) if b == batch_size else grid
            steps = num_steps if b == batch_size else max(20, diagram_steps or num_steps // 4)
            spec = _simulate(lin, lrs, b, sampling, drop_last, steps, k, generator, dtype)
            top, err = spec.exponents[..., 0].tolist(), spec.stderr[..., 0].tolist()
            if b == batch_size:
                here = (top[0], err[0])
                top, err = top[1:], err[1:]
            rows.append(top)
            errs.append(err)
        current = rows[sizes.index(batch_size)]
        crit = _refined_critical_lr(lin, grid.tolist(), current, batch_size, sampling, drop_last, num_steps, k,
                                    generator, dtype, num=max(4, min(8, num_lrs // 2)))
    assert here is not None
    return SGDStability(
        lr=float(lr), batch_size=batch_size, exponent=here[0], stderr=here[1], gd_exponent=gd,
        sharpness=sharpness, nonuniformity=nonuniformity, mean_square=mean_square,
        critical_lr=crit, loss=loss, near_interpolation=loss <= interpolation_tol,
        dim=lin.dim, method=method, sampling=sampling, num_steps=num_steps, products=lin.products,
        diagram=StabilityDiagram(lrs=grid.tolist(), batch_sizes=sizes, exponents=rows, stderr=errs),
    )


def _refined_critical_lr(lin: Linearisation, lrs: list[float], exponents: list[float], batch_size: int,
                         sampling: Sampling, drop_last: bool, num_steps: int, k: int, generator: torch.Generator,
                         dtype: torch.dtype, num: int = 12) -> float:
    """The crossing on the coarse grid, then again on ``num`` points inside its bracket."""
    coarse = critical_lr(lrs, exponents)
    if math.isnan(coarse):
        return coarse
    i = max(j for j, v in enumerate(lrs) if v <= coarse)
    lo, hi = lrs[i], lrs[min(i + 1, len(lrs) - 1)]
    fine = torch.logspace(math.log10(lo), math.log10(hi), num, dtype=torch.float64)
    spec = _simulate(lin, fine, batch_size, sampling, drop_last, num_steps, k, generator, dtype)
    refined = critical_lr(fine.tolist(), spec.exponents[..., 0].tolist())
    return coarse if math.isnan(refined) else refined


def _wu_ma_e(lin: NormalSpaceSGD, lr: float, batch_size: int, like: torch.Tensor,
             generator: torch.Generator) -> tuple[float, float]:
    """Non-uniformity ``s`` and ``λ_max{(I−ηH)² + η²γΣ}``, ``γ = (n−B)/(B(n−1))`` (Wu, Ma & E 2018)."""
    n = lin.num_samples
    gamma = (n - batch_size) / (batch_size * (n - 1)) if n > 1 else 0.0

    def parts(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hc, m2c = lin.moments_matvec(c)
        return hc, lin.hessian_matvec(hc), m2c  # H c, H² c, (1/n) Σ H_i² c: four passes

    def sigma(c: torch.Tensor) -> torch.Tensor:
        _, h2c, m2c = parts(c)
        return m2c - h2c

    def second_moment_map(c: torch.Tensor) -> torch.Tensor:
        hc, h2c, m2c = parts(c)
        return c - 2 * lr * hc + lr**2 * ((1 - gamma) * h2c + gamma * m2c)

    s2 = _extreme(sigma, lin.dim, like, "LA", generator)
    return math.sqrt(max(s2, 0.0)), _extreme(second_moment_map, lin.dim, like, "LA", generator)
