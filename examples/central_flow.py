"""Gradient descent at the edge of stability beside its central flow.

A tanh MLP (64-32-32-10) is trained by full-batch gradient descent with squared loss on 300 sklearn
digits at η = 0.6 — past the point where its sharpness reaches 2/η = 3.33, so it trains at the edge
of stability, oscillating. :class:`lightning_dyn.dynamics.CentralFlow` integrates the central flow
(Cohen, Damian et al. 2024) from the same start. Compared, over the edge-of-stability phase:

* the flow's sharpness against 2/η (held there by the flow's oscillation covariance);
* the flow's predicted time-averaged loss ``L(w) + ½⟨Σ, H⟩`` against GD's loss averaged over a
  window of ``WINDOW`` steps;
* the flow's oscillation variance ``σ² = tr Σ`` against the measured variance of GD's iterates in
  the flow's held eigenvectors ``U``, ``mean_window ‖Uᵀ(w_GD − w_flow)‖²``;
* the flow's loss and sharpness against GD's (the implicit penalty ``½σ²∇S`` keeps both flat).

Everything in float64. TensorBoard scalars under ``central_flow/`` and a figure.

    python examples/central_flow.py             # about 2 minutes on 2 CPU cores
    python -m tensorboard.main --logdir runs/central_flow
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from lightning_dyn.curvature import MatrixFreeOperator, top_eigenpairs
from lightning_dyn.data import digits_tensors
from lightning_dyn.dynamics import CentralFlow, module_loss

N, LR, STEPS, WIDTHS, WINDOW = 300, 0.6, 600, (64, 32, 32, 10), 20


def mlp(widths=WIDTHS, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def squared_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(1).mean()


def gradient_descent(loss, w0: torch.Tensor, lr: float, steps: int, every: int = 5) -> dict:
    """Full-batch GD: losses and iterates at every step, sharpness every ``every`` steps."""
    g = torch.func.grad(loss)
    w, eig = w0.clone(), None
    losses, iterates, sharpness = [], [], {}
    for t in range(steps + 1):
        losses.append(float(loss(w)))
        iterates.append(w.clone())
        if t % every == 0:
            op = MatrixFreeOperator(lambda v, w=w: torch.func.jvp(g, (w,), (v,))[1], w.numel(), device=w.device,
                                    dtype=w.dtype)
            eig = top_eigenpairs(op, 1, tol=1e-6, max_matvecs=200, init=eig)
            sharpness[t] = float(eig.values[0])
        if t < steps:
            w = w - lr * g(w)
    return {"loss": np.array(losses), "iterates": iterates, "sharpness": sharpness}


def windowed(values: np.ndarray, t: int, window: int = WINDOW) -> float:
    lo, hi = max(t - window // 2, 0), min(t + window // 2, len(values))
    return float(np.mean(values[lo:hi]))


def main(n: int = N, lr: float = LR, steps: int = STEPS, dt: float = 0.5, logdir: str = "runs/central_flow",
         figure: str | None = "central_flow.png") -> dict:
    model = mlp()
    loss, w0 = module_loss(model, squared_loss, digits_tensors(n, dtype=torch.float64))
    gd = gradient_descent(loss, w0, lr, steps)
    flow = CentralFlow(loss, w0, lr, k=2, dt=dt, eig_tol=1e-5)
    states: dict[int, tuple] = {}
    flow.run(steps, every=1.0, callback=lambda p, w: states.__setitem__(int(round(p.t)), (p, w.clone())))
    threshold = 2.0 / lr
    held = [t for t, (p, _) in sorted(states.items()) if p.held]
    start = held[0] if held else steps + 1
    # the edge-of-stability phase: from one window after the flow reaches 2/η to one window before the end
    phase = [t for t in held if start + WINDOW <= t <= steps - WINDOW // 2]
    rows = []
    writer = SummaryWriter(logdir) if logdir else None
    if writer is not None:  # each comparison on one chart
        tags = lambda *names: ["Multiline", [f"central_flow/{n}" for n in names]]  # noqa: E731
        writer.add_custom_scalars({"GD beside its central flow": {
            "loss: GD, GD's window mean, the flow's predicted mean L + ½⟨Σ,H⟩, the flow's L":
                tags("gd_loss", "gd_loss_windowed", "flow_time_averaged_loss", "flow_loss"),
            "sharpness: GD's λ_max, the flow's λ_max, 2/η": tags("gd_sharpness", "flow_sharpness", "threshold"),
            "oscillation: the flow's σ² = tr Σ, GD's variance in the held eigenvectors":
                tags("flow_sigma2", "gd_variance_along_u")}})
    for t, (p, w) in sorted(states.items()):
        gd_mean = windowed(gd["loss"], t)
        window = range(max(t - WINDOW // 2, 0), min(t + WINDOW // 2, steps + 1))
        U = p.directions  # the oscillation's subspace: the held eigenvectors
        displacement = np.array([0.0 if U is None else float(((gd["iterates"][s] - w) @ U).pow(2).sum())
                                 for s in window])
        row = {"t": t, "flow_loss": p.loss, "predicted": p.time_averaged_loss, "gd_windowed": gd_mean,
               "gd_loss": float(gd["loss"][t]), "flow_sharpness": p.sharpness, "sigma2": p.sigma2,
               "gd_variance": float(np.mean(displacement)), "held": p.held}
        rows.append(row)
        if writer is not None:
            scalars = {"gd_loss": row["gd_loss"], "gd_loss_windowed": gd_mean, "flow_loss": p.loss,
                       "flow_time_averaged_loss": p.time_averaged_loss, "flow_sharpness": p.sharpness,
                       "threshold": threshold, "flow_sigma2": p.sigma2, "gd_variance_along_u": row["gd_variance"]}
            if t in gd["sharpness"]:
                scalars["gd_sharpness"] = gd["sharpness"][t]
            for name, value in scalars.items():
                writer.add_scalar(f"central_flow/{name}", value, t)
    in_phase = [r for r in rows if r["t"] in set(phase)]
    loss_error = [abs(r["predicted"] / r["gd_windowed"] - 1) for r in in_phase]
    sharp_error = [abs(r["flow_sharpness"] / threshold - 1) for r in in_phase]
    variance_ratio = [r["gd_variance"] / r["sigma2"] for r in in_phase if r["sigma2"] > 0]
    naive_error = [abs(r["flow_loss"] / r["gd_windowed"] - 1) for r in in_phase]
    # GD enters its oscillation later than the flow reaches the edge (its sharpness overshoots 2/η
    # first): the steps from the first at which GD's variance in U reaches a tenth of σ²
    oscillating = next((r["t"] for r in in_phase if r["sigma2"] > 0 and r["gd_variance"] >= 0.1 * r["sigma2"]), None)
    late_error = [abs(r["predicted"] / r["gd_windowed"] - 1) for r in in_phase
                  if oscillating is not None and r["t"] >= oscillating]
    summary = {
        "edge_reached_at": start, "phase_steps": len(phase),
        "sharpness_error_max": max(sharp_error, default=float("nan")),
        "loss_error_median": float(np.median(loss_error)) if loss_error else float("nan"),
        "loss_error_max": max(loss_error, default=float("nan")),
        "flow_loss_error_median": float(np.median(naive_error)) if naive_error else float("nan"),
        "variance_ratio_median": float(np.median(variance_ratio)) if variance_ratio else float("nan"),
        "gd_oscillating_from": oscillating,
        "loss_error_median_oscillating": float(np.median(late_error)) if late_error else float("nan"),
        "gd_final_sharpness": gd["sharpness"][max(gd["sharpness"])], "flow_final_sharpness": rows[-1]["flow_sharpness"],
        "products": flow.products, "third_derivatives": flow.third_derivatives,
    }
    if writer is not None:
        writer.add_figure("central_flow/figure", plot(rows, gd, threshold, phase), 0)
        writer.close()
    if figure:
        plot(rows, gd, threshold, phase).savefig(figure, dpi=110)
    print(f"central flow: edge of stability from step {start}; over {len(phase)} steps of it the flow's sharpness "
          f"is within {100 * summary['sharpness_error_max']:.2g}% of 2/η, its predicted time-averaged loss within "
          f"{100 * summary['loss_error_median']:.2g}% (median; max {100 * summary['loss_error_max']:.2g}%) of GD's "
          f"{WINDOW}-step mean (the flow's own loss: {100 * summary['flow_loss_error_median']:.2g}% off), "
          f"{100 * summary['loss_error_median_oscillating']:.2g}% from step {oscillating} on, once GD oscillates; GD's "
          f"variance in the held eigenvectors / σ² = {summary['variance_ratio_median']:.2f} (median)")
    return {"rows": rows, "summary": summary, "threshold": threshold}


def plot(rows: list[dict], gd: dict, threshold: float, phase: list[int]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["t"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(np.arange(len(gd["loss"])), gd["loss"], color="0.75", lw=0.8, label="GD loss")
    ax.plot(t, [r["gd_windowed"] for r in rows], color="C0", label=f"GD loss, {WINDOW}-step mean")
    ax.plot(t, [r["predicted"] for r in rows], "--", color="C3", label="central flow: L + ½⟨Σ,H⟩ (predicted mean)")
    ax.plot(t, [r["flow_loss"] for r in rows], ":", color="C2", label="central flow: L(w(t))")
    ax.set(yscale="log", xlabel="step", ylabel="loss", title="loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    steps = sorted(gd["sharpness"])
    ax.plot(steps, [gd["sharpness"][s] for s in steps], color="C0", label="GD λ_max")
    ax.plot(t, [r["flow_sharpness"] for r in rows], "--", color="C3", label="central flow λ_max")
    ax.axhline(threshold, color="k", ls=":", label="2/η")
    ax.set(xlabel="step", ylabel="sharpness", title="sharpness")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(t, [r["sigma2"] for r in rows], "--", color="C3", label="central flow σ² = tr Σ")
    ax.plot(t, [r["gd_variance"] for r in rows], color="C0", label="GD: mean ‖Uᵀ(w_GD − w_flow)‖² (window)")
    if phase:
        for a in axes:
            a.axvspan(phase[0], phase[-1], color="0.93", zorder=0)
    ax.set(yscale="log", xlabel="step", ylabel="variance", title="oscillation in the held eigenvectors U")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    Path("runs").mkdir(exist_ok=True)
    main()
