"""Neural delay differential equations: ``NeuralDDE`` and its fixed-step solver (method of steps).

``ẏ(t) = f(t, y(t), [y(t − τ_1), …, y(t − τ_m)])`` on ``[t0, t1]`` with ``y(t) = φ(t)`` for
``t < t0`` and ``y(t0) = y0`` (Kuehn & Kuntz, arXiv:2505.07244: a delay gives a scalar network the
memory an ODE lacks; its capacity grows with ``K·τ``, ``K`` the field's Lipschitz constant).

The solver (Bellen & Zennaro, *Numerical Methods for Delay Differential Equations*, 2003):

- **Mesh.** Uniform steps of ``step_size`` plus the *breakpoints* ``t0 + Σ_i m_i τ_i``
  (``1 ≤ Σ m_i ≤ p``, ``p`` the order): the derivative of ``y`` jumps at ``t0`` (history and
  solution meet) and the jump propagates to the ``m``-th derivative at the ``m``-th breakpoint, so
  a step across one loses the method's order. Uniform nodes within a tenth of a step of a
  breakpoint are dropped. Breakpoints are built from the delay tensors, so they move with a
  learnable ``τ``.
- **Dense output.** ``y(s)`` between mesh nodes is the cubic Hermite interpolant of the node values
  and derivatives (``O(h⁴)``, exact for the cubic pieces of the textbook solutions), so delays need
  not be multiples of the step. The node derivative is the first stage of the step (FSAL).
- **Delays smaller than a step.** A stage may then need ``y`` inside the step being taken: those
  steps are solved by fixed-point iteration on their own dense output (``corrector_iterations``).
- **Gradients** by backpropagation through the solver, exact for the discrete solution: with
  respect to ``y0``, the field's parameters, a callable history's parameters, and the delays —
  through every lookup time ``t − τ`` and every breakpoint — not finite differences.
- **Cost.** The mesh and the interval each lookup falls in are planned on the host once per
  forward pass (one device→host transfer of the delays); the steps run without host syncs.

Why no adjoint: the adjoint of a DDE is an *advanced* equation backwards in time that needs
``y(t − τ)`` and the adjoint at ``t + τ``, so the forward trajectory must be stored or recomputed
anyway, and the delay gradient needs the jump terms at every breakpoint. For the sizes neural
DDEs are used at, backpropagation through the ``O(steps)`` graph costs less memory than that
machinery and is exact for what was computed.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

#: Butcher tableaus (c, a, b) and orders of the explicit Runge–Kutta methods offered
TABLEAUS = {
    "euler": ([0.0], [[]], [1.0], 1),
    "midpoint": ([0.0, 0.5], [[], [0.5]], [0.0, 1.0], 2),
    "rk4": ([0.0, 0.5, 0.5, 1.0], [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], 4),
}

History = Union[None, float, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], tuple]


def hermite(s: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor,
            fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Cubic Hermite interpolant on ``[ta, tb]`` through ``(ya, fa)`` and ``(yb, fb)`` at ``s``."""
    h = tb - ta
    x = (s - ta) / h
    x2, x3 = x * x, x * x * x
    return (2 * x3 - 3 * x2 + 1) * ya + (x3 - 2 * x2 + x) * h * fa + (3 * x2 - 2 * x3) * yb + (x3 - x2) * h * fb


class _Trajectory:
    """A history given as samples ``(times, values)``: Hermite interpolation with finite-difference slopes."""

    def __init__(self, times: torch.Tensor, values: torch.Tensor) -> None:
        if times.dim() != 1 or len(times) < 2 or values.shape[0] != len(times):
            raise ValueError("history=(times, values) needs 1-D increasing times (≥ 2) and values with one row per time")
        self.times, self.values = times, values
        self.host = times.tolist()
        if any(b <= a for a, b in zip(self.host, self.host[1:])):
            raise ValueError("history times must be strictly increasing")
        dt = times[1:] - times[:-1]
        shape = (-1,) + (1,) * (values.dim() - 1)
        d = (values[1:] - values[:-1]) / dt.view(shape)
        self.slopes = torch.cat([d[:1], (d[1:] + d[:-1]) / 2, d[-1:]])

    def __call__(self, s: torch.Tensor, s_host: float) -> torch.Tensor:
        k = min(max(bisect.bisect_right(self.host, s_host) - 1, 0), len(self.host) - 2)
        return hermite(s, self.times[k], self.times[k + 1], self.values[k], self.values[k + 1],
                       self.slopes[k], self.slopes[k + 1])


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
        solver: ``"rk4"`` (default), ``"midpoint"`` or ``"euler"``.
        step_size: the uniform step (the mesh adds the breakpoints).
        corrector_iterations: fixed-point iterations of a step that needs its own dense output
            (a delay shorter than the step).
        max_steps: refuse meshes with more steps.
    """

    def __init__(self, vector_field: nn.Module, delays: Sequence[Union[float, torch.Tensor]], *,
                 history: History = None, t_span: tuple[float, float] = (0.0, 1.0), solver: str = "rk4",
                 step_size: float = 0.05, corrector_iterations: int = 2, max_steps: int = 100_000) -> None:
        super().__init__()
        if not isinstance(vector_field, nn.Module):
            raise TypeError(f"vector_field must be an nn.Module, got {type(vector_field).__name__}")
        if solver not in TABLEAUS:
            raise ValueError(f"solver must be one of {tuple(TABLEAUS)}, got {solver!r}")
        if len(delays) == 0:
            raise ValueError("delays is empty: pass at least one delay (an ODE has none; use NeuralODE)")
        if not (isinstance(step_size, (int, float)) and step_size > 0):
            raise ValueError(f"step_size must be > 0, got {step_size!r}")
        if len(t_span) != 2 or not t_span[1] > t_span[0]:
            raise ValueError(f"t_span must be (t0, t1) with t1 > t0 (a DDE is solved forwards), got {t_span!r}")
        if not (isinstance(corrector_iterations, int) and corrector_iterations >= 1):
            raise ValueError(f"corrector_iterations must be an integer >= 1, got {corrector_iterations!r}")
        self.vector_field = vector_field
        self._delay_names = []
        for i, d in enumerate(delays):
            name = f"delay_{i}"
            if isinstance(d, nn.Parameter):
                self.register_parameter(name, d)
            else:
                self.register_buffer(name, torch.as_tensor(float(d), dtype=torch.float64))
            self._delay_names.append(name)
        self._check_delays([float(d.detach()) for d in self.delays])
        if isinstance(history, torch.Tensor):
            self.register_buffer("history", history)  # moves with the layer (.to, .cuda)
        else:  # an nn.Module history registers itself: its parameters train with the layer
            self.history = _Trajectory(*history) if isinstance(history, tuple) else history
        self.t_span = (float(t_span[0]), float(t_span[1]))
        self.solver, self.step_size = solver, float(step_size)
        self.corrector_iterations, self.max_steps = corrector_iterations, max_steps
        self.stats = {"nfe_forward": 0, "steps_forward": 0, "implicit_steps": 0}

    @property
    def delays(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self._delay_names]

    @staticmethod
    def _check_delays(values: list[float]) -> None:
        bad = [(i, v) for i, v in enumerate(values) if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError("delays must be > 0: " + ", ".join(f"delays[{i}] = {v}" for i, v in bad))

    # -- planning (host, once per forward) ---------------------------------------------------------
    def _mesh(self, taus: list[float]) -> list[tuple[float, Optional[tuple[int, ...]]]]:
        """Mesh nodes as (value, delay multiplicities or None for a fixed node), sorted."""
        t0, t1 = self.t_span
        h = self.step_size
        order = TABLEAUS[self.solver][3]
        breaks: dict[float, tuple[int, ...]] = {}
        for total in range(1, order + 1):
            for ms in itertools.product(range(total + 1), repeat=len(taus)):
                if sum(ms) != total:
                    continue
                value = t0 + sum(m * tau for m, tau in zip(ms, taus))
                if value < t1 - 1e-12 * max(1.0, abs(t1)):
                    breaks.setdefault(round(value, 12), ms)
        count = math.ceil((t1 - t0) / h - 1e-9)
        if count + len(breaks) > self.max_steps:
            raise ValueError(f"step_size={h} on t_span={self.t_span} needs {count + len(breaks)} steps, more than "
                             f"max_steps={self.max_steps}")
        uniform = [t0 + k * h for k in range(1, count)]
        bvals = sorted(breaks)
        nodes: list[tuple[float, Optional[tuple[int, ...]]]] = [(t0, None), (t1, None)]
        nodes += [(v, breaks[v]) for v in bvals]
        nodes += [(u, None) for u in uniform
                  if not bvals or min(abs(u - b) for b in bvals[max(0, bisect.bisect_left(bvals, u) - 1):
                                                               bisect.bisect_left(bvals, u) + 1]) > 0.1 * h]
        return sorted(nodes, key=lambda n: n[0])

    # -- the solve -----------------------------------------------------------------------------------
    def forward(self, y0: torch.Tensor, t_eval: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
        """The state at ``t1`` (shape of ``y0``), or at each of ``t_eval`` (``(time, *y0.shape)``)."""
        delays = [d.to(y0.dtype) for d in self.delays]
        taus = torch.stack([d.detach() for d in delays]).tolist()  # the one host transfer per solve
        self._check_delays(taus)
        nodes = self._mesh(taus)
        t0 = torch.as_tensor(self.t_span[0], dtype=y0.dtype, device=y0.device)
        times = [t0 + sum(m * d for m, d in zip(ms, delays)) if ms else torch.as_tensor(v, dtype=y0.dtype, device=y0.device)
                 for v, ms in nodes]
        host = [v for v, _ in nodes]
        self._check_history(y0, t0, taus)
        c, a, b, _ = TABLEAUS[self.solver]
        ys, fs = [y0], []
        nfe = implicit = 0

        def delayed(T: torch.Tensor, T_host: float, current: Optional[tuple], mid: float) -> list[torch.Tensor]:
            """``y(T − τ_i)`` for a stage of the step whose midpoint is ``mid``: the history if the
            step's lookups ``[t_n − τ, t_n+1 − τ]`` lie before t0 (decided at the midpoint, so a
            lookup landing exactly on t0 from the left takes the history's value, not y0), else the
            dense output of the interval holding it; ``current = (y_n, f_n, y_n+1, f_n+1)`` is the
            step being taken."""
            n = len(ys) - 1
            out = []
            for tau, tau_host in zip(delays, taus):
                s, s_host = T - tau, T_host - tau_host
                if mid - tau_host < host[0]:
                    out.append(self._history(s, s_host, y0))
                    continue
                k = min(max(bisect.bisect_right(host, s_host) - 1, 0), len(host) - 2)
                if k >= n:  # inside the step being taken (or at its start, where only y_n, f_n count)
                    ya, fa, yb, fb = current if current is not None else (ys[n], fs[n], ys[n], fs[n])
                    out.append(hermite(s, times[n], times[n + 1], ya, yb, fa, fb))
                else:  # fs[k+1] is missing only when s sits on node k, where its weight and slope vanish
                    fb = fs[k + 1] if k + 1 < len(fs) else fs[k]
                    out.append(hermite(s, times[k], times[k + 1], ys[k], ys[k + 1], fs[k], fb))
            return out

        f = self.vector_field
        for n in range(len(nodes) - 1):
            tn, hn = times[n], times[n + 1] - times[n]
            tn_host, hn_host = host[n], host[n + 1] - host[n]
            yn = ys[n]
            mid = tn_host + hn_host / 2
            if len(fs) == n:  # the node derivative = the first stage (FSAL)
                fs.append(f(tn, yn, delayed(tn, tn_host, None, mid)))
                nfe += 1
            fn = fs[n]
            if min(taus) >= hn_host:  # every lookup falls in completed intervals
                ks = [fn]
                for j in range(1, len(c)):
                    Yj = yn + hn * sum(aj * kj for aj, kj in zip(a[j], ks) if aj)
                    ks.append(f(tn + c[j] * hn, Yj, delayed(tn + c[j] * hn, tn_host + c[j] * hn_host, None, mid)))
                nfe += len(c) - 1
                ys.append(yn + hn * sum(bj * kj for bj, kj in zip(b, ks) if bj))
                continue
            # a delay shorter than the step: iterate on the step's own dense output
            implicit += 1
            current = (yn, fn, yn + hn * fn, fn)
            for _ in range(self.corrector_iterations + 1):
                ks = [fn]
                for j in range(1, len(c)):
                    Yj = yn + hn * sum(aj * kj for aj, kj in zip(a[j], ks) if aj)
                    ks.append(f(tn + c[j] * hn, Yj, delayed(tn + c[j] * hn, tn_host + c[j] * hn_host, current, mid)))
                y_next = yn + hn * sum(bj * kj for bj, kj in zip(b, ks) if bj)
                f_next = f(times[n + 1], y_next, delayed(times[n + 1], host[n + 1], (yn, fn, y_next, current[3]), mid))
                current = (yn, fn, y_next, f_next)
                nfe += len(c)
            ys.append(current[2])
            fs.append(current[3])
        if len(fs) < len(ys):  # the derivative at t1, for dense output on the last interval
            fs.append(f(times[-1], ys[-1], delayed(times[-1], host[-1], None, (host[-2] + host[-1]) / 2)))
            nfe += 1
        self.stats = {"nfe_forward": nfe, "steps_forward": len(nodes) - 1, "implicit_steps": implicit}
        if not bool(torch.isfinite(ys[-1]).all()):
            bad = next(i for i, y in enumerate(ys) if not bool(torch.isfinite(y).all()))
            raise FloatingPointError(f"the NeuralDDE state became non-finite at t = {host[bad]:.6g} "
                                     f"(solver={self.solver!r}, step_size={self.step_size})")
        if t_eval is None:
            return ys[-1]
        return torch.stack([self._dense(t, times, host, ys, fs) for t in torch.as_tensor(t_eval, dtype=y0.dtype,
                                                                                        device=y0.device)])

    def _dense(self, t: torch.Tensor, times, host, ys, fs) -> torch.Tensor:
        t_host = float(t)
        if not host[0] - 1e-12 <= t_host <= host[-1] + 1e-12:
            raise ValueError(f"t_eval value {t_host} lies outside t_span={self.t_span}")
        k = min(bisect.bisect_right(host, t_host) - 1, len(host) - 2)
        return hermite(t, times[k], times[k + 1], ys[k], ys[k + 1], fs[k], fs[k + 1])

    def _history(self, s: torch.Tensor, s_host: float, y0: torch.Tensor) -> torch.Tensor:
        h = self.history
        if h is None:
            return y0
        if isinstance(h, _Trajectory):
            value = h(s, s_host)
        elif callable(h):
            value = h(s)
        else:
            value = torch.as_tensor(h, dtype=y0.dtype, device=y0.device)
        return value.to(y0.dtype).expand_as(y0) if value.shape != y0.shape else value

    def _check_history(self, y0: torch.Tensor, t0: torch.Tensor, taus: list[float]) -> None:
        if self.history is None:
            return
        probe_host = self.t_span[0] - max(taus)
        probe = t0 - max(taus)
        h = self.history
        value = h(probe, probe_host) if isinstance(h, _Trajectory) else h(probe) if callable(h) else torch.as_tensor(h)
        try:
            ok = torch.broadcast_shapes(tuple(value.shape), tuple(y0.shape)) == tuple(y0.shape)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"history gives shape {tuple(value.shape)} at t = {probe_host:.4g}, which does not match "
                             f"the state y0 of shape {tuple(y0.shape)}")
