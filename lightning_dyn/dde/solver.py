"""The method of steps for ``ẏ(t) = f(t, y(t), [y(t − τ_1), …, y(t − τ_k)])``: ``solve_dde`` and ``ddeint``.

On ``[t0, t1]`` with ``y(t) = φ(t)`` for ``t < t0`` and ``y(t0) = y0`` (Bellen & Zennaro,
*Numerical Methods for Delay Differential Equations*, 2003):

- **Mesh**: uniform steps plus the breakpoints (``mesh.py``), built from the delay tensors so they
  move with a learnable ``τ``.
- **Steps**: an explicit Runge–Kutta tableau (``tableaus.py``); a lookup ``y(s − τ)`` reads the
  history before ``t0`` and the cubic Hermite dense output (``interpolation.py``) of the interval
  holding ``s − τ`` after it, so delays need not be multiples of the step. The node derivative is
  the first stage of the step (FSAL).
- **Delays shorter than a step**: a stage then needs ``y`` inside the step being taken; such steps
  are solved by fixed-point iteration on their own dense output (``corrector_iterations``).
- **Gradients** by backpropagation through the steps, exact for the discrete solution, with
  respect to ``y0``, ``f``'s parameters, a callable history's parameters and the delays (through
  every lookup time and every breakpoint).
- **Cost**: the mesh and the interval of each lookup are planned on the host once per solve (one
  device→host transfer of the delays); the steps run without host syncs.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from .interpolation import History, as_history, check_history, hermite, history_value
from .mesh import breakpoint_mesh
from .tableaus import tableau

VectorField = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]


def check_delays(values: Sequence[float]) -> None:
    """A ``ValueError`` naming every delay that is not a finite positive number (or none at all)."""
    if len(values) == 0:
        raise ValueError("delays is empty: pass at least one delay (an ODE has none; use NeuralODE or odeint)")
    bad = [(i, v) for i, v in enumerate(values) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError("delays must be > 0: " + ", ".join(f"delays[{i}] = {v}" for i, v in bad))


def check_settings(t_span: tuple[float, float], step_size: float, corrector_iterations: int) -> None:
    """A ``ValueError`` naming the first of the solver's settings that is out of range."""
    if not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if len(t_span) != 2 or not t_span[1] > t_span[0]:
        raise ValueError(f"t_span must be (t0, t1) with t1 > t0 (a DDE is solved forwards), got {t_span!r}")
    if not (isinstance(corrector_iterations, int) and corrector_iterations >= 1):
        raise ValueError(f"corrector_iterations must be an integer >= 1, got {corrector_iterations!r}")


@dataclass
class DDESolution:
    """The discrete solution: node times (tensors and host floats), values ``ys``, derivatives ``fs``.

    ``value`` is ``y(t1)``; ``at(t)`` the dense output (cubic Hermite) at times in ``t_span``;
    ``nfe``, ``steps`` and ``implicit_steps`` count field evaluations, mesh steps and steps
    solved by fixed-point iteration."""

    times: list[torch.Tensor]
    host: list[float]
    ys: list[torch.Tensor]
    fs: list[torch.Tensor]
    nfe: int
    implicit_steps: int

    @property
    def value(self) -> torch.Tensor:
        return self.ys[-1]

    @property
    def steps(self) -> int:
        return len(self.host) - 1

    def at(self, t_eval: Union[Sequence[float], torch.Tensor]) -> torch.Tensor:
        """States at ``t_eval``, shaped ``(len(t_eval), *y0.shape)``."""
        y = self.ys[0]
        ts = torch.as_tensor(t_eval, dtype=y.dtype, device=y.device).reshape(-1)
        return torch.stack([self._dense(t) for t in ts])

    def _dense(self, t: torch.Tensor) -> torch.Tensor:
        t_host, host = float(t), self.host
        if not host[0] - 1e-12 <= t_host <= host[-1] + 1e-12:
            raise ValueError(f"t_eval value {t_host} lies outside t_span=({host[0]}, {host[-1]})")
        k = min(bisect.bisect_right(host, t_host) - 1, len(host) - 2)
        return hermite(t, self.times[k], self.times[k + 1], self.ys[k], self.ys[k + 1], self.fs[k], self.fs[k + 1])


def solve_dde(func: VectorField, y0: torch.Tensor, delays: Sequence[Union[float, torch.Tensor]], *,
              t_span: tuple[float, float] = (0.0, 1.0), history: History = None, solver: str = "rk4",
              step_size: float = 0.05, corrector_iterations: int = 2, max_steps: int = 100_000) -> DDESolution:
    """Solve ``ẏ = func(t, y(t), [y(t − τ_i)])`` on ``t_span`` by the method of steps.

    Args:
        func: called as ``func(t, y, y_delayed)`` with ``t`` a 0-dim tensor and ``y_delayed`` a list
            holding ``y(t − τ_i)`` for each delay, each shaped like ``y``.
        y0: the state at ``t0``.
        delays: positive delays (floats, or 0-dim tensors — a tensor that requires grad is learned
            through the solve).
        t_span: ``(t0, t1)`` with ``t1 > t0``.
        history: ``y`` for ``t < t0``: ``None`` — the constant ``y0``; a constant (number or
            tensor broadcastable to ``y0``); a callable ``φ(t)`` of a 0-dim tensor; or samples
            ``(times, values)`` interpolated by cubic Hermite.
        solver: a name in ``TABLEAUS`` (``"rk4"``, ``"midpoint"``, ``"euler"``).
        step_size: the uniform step (the mesh adds the breakpoints).
        corrector_iterations: fixed-point iterations of a step that needs its own dense output.
        max_steps: refuse meshes with more steps.

    Raises ``FloatingPointError`` naming the time where the state became non-finite.
    """
    check_settings(t_span, step_size, corrector_iterations)
    c, a, b, order = tableau(solver)
    delays = [torch.as_tensor(d).to(device=y0.device, dtype=y0.dtype) for d in delays]
    taus = torch.stack([d.detach() for d in delays]).tolist() if delays else []  # the one host transfer
    check_delays(taus)
    history = as_history(history)
    t_span = (float(t_span[0]), float(t_span[1]))
    check_history(history, y0, t_span[0], max(taus))
    nodes = breakpoint_mesh(t_span, taus, float(step_size), order, max_steps)
    t0 = torch.as_tensor(t_span[0], dtype=y0.dtype, device=y0.device)
    times = [t0 + sum(m * d for m, d in zip(ms, delays)) if ms else torch.as_tensor(v, dtype=y0.dtype, device=y0.device)
             for v, ms in nodes]
    host = [v for v, _ in nodes]
    ys, fs = [y0], []
    nfe = implicit = 0

    def delayed(T: torch.Tensor, T_host: float, current: Optional[tuple], mid: float) -> list[torch.Tensor]:
        """``y(T − τ_i)`` for a stage of the step whose midpoint is ``mid``: the history if the
        step's lookups ``[t_n − τ, t_n+1 − τ]`` lie before t0 (decided at the midpoint, so a lookup
        landing exactly on t0 from the left takes the history's value, not y0), else the dense
        output of the interval holding it; ``current = (y_n, f_n, y_n+1, f_n+1)`` is the step
        being taken."""
        n = len(ys) - 1
        out = []
        for tau, tau_host in zip(delays, taus):
            s, s_host = T - tau, T_host - tau_host
            if mid - tau_host < host[0]:
                out.append(history_value(history, s, s_host, y0))
                continue
            k = min(max(bisect.bisect_right(host, s_host) - 1, 0), len(host) - 2)
            if k >= n:  # inside the step being taken (or at its start, where only y_n, f_n count)
                ya, fa, yb, fb = current if current is not None else (ys[n], fs[n], ys[n], fs[n])
                out.append(hermite(s, times[n], times[n + 1], ya, yb, fa, fb))
            else:  # fs[k+1] is missing only when s sits on node k, where its weight and slope vanish
                fb = fs[k + 1] if k + 1 < len(fs) else fs[k]
                out.append(hermite(s, times[k], times[k + 1], ys[k], ys[k + 1], fs[k], fb))
        return out

    def stages(tn, hn, tn_host, hn_host, yn, fn, current, mid) -> torch.Tensor:
        ks = [fn]
        for j in range(1, len(c)):
            Yj = yn + hn * sum(aj * kj for aj, kj in zip(a[j], ks) if aj)
            ks.append(func(tn + c[j] * hn, Yj, delayed(tn + c[j] * hn, tn_host + c[j] * hn_host, current, mid)))
        return yn + hn * sum(bj * kj for bj, kj in zip(b, ks) if bj)

    for n in range(len(nodes) - 1):
        tn, hn = times[n], times[n + 1] - times[n]
        tn_host, hn_host = host[n], host[n + 1] - host[n]
        yn = ys[n]
        mid = tn_host + hn_host / 2
        if len(fs) == n:  # the node derivative = the first stage (FSAL)
            fs.append(func(tn, yn, delayed(tn, tn_host, None, mid)))
            nfe += 1
        fn = fs[n]
        if min(taus) >= hn_host:  # every lookup falls in completed intervals
            ys.append(stages(tn, hn, tn_host, hn_host, yn, fn, None, mid))
            nfe += len(c) - 1
            continue
        implicit += 1  # a delay shorter than the step: iterate on the step's own dense output
        current = (yn, fn, yn + hn * fn, fn)
        for _ in range(corrector_iterations + 1):
            y_next = stages(tn, hn, tn_host, hn_host, yn, fn, current, mid)
            f_next = func(times[n + 1], y_next, delayed(times[n + 1], host[n + 1], (yn, fn, y_next, current[3]), mid))
            current = (yn, fn, y_next, f_next)
            nfe += len(c)
        ys.append(current[2])
        fs.append(current[3])
    if len(fs) < len(ys):  # the derivative at t1, for dense output on the last interval
        fs.append(func(times[-1], ys[-1], delayed(times[-1], host[-1], None, (host[-2] + host[-1]) / 2)))
        nfe += 1
    if not bool(torch.isfinite(ys[-1]).all()):
        bad = next(i for i, y in enumerate(ys) if not bool(torch.isfinite(y).all()))
        raise FloatingPointError(f"the DDE state became non-finite at t = {host[bad]:.6g} "
                                 f"(solver={solver!r}, step_size={step_size})")
    return DDESolution(times, host, ys, fs, nfe, implicit)


def ddeint(func: VectorField, y0: torch.Tensor, delays: Sequence[Union[float, torch.Tensor]], *,
           t_span: tuple[float, float] = (0.0, 1.0), t_eval: Optional[Union[Sequence[float], torch.Tensor]] = None,
           **options) -> torch.Tensor:
    """``y(t1)`` (shaped like ``y0``), or the states at ``t_eval`` (``(len(t_eval), *y0.shape)``).

    The functional form of :func:`solve_dde` (same arguments in ``options``: ``history``,
    ``solver``, ``step_size``, ``corrector_iterations``, ``max_steps``), as ``torchdiffeq.odeint``
    is for ODEs.
    """
    solution = solve_dde(func, y0, delays, t_span=t_span, **options)
    return solution.value if t_eval is None else solution.at(t_eval)
