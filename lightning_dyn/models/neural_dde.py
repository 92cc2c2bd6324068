"""Neural delay differential equations: the ``NeuralDDE`` layer.

``ẏ(t) = f(t, y(t), [y(t − τ_1), …, y(t − τ_m)])`` on ``[t0, t1]`` with ``y(t) = φ(t)`` for
``t < t0`` and ``y(t0) = y0`` (Kuehn & Kuntz, arXiv:2505.07244: a delay gives a scalar network the
memory an ODE lacks; its capacity grows with ``K·τ``, ``K`` the field's Lipschitz constant).

The layer holds the field, the delays (fixed buffers or learnable parameters) and the history; the
solve is :func:`lightning_dyn.dde.solve_dde` (method of steps: breakpoint mesh, explicit
Runge–Kutta, cubic Hermite dense output, gradients by backpropagation through the steps — exact
for the discrete solution, also with respect to the delays).

Why no adjoint: the adjoint of a DDE is an *advanced* equation backwards in time that needs
``y(t − τ)`` and the adjoint at ``t + τ``, so the forward trajectory must be stored or recomputed
anyway, and the delay gradient needs the jump terms at every breakpoint. For the sizes neural
DDEs are used at, backpropagation through the ``O(steps)`` graph costs less memory than that
machinery and is exact for what was computed.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..dde.interpolation import History, as_history
from ..dde.solver import check_delays, check_settings, solve_dde
from ..dde.tableaus import tableau


class NeuralDDE(nn.Module):
    """``y0 ↦ y(t1)`` for ``ẏ = f(t, y(t), [y(t − τ_i)])``, solved by the method of steps.

    Args:
        vector_field: ``nn.Module`` called as ``f(t, y, y_delayed)`` with ``y_delayed`` a list of
            ``y(t − τ_i)``, one per delay, each shaped like ``y``.
        delays: positive delays; floats are fixed, ``nn.Parameter`` scalars are learned.
        history: ``y`` for ``t < t0``: ``None`` — the constant ``y0`` (the usual neural DDE layer);
            a constant (number or tensor broadcastable to ``y0``); a callable ``φ(t)`` of a 0-dim
            tensor; or samples ``(times, values)`` with ``values[k]`` shaped like ``y0``.
        t_span: ``(t0, t1)``, ``t1 > t0``.
        solver: ``"rk4"`` (default), ``"midpoint"`` or ``"euler"`` (``lightning_dyn.dde.TABLEAUS``).
        step_size: the uniform step (the mesh adds the breakpoints).
        corrector_iterations: fixed-point iterations of a step that needs its own dense output
            (a delay shorter than the step).
        max_steps: refuse meshes with more steps.

    ``stats`` holds ``nfe_forward``, ``steps_forward`` and ``implicit_steps`` of the last solve.
    """

    def __init__(self, vector_field: nn.Module, delays: Sequence[Union[float, torch.Tensor]], *,
                 history: History = None, t_span: tuple[float, float] = (0.0, 1.0), solver: str = "rk4",
                 step_size: float = 0.05, corrector_iterations: int = 2, max_steps: int = 100_000) -> None:
        super().__init__()
        if not isinstance(vector_field, nn.Module):
            raise TypeError(f"vector_field must be an nn.Module, got {type(vector_field).__name__}")
        tableau(solver)
        check_settings(t_span, step_size, corrector_iterations)
        check_delays([float(d.detach()) if isinstance(d, torch.Tensor) else float(d) for d in delays])
        self.vector_field = vector_field
        self._delay_names = []
        for i, d in enumerate(delays):
            name = f"delay_{i}"
            if isinstance(d, nn.Parameter):
                self.register_parameter(name, d)
            else:
                self.register_buffer(name, torch.as_tensor(float(d), dtype=torch.float64))
            self._delay_names.append(name)
        if isinstance(history, torch.Tensor):
            self.register_buffer("history", history)  # moves with the layer (.to, .cuda)
        else:  # an nn.Module history registers itself: its parameters train with the layer
            self.history = as_history(history)
        self.t_span = (float(t_span[0]), float(t_span[1]))
        self.solver, self.step_size = solver, float(step_size)
        self.corrector_iterations, self.max_steps = corrector_iterations, max_steps
        self.stats = {"nfe_forward": 0, "steps_forward": 0, "implicit_steps": 0}

    @property
    def delays(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self._delay_names]

    def forward(self, y0: torch.Tensor, t_eval: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
        """The state at ``t1`` (shape of ``y0``), or at each of ``t_eval`` (``(time, *y0.shape)``)."""
        solution = solve_dde(self.vector_field, y0, self.delays, t_span=self.t_span, history=self.history,
                             solver=self.solver, step_size=self.step_size,
                             corrector_iterations=self.corrector_iterations, max_steps=self.max_steps)
        self.stats = {"nfe_forward": solution.nfe, "steps_forward": solution.steps,
                      "implicit_steps": solution.implicit_steps}
        return solution.value if t_eval is None else solution.at(t_eval)
