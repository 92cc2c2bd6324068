"""TensorBoard views shared by the callbacks: custom-scalar layouts, histograms, figures.

Written on global rank 0 only, and only when the trainer has a ``TensorBoardLogger``; every
function takes the ``SummaryWriter`` (or ``None``, then does nothing). Figures are plain
``matplotlib.figure.Figure`` objects, never pyplot's: importing this package leaves the user's
matplotlib backend and pyplot's figure list alone.
"""

from __future__ import annotations

import re
import weakref
from typing import Any, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure


#: every category written to a SummaryWriter so far, so each layout record holds them all
_LAYOUTS: "weakref.WeakKeyDictionary[Any, dict[str, dict[str, list[str]]]]" = weakref.WeakKeyDictionary()


def exact(tag: str) -> str:
    """The custom-scalars pattern matching ``tag`` and nothing else (patterns are regular expressions
    searched in every tag: ``dyn/sharpness`` alone would also match ``dyn/sharpness_ratio``)."""
    return f"^{re.escape(tag)}$"


def write_layout(writer: Optional[Any], category: str, charts: dict[str, Sequence[str]]) -> None:
    """Add ``category`` (one multiline chart per entry, several exact tags on a chart) to the run's
    custom-scalars layout. TensorBoard shows the last layout record of a run, so the record written
    holds every category added to this writer: callbacks attached together each keep their charts."""
    if writer is None:
        return
    layout = _LAYOUTS.setdefault(writer, {})
    layout[category] = {title: [exact(t) for t in tags] for title, tags in charts.items()}
    writer.add_custom_scalars({name: {title: ["Multiline", patterns] for title, patterns in charts_.items()}
                               for name, charts_ in layout.items()})


def _finished(fig: Figure, ax: Any, *, xlabel: str, ylabel: str, title: str) -> Figure:
    """Every figure ends the same way: labelled axes, a title, a legend in words, a tight layout."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def series_figure(history: Sequence[dict], tags: Sequence[str], *, labels: Optional[Sequence[str]] = None,
                  hline: Optional[float] = None, title: str = "", ylabel: str = "") -> Any:
    """A figure of ``tags`` from a callback's history against the step, each line labelled in words."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for tag, label in zip(tags, labels or tags):
        points = [(h["step"], h[tag]) for h in history if tag in h]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, "-o", ms=2.5, label=label)
    if hline is not None:
        ax.axhline(hline, color="gray", ls=":")
    return _finished(fig, ax, xlabel="optimizer step", ylabel=ylabel, title=title)


def density_figure(grid: np.ndarray, density: np.ndarray, *, step: int, operator: str = "Hessian",
                   marks: Optional[dict[str, float]] = None) -> Any:
    """The smoothed spectral density of ``operator`` (log scale, as in Ghorbani et al. 2019), with
    vertical lines at ``marks`` (label → eigenvalue: the measured λ_max, a stability threshold)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.semilogy(grid, np.maximum(density, 1e-12), label="density (stochastic Lanczos quadrature)")
    for (label, value), style in zip((marks or {}).items(), ("--", ":", "-.")):
        ax.axvline(value, color="k", ls=style, lw=1, label=label)
    return _finished(fig, ax, xlabel=f"eigenvalue of the {operator}", ylabel="spectral density",
                     title=f"{operator} spectral density, step {step}")


def add_figure(writer: Optional[Any], tag: str, fig: Any, step: int) -> None:
    if writer is not None:
        writer.add_figure(tag, fig, global_step=step)


def stability_diagram_figure(lrs: Sequence[float], batch_sizes: Sequence[int], exponents: Sequence[Sequence[float]],
                             stderr: Sequence[Sequence[float]], *, lr: float, batch_size: int, exponent: float,
                             step: int) -> Any:
    """λ against η for several batch sizes (the SGD stability diagram), the current (η, B) marked."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for b, row, err in zip(batch_sizes, exponents, stderr):
        row, err = np.asarray(row, dtype=float), np.asarray(err, dtype=float)
        line, = ax.plot(lrs, row, "-o", ms=2.5, label=f"B = {b}", lw=2.0 if b == batch_size else 1.0)
        ax.fill_between(lrs, row - 3 * err, row + 3 * err, color=line.get_color(), alpha=0.2, lw=0)
    ax.plot([lr], [exponent], "k*", ms=12, label=f"now: η = {lr:.3g}, B = {batch_size}")
    ax.axhline(0.0, color="gray", ls=":")
    ax.set_xscale("log")
    finite = np.asarray([v for row in exponents for v in row], dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size:
        ax.set_ylim(max(finite.min(), -2.0) - 0.05, min(finite.max(), 2.0) + 0.05)
    return _finished(fig, ax, xlabel="learning rate η", ylabel="top Lyapunov exponent λ of SGD",
                     title=f"SGD stability diagram (λ < 0: stable), step {step}")


def depth_profile_figure(signal_norms: Sequence[float], names: Sequence[str], *, step: int) -> Any:
    """``log‖∂L/∂h_l‖`` against the block index, with the least-squares line whose slope is
    ``−dyn/backprop_lyapunov``."""
    values = np.asarray(signal_norms, dtype=float)
    depth = np.arange(len(values))
    keep = np.isfinite(values) & (values > 0)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    ax.plot(depth[keep], np.log(values[keep]), "o-", ms=3, label="log ‖∂L/∂h_l‖ at the block's output")
    if keep.sum() >= 2:
        slope, intercept = np.polyfit(depth[keep], np.log(values[keep]), 1)
        ax.plot(depth, intercept + slope * depth, "k:",
                label=f"least-squares line, slope {slope:+.3g}: exponent {-slope:+.3g} per block "
                      f"({'growing' if slope < 0 else 'shrinking'} toward the input)")
    step_labels = max(1, len(names) // 24)  # at most ~24 readable labels
    ax.set_xticks(depth[::step_labels])
    ax.set_xticklabels(list(names)[::step_labels], rotation=45, ha="right", fontsize=8)
    return _finished(fig, ax, xlabel="block (forward order)", ylabel="log ‖∂L/∂h_l‖",
                     title=f"backpropagated signal through depth, step {step}")


def singular_value_figure(top: Sequence[float], *, step: int, grid: Optional[np.ndarray] = None,
                          density: Optional[np.ndarray] = None, values: Optional[np.ndarray] = None) -> Any:
    """Distribution of the Jacobian's squared singular values — a histogram of exact ``values``,
    or an SLQ ``density`` on ``grid`` — with the top ones marked."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if values is not None:
        ax.hist(values, bins=min(60, max(10, len(values) // 4)), density=True, alpha=0.8)
    elif grid is not None and density is not None:
        ax.plot(grid, density)
    for value in top:
        ax.axvline(value, color="gray", ls=":", lw=1)
    ax.axvline(1.0, color="green", ls="--", lw=1, label="isometry (σ² = 1)")
    return _finished(fig, ax, xlabel="squared singular value σ² of the input–output Jacobian", ylabel="density",
                     title=f"Jacobian singular value distribution, step {step}")


#: how each kind of critical point is drawn: label → (marker, colour)
CRITICAL_POINT_STYLE = {"minimum": ("o", "tab:blue"), "saddle": ("X", "black"), "maximum": ("*", "tab:red"),
                        "degenerate": ("s", "tab:orange")}


def critical_points_figure(grid: Sequence[np.ndarray], values: np.ndarray, points: np.ndarray, kinds: Sequence[str],
                           *, step: int, verdict: str) -> Any:
    """The map on its box — a curve for one input, filled contours for two — with its critical
    points marked by their ``kinds`` (minimum, saddle, maximum, degenerate); ``verdict`` is the
    architecture's case in a few words, shown in the title."""
    n = len(grid)
    fig = Figure(figsize=(6.5, 4.8) if n == 2 else (7, 4))
    ax = fig.subplots()
    if n == 1:
        ax.plot(grid[0], values, color="gray", lw=1.5, label="f(x)")
    else:
        filled = ax.contourf(grid[0], grid[1], values.T, levels=30, cmap="viridis")
        fig.colorbar(filled, ax=ax, label="f(x)")
    for kind, (marker, colour) in CRITICAL_POINT_STYLE.items():
        keep = np.asarray([k == kind for k in kinds], dtype=bool)
        if keep.any():
            y = points[keep, 1] if n == 2 else np.interp(points[keep, 0], grid[0], values)
            ax.plot(points[keep, 0], y, marker, color=colour, ms=14 if marker == "*" else 10, mec="white", ls="none",
                    label=f"{kind} ({int(keep.sum())})")
    if not len(points):
        ax.plot([], [], " ", label="no critical point in the box")
    return _finished(fig, ax, xlabel="x₁" if n == 2 else "x", ylabel="x₂" if n == 2 else "f(x)",
                     title=f"critical points of the input–output map, step {step}\n{verdict}")


def warning_figure(loss: Sequence[tuple[int, float]], risk: Sequence[tuple[int, float]],
                   episodes: Sequence[tuple[int, int]], spikes: Sequence[int], *, title: str = "") -> Any:
    """The training loss over the instability risk against the step, alarm episodes shaded and loss
    spikes marked: what ``InstabilityWarning`` saw before a spike."""
    fig = Figure(figsize=(8, 5.2))
    loss_ax, risk_ax = fig.subplots(2, 1, sharex=True)
    if loss:
        loss_ax.plot(*zip(*loss), color="C0", label="training loss")
        if min(v for _, v in loss) > 0:
            loss_ax.set_yscale("log")
    loss_ax.set_title(title or "training loss")
    risk_ax.plot(*zip(*risk), color="C3", label="dyn/instability_risk")
    risk_ax.axhline(1.0, color="gray", ls=":", label="alarm level (1)")
    if max(v for _, v in risk) > 10:
        risk_ax.set_yscale("symlog", linthresh=1.0)
    risk_ax.set_title("instability risk: the largest score over its level")
    lo, hi = risk[0][0], risk[-1][0]
    for ax in (loss_ax, risk_ax):
        for i, (a, b) in enumerate(e for e in episodes if e[1] >= lo and e[0] <= hi):
            ax.axvspan(a, b + 1, color="C3", alpha=0.12, lw=0, label="alarm episode" if i == 0 else None)
        for i, s in enumerate(x for x in spikes if lo <= x <= hi):
            ax.axvline(s, color="k", ls="--", lw=1, label="loss spike (robust z ≥ 6)" if i == 0 else None)
        ax.legend(fontsize=8, loc="upper left")
    risk_ax.set_xlabel("optimizer step")
    fig.tight_layout()
    return fig
