"""TensorBoard views shared by the callbacks: custom-scalar layouts, histograms, figures.

Written on global rank 0 only, and only when the trainer has a ``TensorBoardLogger``; every
function takes the ``SummaryWriter`` (or ``None``, then does nothing).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_layout(writer: Optional[Any], category: str, charts: dict[str, Sequence[str]]) -> None:
    """A custom-scalars layout: one multiline chart per entry, several tags on one chart."""
    if writer is None:
        return
    writer.add_custom_scalars({category: {title: ["Multiline", list(tags)] for title, tags in charts.items()}})


def series_figure(history: Sequence[dict], tags: Sequence[str], *, hline: Optional[float] = None,
                  title: str = "", ylabel: str = "") -> Any:
    """A figure of ``tags`` from a callback's history against the step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for tag in tags:
        points = [(h["step"], h[tag]) for h in history if tag in h]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, "-o", ms=2.5, label=tag.split("/")[-1])
    if hline is not None:
        ax.axhline(hline, color="gray", ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def density_figure(grid: np.ndarray, density: np.ndarray, *, step: int) -> Any:
    """The smoothed Hessian spectral density (log scale, as in Ghorbani et al. 2019)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(grid, np.maximum(density, 1e-12))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"Hessian spectral density (SLQ), step {step}")
    fig.tight_layout()
    return fig


def add_figure(writer: Optional[Any], tag: str, fig: Any, step: int) -> None:
    if writer is not None:
        writer.add_figure(tag, fig, global_step=step)
    plt.close(fig)
