"""Continuous-depth layers against their peers, side by side in one run (issue 4 targets).

1. ``NeuralODE`` vs calling ``torchdiffeq.odeint`` directly: the 64-256-64 tanh field, batch 4096,
   t ∈ [0, 1], dopri5 at rtol 1e-5 (and rk4 with 20 steps); same solver, tolerance and NFE; forward
   and forward+backward, interleaved repeats, medians; the ratio is the overhead of the layer.
2. ``NeuralDDE`` vs ``torchdde`` (``integrate`` with RK4, backpropagation through the solver) on
   y′ = −a·y(t−1) (history 1) and Mackey–Glass y′ = b·y(t−2)/(1 + y(t−2)^9.65) − y (history 0.5), to
   t = 20, for a range of step sizes: the error at t = 20 against a reference (ours at h = 1e-3,
   checked against torchdde at the same step) and the wall time of forward + backward (the gradient
   with respect to the field's parameter a or b). The speed-up at equal accuracy is read off the
   two error–time curves.

    python benchmarks/models.py            # CPU rows (2 cores here)
    python benchmarks/models.py --device cuda --only ode
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint

from lightning_dyn import NeuralDDE, NeuralODE


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


class Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 64))

    def forward(self, t, z):
        return self.net(z)


def bench_ode(device: str, repeats: int) -> None:
    torch.manual_seed(0)
    field = Field().to(device)
    z0 = torch.randn(4096, 64, device=device)
    t = torch.tensor([0.0, 1.0], device=device)
    for solver, kwargs in (("dopri5", {"rtol": 1e-5, "atol": 1e-5}), ("rk4", {"step_size": 0.05})):
        options = {"step_size": kwargs["step_size"]} if "step_size" in kwargs else {}
        tol = {k: v for k, v in kwargs.items() if k != "step_size"}
        layer = NeuralODE(field, solver=solver, **kwargs).to(device)
        calls = {"count": 0}

        def direct_field(tt, z):
            calls["count"] += 1
            return field(tt, z)

        runs = {
            "torchdiffeq": lambda: odeint(direct_field, z0, t, method=solver, options=options, **tol)[-1],
            "NeuralODE": lambda: layer(z0),
        }
        for mode in ("forward", "forward+backward"):
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(repeats):
                for name, run in runs.items():
                    if mode == "forward":
                        with torch.no_grad():
                            times[name].append(timed(run, device))
                    else:
                        times[name].append(timed(lambda: run().square().mean().backward(), device))
            med = {k: statistics.median(v) for k, v in times.items()}
            calls["count"] = 0
            with torch.no_grad():
                runs["torchdiffeq"]()
                runs["NeuralODE"]()
            print(f"ode {device} {solver:6s} {mode:17s} torchdiffeq {med['torchdiffeq'] * 1e3:8.1f} ms  NeuralODE "
                  f"{med['NeuralODE'] * 1e3:8.1f} ms  ratio {med['NeuralODE'] / med['torchdiffeq']:.3f}  "
                  f"NFE {calls['count']} vs {layer.stats['nfe_forward']}", flush=True)


class Delayed(nn.Module):
    """The two test problems with one learnable parameter each, in both libraries' signatures."""

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem
        self.p = nn.Parameter(torch.tensor(1.0 if problem == "linear" else 2.0, dtype=torch.float64))

    def rhs(self, y, yd):
        if self.problem == "linear":
            return -self.p * yd
        return self.p * yd / (1 + yd.abs() ** 9.65) - y

    def forward(self, t, y, delayed):  # NeuralDDE
        return self.rhs(y, delayed[0])


class TorchddeField(nn.Module):
    def __init__(self, inner: Delayed) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, t, y, args, *, history):
        return self.inner.rhs(y, history[0])


PROBLEMS = {"linear": (1.0, 1.0), "mackey_glass": (2.0, 0.5)}  # delay, history value


def ours(problem: str, h: float) -> tuple[float, float]:
    tau, hist = PROBLEMS[problem]
    field = Delayed(problem)
    layer = NeuralDDE(field, [tau], t_span=(0.0, 20.0), step_size=h, max_steps=10**6)
    y0 = torch.full((1, 1), hist, dtype=torch.float64)
    start = time.perf_counter()
    y = layer(y0)
    y.sum().backward()
    return y.item(), time.perf_counter() - start


def theirs(problem: str, h: float) -> tuple[float, float]:
    import torchdde

    tau, hist = PROBLEMS[problem]
    field = TorchddeField(Delayed(problem))
    f64 = dict(dtype=torch.float64)
    start = time.perf_counter()
    ys = torchdde.integrate(field, torchdde.RK4(), torch.tensor(0.0, **f64), torch.tensor(20.0, **f64),
                            torch.linspace(0.0, 20.0, 2, **f64), lambda t: torch.full((1, 1), hist, **f64), None,
                            dt0=torch.tensor(h, **f64), delays=torch.tensor([tau], **f64),
                            discretize_then_optimize=True, max_steps=10**6)
    y = ys[0, -1]
    y.sum().backward()
    return y.item(), time.perf_counter() - start


def speedup_at_equal_accuracy(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """For errors both curves reach: time_b(err) / time_a(err), interpolated in log–log."""
    def curve(points):
        pts = sorted((math.log(e), math.log(t)) for e, t in points if e > 0)
        return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])

    ea, ta = curve(a)
    eb, tb = curve(b)
    lo, hi = max(ea.min(), eb.min()), min(ea.max(), eb.max())
    if lo > hi:
        return []
    out = []
    for le in np.linspace(lo, hi, 4):
        out.append((math.exp(le), math.exp(np.interp(le, eb, tb) - np.interp(le, ea, ta))))
    return out


def bench_dde(steps: list[float]) -> None:
    torch.set_num_threads(torch.get_num_threads())
    for problem in PROBLEMS:
        ref, _ = ours(problem, 1e-3)
        check, _ = theirs(problem, 1e-3) if problem == "linear" else (math.nan, 0)
        print(f"dde {problem}: reference y(20) = {ref:.12g} (NeuralDDE, h = 1e-3)"
              + (f"; torchdde at h = 1e-3: {check:.12g}" if problem == "linear" else ""), flush=True)
        rows = {"NeuralDDE": [], "torchdde": []}
        for h in steps:
            for name, run in (("NeuralDDE", ours), ("torchdde", theirs)):
                run(problem, h)  # warm-up
                times, value = [], math.nan
                for _ in range(3):
                    value, seconds = run(problem, h)
                    times.append(seconds)
                err = abs(value - ref)
                rows[name].append((err, statistics.median(times)))
                print(f"dde {problem:12s} h = {h:<6} {name:9s} error {err:9.2e}  forward+backward "
                      f"{statistics.median(times) * 1e3:9.1f} ms", flush=True)
        for err, ratio in speedup_at_equal_accuracy(rows["NeuralDDE"], rows["torchdde"]):
            print(f"dde {problem:12s} at error {err:8.1e}: NeuralDDE is {ratio:5.1f}× faster than torchdde", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["ode", "dde"], default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.only in (None, "ode"):
        bench_ode(args.device, args.repeats)
    if args.only in (None, "dde") and args.device == "cpu":
        bench_dde([0.5, 0.25, 0.1, 0.05, 0.02])
