"""The central flow of gradient descent at the edge of stability.

Gradient descent ``w ← w − η∇L(w)`` at the edge of stability oscillates along the top Hessian
eigenvectors while its sharpness hovers at ``2/η``. Cohen, Damian, Talwalkar, Kolter & Lee
("Understanding optimization in deep learning with central flows", arXiv:2410.24206, 2024) show
that the *time-averaged* trajectory follows a differential equation, the central flow::

    dw/dt = −η [ ∇L(w) + ½ ∇_w⟨Σ(t), ∇²L(w)⟩ ],     t in steps of gradient descent

where ``Σ`` is the covariance of the oscillation. Below the edge ``Σ = 0`` and this is gradient
flow. At the edge ``Σ = U X Uᵀ`` lives on the eigenvectors ``U`` whose eigenvalues are at ``2/η``,
and ``X`` is the one covariance that keeps them there: the semidefinite complementarity problem
of :mod:`lightning_dyn.dynamics.complementarity` (``X ⪰ 0``, the curvature's rate of rise ``⪯ 0``,
and only held directions oscillate). With one direction ``u`` and ``S = λ_max``::

    σ² = max(0, −2⟨∇S, ∇L⟩ / ‖∇S‖²),   dw/dt = −η [∇L + ½ σ² ∇S],   ∇S = ∇_w(uᵀ∇²L(w)u)

— the term ``½σ²∇S`` is an implicit penalty on sharpness (the implicit bias of large steps). The
oscillation also raises the loss gradient descent shows: averaged over time it is the flow's loss
plus the oscillation's share, ``L̄ = L(w) + ½⟨Σ, ∇²L⟩ = L(w) + tr(X)/η``.

Here the flow is integrated numerically for any loss of a flat parameter vector (:func:`module_loss`
makes one from a ``torch.nn.Module``): ``∇L`` by autograd, the top ``k`` eigenpairs by the warm
eigensolver of :mod:`lightning_dyn.curvature` (products by double backward), and ``G_ij =
∇_w(u_iᵀ∇²L(w)u_j)`` — third derivatives along the eigenvectors — by reverse mode over the gradient's graph.
Time steps are Heun's (or Euler's); discretisation drifts the held eigenvalues off ``2/η``, so the
complementarity problem asks them to relax back at rate ``stabilization`` per step
(``dM/dt = −κ(M − 2/η)``, Baumgarte's stabilisation of a constraint; ``κ = 0`` is the bare flow).
An eigenvalue is held once it is within ``active_tol`` (relative) of ``2/η``.

When to trust it: the central flow describes gradient descent whose oscillation is small enough
for the cubic Taylor expansion behind it; the paper finds it tracks deterministic full-batch
training of small and mid-sized networks closely over long horizons, and with squared loss best.
It says nothing about mini-batch SGD (see ``EdgeOfStability``'s batch sharpness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..curvature.eigen import EigenResult, top_eigenpairs
from ..curvature.operator import MatrixFreeOperator
from .complementarity import solve_complementarity

FlatLoss = Callable[[torch.Tensor], torch.Tensor]


def module_loss(module: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any, *,
                dtype: torch.dtype = torch.float64) -> tuple[FlatLoss, torch.Tensor]:
    """``L(w)`` of ``module``'s trainable parameters as one flat vector, and the current ``w``.

    ``loss_fn(module, batch)`` is evaluated with the parameters substituted
    (``torch.func.functional_call``); the module's own tensors are never changed. ``dtype``:
    float64 by default (third derivatives in float32 are noisy).
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    frozen = {n: p.detach().to(dtype) for n, p in module.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach().to(dtype) if b.is_floating_point() else b for n, b in module.named_buffers()}
    cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
    batch = tuple(cast(t) for t in batch) if isinstance(batch, (tuple, list)) else cast(batch)
    w0 = torch.cat([p.detach().reshape(-1).to(dtype) for _, p in named])

    class _Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, b: Any) -> torch.Tensor:
            return loss_fn(self.model, b)

    wrapper = _Call()

    def loss(w: torch.Tensor) -> torch.Tensor:
        tensors = {"model." + n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes)}
        tensors.update({"model." + n: t for n, t in {**frozen, **buffers}.items()})
        return functional_call(wrapper, tensors, (batch,)).reshape(())

    return loss, w0


class _Derivatives:
    """``L``, ``∇L`` with its graph at one point; ``∇²L v`` and ``∇_w(uᵀ∇²L v)`` from it (reverse mode)."""

    def __init__(self, loss: FlatLoss, w: torch.Tensor) -> None:
        self.w = w.detach().requires_grad_(True)
        with torch.enable_grad():
            self.loss = loss(self.w)
            (self.gradient,) = torch.autograd.grad(self.loss, self.w, create_graph=True)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """``∇²L(w) v``."""
        (hv,) = torch.autograd.grad(self.gradient, self.w, v, retain_graph=True)
        return hv

    def curvature_gradient(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``∇_w(uᵀ∇²L(w)v)`` with ``u``, ``v`` held fixed — a third derivative along them."""
        with torch.enable_grad():
            (hu,) = torch.autograd.grad(self.gradient, self.w, u, create_graph=True)
            (third,) = torch.autograd.grad(hu, self.w, v, retain_graph=True)
        return third.detach()


@dataclass
class FlowPoint:
    """The central flow at one time.

    Attributes:
        t: time, in steps of gradient descent.
        loss: ``L(w(t))``, the loss on the flow.
        time_averaged_loss: ``L + ½⟨Σ, ∇²L⟩``, the loss gradient descent shows averaged over its
            oscillation.
        sharpness: ``λ_max(∇²L(w(t)))``.
        eigenvalues: the top ``k`` eigenvalues.
        covariance: the eigenvalues of ``X`` (the oscillation's variance along each held direction).
        held: how many eigenvalues are held at ``2/η``.
        gradient_norm: ``‖∇L‖``.
        directions: the held eigenvectors ``U`` (columns; ``None`` when none is held).
    """

    t: float
    loss: float
    time_averaged_loss: float
    sharpness: float
    eigenvalues: list[float]
    covariance: list[float] = field(default_factory=list)
    held: int = 0
    gradient_norm: float = 0.0
    directions: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def sigma2(self) -> float:
        """``tr X``: the oscillation's total variance."""
        return float(sum(self.covariance))


class CentralFlow:
    """The central flow of gradient descent at learning rate ``lr`` (module docstring).

    Args:
        loss: ``L(w)`` of a flat parameter vector (:func:`module_loss`).
        w0: the starting point (the initial parameters gradient descent starts from).
        lr: gradient descent's learning rate ``η``; the threshold is ``2/η``.
        k: top eigenpairs tracked; at most ``k`` directions can be held at the edge (keep one more
            than you expect to be held, so the next one is seen coming).
        dt: time step, in steps of gradient descent.
        method: ``"heun"`` (second order, two evaluations a step) or ``"euler"``.
        active_tol: an eigenvalue within this relative distance of ``2/η`` (or above) is held.
        stabilization: ``κ``, the rate (per step) at which held eigenvalues relax back to ``2/η``.
        eig_tol: relative accuracy of the eigenvalues.
        seed: seed of the eigensolver's first random start.

    Attributes:
        w: the current point; ``t``: the current time.
    """

    def __init__(self, loss: FlatLoss, w0: torch.Tensor, lr: float, *, k: int = 2, dt: float = 0.25,
                 method: Literal["heun", "euler"] = "heun", active_tol: float = 1e-3, stabilization: float = 0.5,
                 eig_tol: float = 1e-7, max_matvecs: int = 200, seed: int = 0) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt}")
        if method not in ("heun", "euler"):
            raise ValueError(f"method must be 'heun' or 'euler', got {method!r}")
        if w0.dim() != 1:
            raise ValueError("w0 must be a flat parameter vector (module_loss makes one)")
        if not 1 <= k <= w0.numel():
            raise ValueError(f"k must be between 1 and the number of parameters {w0.numel()}, got {k}")
        self.loss, self.lr, self.k, self.dt, self.method = loss, float(lr), k, float(dt), method
        self.active_tol, self.stabilization = float(active_tol), float(stabilization)
        self.eig_tol, self.max_matvecs = eig_tol, max_matvecs
        self.w = w0.detach().clone()
        self.t = 0.0
        self.generator = torch.Generator().manual_seed(seed)
        self._eig: Optional[EigenResult | torch.Tensor] = None
        #: products (Hessian-vector) and third-derivative passes spent so far
        self.products = 0
        self.third_derivatives = 0

    @property
    def threshold(self) -> float:
        """``2/η``."""
        return 2.0 / self.lr

    def derivatives(self, w: torch.Tensor) -> "_Derivatives":
        """The loss, gradient, Hessian-vector products and third derivatives at ``w`` (one graph)."""
        return _Derivatives(self.loss, w)

    def eigenpairs(self, d: "_Derivatives") -> EigenResult:
        """The top ``k`` eigenpairs of ``∇²L(w)``, warm-started from the last ones."""
        op = MatrixFreeOperator(d.hvp, d.w.numel(), device=d.w.device, dtype=d.w.dtype)
        eig = top_eigenpairs(op, self.k, tol=self.eig_tol, max_matvecs=self.max_matvecs, init=self._eig,
                             generator=self.generator)
        self.products += eig.num_matvecs
        self._eig = eig
        return eig

    def velocity(self, w: torch.Tensor) -> tuple[torch.Tensor, FlowPoint]:
        """``dw/dt`` at ``w`` and the flow's state there."""
        d = self.derivatives(w)
        g, loss = d.gradient.detach(), float(d.loss.detach())
        eig = self.eigenpairs(d)
        values = eig.values.tolist()
        held = [i for i, v in enumerate(values) if v >= self.threshold * (1 - self.active_tol)]
        point = FlowPoint(self.t, loss, loss, values[0], values, [], len(held), float(g.norm()))
        if not held:
            return -self.lr * g, point
        U = eig.vectors[:, held].to(w.dtype)
        m = len(held)
        held_values = np.array([values[i] for i in held])
        # G[i, j] = ∇_w(u_iᵀ∇²L u_j), symmetric in (i, j)
        G = torch.empty(m, m, w.numel(), dtype=w.dtype, device=w.device)
        for i in range(m):
            for j in range(i, m):
                G[i, j] = G[j, i] = d.curvature_gradient(U[:, i], U[:, j])
                self.third_derivatives += 1
        A = torch.einsum("ijd,d->ij", G, g).cpu().double().numpy()
        # relax the held curvature back to the threshold: dM/dt = −κ (M − 2/η) (module docstring)
        A -= (self.stabilization / self.lr) * np.diag(held_values - self.threshold)
        K = 0.5 * torch.einsum("ijd,abd->ijab", G, G).cpu().double().numpy()
        X = solve_complementarity(A, K, cone="psd")
        drift = g + 0.5 * torch.einsum("ij,ijd->d", torch.as_tensor(X, dtype=w.dtype, device=w.device), G)
        point.covariance = np.clip(np.linalg.eigvalsh(X)[::-1], 0.0, None).tolist()
        point.directions = U
        point.time_averaged_loss = loss + 0.5 * float(np.sum(np.diag(X) * held_values))
        return -self.lr * drift, point

    def step(self) -> FlowPoint:
        """Advance by ``dt``; the state at the start of the step."""
        v0, point = self.velocity(self.w)
        if self.method == "euler":
            self.w = self.w + self.dt * v0
        else:
            v1, _ = self.velocity(self.w + self.dt * v0)
            self.w = self.w + 0.5 * self.dt * (v0 + v1)
        self.t += self.dt
        return point

    def run(self, until: float, *, every: float = 1.0,
            callback: Optional[Callable[[FlowPoint, torch.Tensor], None]] = None) -> list[FlowPoint]:
        """Integrate to time ``until`` (in steps); the state every ``every`` steps (and at ``until``).

        ``callback(point, w)`` is called with each recorded state and its parameters.
        """
        points: list[FlowPoint] = []
        next_record = self.t
        while self.t < until - 1e-9 * self.dt:
            record = self.t >= next_record - 1e-9 * self.dt
            w = self.w
            point = self.step()
            if record:
                points.append(point)
                if callback is not None:
                    callback(point, w)
                next_record += every
        _, last = self.velocity(self.w)
        points.append(last)
        if callback is not None:
            callback(last, self.w)
        return points

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "t": self.t, "generator": self.generator.get_state(),
                "eigenvectors": None if self._eig is None else
                (self._eig.warm_start if isinstance(self._eig, EigenResult) else self._eig).clone(),
                "products": self.products, "third_derivatives": self.third_derivatives}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w, self.t = state["w"].clone(), float(state["t"])
        self.generator.set_state(state["generator"])
        self._eig = state.get("eigenvectors")  # the saved vectors warm-start the next solve
        self.products, self.third_derivatives = state["products"], state["third_derivatives"]
