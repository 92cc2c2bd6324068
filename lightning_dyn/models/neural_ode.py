"""Neural ODE layers on torchdiffeq: ``NeuralODE`` and ``AugmentedNeuralODE``.

``NeuralODE(f)`` maps ``z(t0) ↦ z(t1)`` along ``ż = f(t, z)`` (Chen et al., NeurIPS 2018), solved by
``torchdiffeq.odeint`` — or ``odeint_adjoint`` (O(1) memory, the adjoint ODE solved backwards) —
with what the solver did recorded in ``layer.stats``: function evaluations in the forward
(``nfe_forward``) and backward (``nfe_backward``) pass, accepted steps and rejected attempts. The
counts come from torchdiffeq's step callbacks and a counter in the wrapped field: plain Python
integers, no device→host sync. With backpropagation through the solver (``adjoint=False``) the
backward pass replays the recorded forward graph and evaluates the field no more:
``nfe_backward`` is 0.

``AugmentedNeuralODE`` (Dupont, Doucet & Teh, NeurIPS 2019) appends ``augment_dims`` zero
channels at ``t0`` and reads out after the flow. A scalar ODE flow is strictly increasing, so no
1-D neural ODE maps 1 ↦ −1 and −1 ↦ 1; one extra dimension suffices: ``ż = Az``,
``A = π[[0, −1], [1, 0]]``, gives ``exp(A) = −I`` (Dupont et al. 2019).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Optional, Sequence

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

FIXED_STEP = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8")


def _takes_time(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes ``(t, z)`` (else ``z``)."""
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params) >= 2


class _CountedField(nn.Module):
    """The user's field as torchdiffeq calls it, counting evaluations and solver steps."""

    def __init__(self, field: nn.Module, takes_time: bool) -> None:
        super().__init__()
        self.field, self.takes_time = field, takes_time
        self.reset()

    def reset(self) -> None:
        self.nfe = self.steps = self.accepted = self.rejected = 0
        self.steps_adjoint = self.accepted_adjoint = self.rejected_adjoint = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.field(t, z) if self.takes_time else self.field(z)

    # torchdiffeq's solver callbacks (t0, y0, dt): steps of fixed-grid solvers, attempts of adaptive ones
    def callback_step(self, t0, y0, dt) -> None:
        self.steps += 1

    def callback_step_adjoint(self, t0, y0, dt) -> None:
        self.steps_adjoint += 1


class _AdaptiveCountedField(_CountedField):
    """Adaptive solvers also report accepted and rejected attempts (fixed-grid ones would warn)."""

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.rejected += 1

    def callback_accept_step_adjoint(self, t0, y0, dt) -> None:
        self.accepted_adjoint += 1

    def callback_reject_step_adjoint(self, t0, y0, dt) -> None:
        self.rejected_adjoint += 1


class NeuralODE(nn.Module):
    """``z(t0) ↦ z(t1)`` along ``ż = f(t, z)``, solved by torchdiffeq.

    Args:
        vector_field: any ``nn.Module`` taking ``(t, z)`` or ``z`` and returning ``ż`` (same shape as ``z``).
        t_span: ``(t0, t1)``; ``t1 < t0`` integrates backwards.
        solver: a torchdiffeq method: fixed-step ``"euler"``, ``"midpoint"``, ``"rk4"``, … (need
            ``step_size``) or adaptive ``"dopri5"``, ``"bosh3"``, ``"adaptive_heun"``, ….
        rtol, atol: tolerances of adaptive solvers.
        step_size: step of fixed-step solvers.
        adjoint: gradients by the adjoint method (``odeint_adjoint``; O(1) memory in time) instead
            of backpropagation through the solver.
        return_trajectory: return the states at ``t_eval`` (or ``t_span``), shape ``(time, batch, …)``.
        t_eval: default times for ``return_trajectory``.
        max_steps: at most this many steps per solve; an adaptive solve that needs more raises
            (usually stiffness, or a tolerance tighter than the field allows).
    """

    def __init__(self, vector_field: nn.Module, *, t_span: tuple[float, float] = (0.0, 1.0), solver: str = "dopri5",
                 rtol: float = 1e-5, atol: float = 1e-6, step_size: Optional[float] = None, adjoint: bool = False,
                 return_trajectory: bool = False, t_eval: Optional[Sequence[float]] = None,
                 max_steps: int = 10_000) -> None:
        super().__init__()
        if not isinstance(vector_field, nn.Module):
            raise TypeError(f"vector_field must be an nn.Module, got {type(vector_field).__name__}")
        if solver not in FIXED_STEP + ADAPTIVE:
            raise ValueError(f"solver must be one of {FIXED_STEP + ADAPTIVE}, got {solver!r}")
        if solver in FIXED_STEP and step_size is None:
            raise ValueError(f"solver={solver!r} is fixed-step: pass step_size")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size!r}")
        if len(t_span) != 2 or t_span[0] == t_span[1]:
            raise ValueError(f"t_span must be (t0, t1) with t0 != t1, got {t_span!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol!r}, atol={atol!r}")
        if not (isinstance(max_steps, int) and max_steps > 0):
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        counted = _AdaptiveCountedField if solver in ADAPTIVE else _CountedField
        self.func = counted(vector_field, _takes_time(vector_field))
        self.t_span = (float(t_span[0]), float(t_span[1]))
        self.solver, self.rtol, self.atol, self.step_size = solver, rtol, atol, step_size
        self.adjoint, self.return_trajectory, self.max_steps = adjoint, return_trajectory, max_steps
        self.t_eval = None if t_eval is None else [float(t) for t in t_eval]
        self._forward_counts = (0, 0, 0, 0)

    @property
    def vector_field(self) -> nn.Module:
        return self.func.field

    def _options(self) -> dict:
        if self.solver in ADAPTIVE:
            return {"max_num_steps": self.max_steps}
        if self.step_size is None:
            return {}
        steps = abs(self.t_span[1] - self.t_span[0]) / self.step_size
        if steps > self.max_steps:
            raise ValueError(f"step_size={self.step_size} needs {steps:.0f} steps over t_span={self.t_span}, more than "
                             f"max_steps={self.max_steps}")
        return {"step_size": self.step_size}

    def forward(self, z0: torch.Tensor, t_eval: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
        """The state at ``t1`` (shape of ``z0``), or at each of ``t_eval`` (``(time, *z0.shape)``)."""
        times = t_eval if t_eval is not None else self.t_eval
        trajectory = times is not None or self.return_trajectory
        if times is None:
            times = self.t_span
        t = torch.as_tensor(times, dtype=z0.dtype if z0.is_floating_point() else torch.float32, device=z0.device)
        self.func.reset()
        solve = odeint_adjoint if self.adjoint else odeint
        kwargs = {"adjoint_params": tuple(self.func.parameters())} if self.adjoint else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Solver .* does not support callbacks")
            try:
                out = solve(self.func, z0, t, rtol=self.rtol, atol=self.atol, method=self.solver,
                            options=self._options(), **kwargs)
            except AssertionError as err:
                raise self._solver_error(err) from err
        f = self.func
        self._forward_counts = (f.nfe, f.steps, f.accepted, f.rejected)
        return out if trajectory else out[-1]

    def _solver_error(self, err: AssertionError) -> Exception:
        text = str(err)
        if "max_num_steps" in text:
            return RuntimeError(
                f"{self.solver} needed more than max_steps={self.max_steps} steps on t_span={self.t_span} at "
                f"rtol={self.rtol}, atol={self.atol}: the field is stiff there, or the tolerance is tighter than it "
                "allows — loosen rtol/atol, use a fixed-step solver, or raise max_steps")
        if "non-finite" in text:
            return FloatingPointError(f"the state became non-finite during the {self.solver} solve on t_span={self.t_span}")
        if "underflow in dt" in text:
            return RuntimeError(f"{self.solver}'s step size underflowed on t_span={self.t_span} (rtol={self.rtol}, "
                                f"atol={self.atol}): the solution blows up or the field is very stiff")
        return err

    @property
    def stats(self) -> dict[str, int]:
        """What the solver did in the last forward pass, and in the backward pass since."""
        f = self.func
        nfe, steps, accepted, rejected = self._forward_counts
        adaptive = self.solver in ADAPTIVE
        return {
            "nfe_forward": nfe,
            "nfe_backward": f.nfe - nfe,
            "steps_forward": accepted if adaptive else steps,
            "rejected_forward": rejected,
            "steps_backward": f.accepted_adjoint if adaptive else f.steps_adjoint,
            "rejected_backward": f.rejected_adjoint,
        }


class AugmentedNeuralODE(NeuralODE):
    """A :class:`NeuralODE` on the input with ``augment_dims`` zero channels appended, then a readout.

    Args:
        vector_field: the field on the augmented state (``dim + augment_dims`` along ``channel_dim``).
        augment_dims: zero channels appended at ``t0``.
        readout: module applied to the final augmented state; default: the first ``dim`` channels
            (the input's own coordinates).
        channel_dim: the dimension augmented: ``-1`` for vectors, ``1`` for images ``(N, C, H, W)``.
        **kwargs: as :class:`NeuralODE`.
    """

    def __init__(self, vector_field: nn.Module, augment_dims: int, *, readout: Optional[nn.Module] = None,
                 channel_dim: int = -1, **kwargs) -> None:
        super().__init__(vector_field, **kwargs)
        if not (isinstance(augment_dims, int) and augment_dims >= 0):
            raise ValueError(f"augment_dims must be an integer >= 0, got {augment_dims!r}")
        self.augment_dims, self.readout, self.channel_dim = augment_dims, readout, channel_dim

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        shape = list(x.shape)
        shape[self.channel_dim] = self.augment_dims
        return torch.cat([x, x.new_zeros(shape)], dim=self.channel_dim)

    def forward(self, x: torch.Tensor, t_eval: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
        dim = x.shape[self.channel_dim]
        z = super().forward(self.augment(x), t_eval)
        if self.readout is not None:
            return self.readout(z)
        channel = self.channel_dim if self.channel_dim < 0 else self.channel_dim + (z.dim() - x.dim())
        return z.narrow(channel, 0, dim)
