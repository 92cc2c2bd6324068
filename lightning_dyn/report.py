"""Read a run's TensorBoard event files; write PNG figures and a plain-language summary.

    lightning-dyn report RUN_DIR

Figures the callbacks logged to TensorBoard (``dyn/*`` images: the SGD stability diagram, the
sharpness and density figures) are written as PNGs too. The summary reads the edge-of-stability
scalars (``EdgeOfStability``'s ``dyn/eos_sharpness`` or ``dyn/preconditioned_sharpness``, else
``HessianSharpness``'s ``dyn/sharpness``; ``dyn/stability_threshold``, ``dyn/sharpness_ratio``, ``dyn/regime``, and SGD's ``dyn/batch_sharpness``) and ``train_loss`` when present, e.g. "progressive
sharpening 3.9 → 20.6 by step 1950; at the edge (threshold 20.0) from step 2000; the loss rose on
300 steps yet fell 0.62 → 0.015", the last ``SGDLyapunov`` verdict (λ, critical learning rate),
and the gradients' story: the backprop Lyapunov exponent first and last, the total gradient norm,
events and skipped steps (``GradientExplosionMonitor``), the Jacobian's σ_max and ⟨σ²⟩
(``JacobianSpectrum``), and the early warning's alarms (``InstabilityWarning``) — with
``instability_warning.png``: the risk against the training loss around the first alarm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from .callbacks.figures import warning_figure
from .callbacks.instability_warning import FIGURE_MARGIN
from .dynamics.early_warning import alarm_episodes, loss_spikes
from .dynamics.edge_of_stability import REGIMES
from .function_classes.critical_points import describe_counts

Series = dict[str, list[tuple[int, float]]]


def read_scalars(run_dir: str | Path) -> Series:
    """Every scalar series in the event files under ``run_dir``, sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(run_dir).rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    series: Series = {}
    for folder in sorted({f.parent for f in files}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


def _first_step(points: list[tuple[int, float]], regime: str) -> Optional[int]:
    code = REGIMES.index(regime)
    return next((s for s, v in points if int(round(v)) == code), None)


#: measurements needed before a summary calls a rise "progressive sharpening"
MIN_TREND_POINTS = 5

#: the sharpness series a summary tells, in order of preference: the one compared with a threshold first
SHARPNESS_TAGS = ("dyn/eos_sharpness", "dyn/preconditioned_sharpness", "dyn/sharpness")


def sharpness_tag(series: Series) -> str:
    """The sharpness tag the run's edge-of-stability story is about (see ``SHARPNESS_TAGS``)."""
    return next((tag for tag in SHARPNESS_TAGS if tag in series), SHARPNESS_TAGS[-1])


def summarize(series: Series) -> str:
    """The plain-language account of an edge-of-stability run."""
    parts = []
    sharp = series.get(sharpness_tag(series), [])
    threshold = series.get("dyn/stability_threshold", [])
    regime = series.get("dyn/regime", [])
    if sharp:
        edge_step = _first_step(regime, "edge") if regime else None
        above_step = _first_step(regime, "above") if regime else None
        reached = min(s for s in (edge_step, above_step) if s is not None) if (edge_step or above_step) else None
        rising = [(s, v) for s, v in sharp if reached is None or s <= reached]
        peak_step, peak = max(rising, key=lambda p: p[1])
        count = sum(1 for s, _ in rising if s <= peak_step)
        # a trend needs points: MIN_TREND_POINTS measurements up to the peak, and a rise of 20%
        parts.append(f"progressive sharpening {sharp[0][1]:.1f} → {peak:.1f} by step {peak_step} ({count} measurements)"
                     if count >= MIN_TREND_POINTS and peak > 1.2 * sharp[0][1]
                     else f"sharpness {sharp[0][1]:.1f} → {sharp[-1][1]:.1f} ({len(sharp)} measurements)")
        if reached is not None and threshold:
            thr = dict(threshold).get(reached, threshold[-1][1])
            parts.append(f"at the edge (threshold {thr:.1f}) from step {reached}")
            ratio = [v for s, v in series.get("dyn/sharpness_ratio", []) if s >= reached]
            if ratio:
                parts.append(f"sharpness/threshold then {np.min(ratio):.2f}–{np.max(ratio):.2f} (median {np.median(ratio):.2f})")
        elif threshold:
            parts.append(f"below the threshold ({threshold[-1][1]:.1f}) throughout")
        batch = series.get("dyn/batch_sharpness_ratio", [])
        if batch:  # mini-batch SGD: the quantity that settles at the threshold, by Andreyev & Beneventano
            parts.append(f"batch sharpness/threshold {batch[0][1]:.2f} → {batch[-1][1]:.2f}")
    loss = series.get("train_loss", [])
    if len(loss) > 1:
        values = np.array([v for _, v in loss])
        rises = int(np.sum(np.diff(values) > 0))
        parts.append(f"the loss rose on {rises} of {len(values) - 1} logged steps yet fell {values[0]:.3g} → {values[-1]:.3g}"
                     if rises else f"the loss fell monotonically {values[0]:.3g} → {values[-1]:.3g}")
    return "; ".join(parts) if parts else "no lightning_dyn scalars in this run"


def write_figures(series: Series, out_dir: str | Path) -> list[Path]:
    """PNG figures of the edge-of-stability scalars and the loss (``edge_of_stability.png``, or
    ``training_loss.png`` for a run with the loss alone); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tag = sharpness_tag(series)
    what = {"dyn/preconditioned_sharpness": "preconditioned sharpness λ_max(P⁻¹H)",
            "dyn/eos_sharpness": "sharpness λ_max(H)", "dyn/sharpness": "top Hessian eigenvalue λ_max(H)"}[tag]
    panels = [(f"{what} and the optimizer's stability threshold",
               [(tag, what), ("dyn/batch_sharpness", "batch sharpness E_B[g_BᵀH_Bg_B/‖g_B‖²] (SGD)"),
                ("dyn/stability_threshold", "stability threshold")], None, "curvature (eigenvalue)"),
              ("how close to the threshold (1 = the edge of stability)",
               [("dyn/sharpness_ratio", "sharpness / threshold"),
                ("dyn/batch_sharpness_ratio", "batch sharpness / threshold")], 1.0, "ratio"),
              ("training loss", [("train_loss", "training loss (logged steps)")], None, "loss (log scale)")]
    panels = [p for p in panels if any(t in series for t, _ in p[1])]
    if not panels:
        return written
    fig = Figure(figsize=(8, 2.9 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    for ax, (title, lines, hline, ylabel) in zip(axes[:, 0], panels):
        for t, label in lines:
            if t in series:
                steps, values = zip(*series[t])
                ax.plot(steps, values, label=label)
        if hline is not None:
            ax.axhline(hline, color="gray", ls=":", label="the threshold")
        if lines[0][0] == "train_loss":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=9)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    path = out / ("training_loss.png" if len(panels) == 1 and panels[0][1][0][0] == "train_loss"
                  else "edge_of_stability.png")
    fig.savefig(path, dpi=110)
    written.append(path)
    return written


def write_warning_figure(series: Series, out_dir: str | Path) -> list[Path]:
    """``instability_warning.png``: the training loss and ``dyn/instability_risk`` around the first
    alarm (the whole run when there is none), the alarm episodes shaded and the loss spikes
    (:func:`~lightning_dyn.dynamics.loss_spikes` on the logged loss) marked."""
    risk = series.get("dyn/instability_risk", [])
    if not risk:
        return []
    episodes = alarm_episodes(risk)
    lo, hi = ((episodes[0][0] - FIGURE_MARGIN, episodes[0][0] + FIGURE_MARGIN) if episodes
              else (risk[0][0], risk[-1][0]))
    loss = series.get("train_loss", [])
    spikes = [loss[i][0] for i in loss_spikes([v for _, v in loss])] if len(loss) > 1 else []
    title = "training loss" + (f" around the first alarm (step {episodes[0][0]})" if episodes else "")
    fig = warning_figure([(s, v) for s, v in loss if lo <= s <= hi], [(s, v) for s, v in risk if lo <= s <= hi],
                         episodes, spikes, title=title)
    path = Path(out_dir) / "instability_warning.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return [path]


def summarize_warning(series: Series) -> str:
    """``InstabilityWarning``: alarm episodes, the first with its risk, and the peak risk."""
    risk = series.get("dyn/instability_risk", [])
    if not risk:
        return ""
    episodes = alarm_episodes(risk)
    peak_step, peak = max(risk, key=lambda p: p[1])
    if not episodes:
        return f"no alarm in {len(risk)} steps (peak risk {peak:.3g} at step {peak_step})"
    first = episodes[0][0]
    return (f"{len(episodes)} alarm episode(s) in {len(risk)} steps, the first at step {first} (risk "
            f"{dict(risk)[first]:.3g}); peak risk {peak:.3g} at step {peak_step}")


def write_logged_figures(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """The figures the callbacks logged to TensorBoard (``dyn/*`` images, e.g. the SGD stability
    diagram), the last of each tag, as PNG files named after the tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = Path(out_dir)
    latest: dict[str, tuple[int, bytes]] = {}
    for folder in sorted({f.parent for f in Path(run_dir).rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder), size_guidance={"images": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            if tag.startswith("dyn/"):
                last = acc.Images(tag)[-1]
                if tag not in latest or last.step >= latest[tag][0]:
                    latest[tag] = (last.step, last.encoded_image_string)
    written = []
    for tag, (_, png) in sorted(latest.items()):
        out.mkdir(parents=True, exist_ok=True)
        path = out / (tag.replace("/", "_") + ".png")
        path.write_bytes(png)
        written.append(path)
    return written


def summarize_sgd(series: Series) -> str:
    """The SGDLyapunov verdict of the last measurement, in words."""
    lam = series.get("dyn/sgd_lyapunov", [])
    if not lam:
        return ""
    step, value = lam[-1]
    at = {tag: dict(series[tag]).get(step) for tag in ("dyn/sgd_lyapunov_stderr", "dyn/critical_lr",
                                                        "dyn/near_interpolation", "dyn/mean_square") if tag in series}
    text = f"SGD at step {step}: λ = {value:+.4f}"
    if at.get("dyn/sgd_lyapunov_stderr") is not None:
        text += f" ± {at['dyn/sgd_lyapunov_stderr']:.4f}"
    text += " (stable)" if value < 0 else " (unstable)"
    if at.get("dyn/critical_lr") is not None:
        text += f", critical learning rate {at['dyn/critical_lr']:.4g}"
    if at.get("dyn/mean_square") is not None:
        text += f", mean-square {'stable' if at['dyn/mean_square'] <= 1 else 'not stable'}"
    if at.get("dyn/near_interpolation") == 0:
        text += " — not at interpolation: the linearisation at the current point"
    return text


def summarize_gradients(series: Series) -> str:
    """Backprop through depth, gradient norms, events and skips, the Jacobian spectrum, in words."""
    parts = []
    rate = series.get("dyn/backprop_lyapunov", [])
    if rate:
        trend = lambda v: "exploding" if v > 0 else "vanishing"  # noqa: E731
        parts.append(f"backprop Lyapunov exponent {rate[0][1]:+.3f} per block at step {rate[0][0]}"
                     + (f" → {rate[-1][1]:+.3f} at step {rate[-1][0]}" if len(rate) > 1 else "")
                     + f" ({trend(rate[-1][1])} toward the input)")
    norm = series.get("dyn/grad_norm_preclip", [])
    if norm:
        parts.append(f"gradient norm before clipping {norm[-1][1]:.3g} at step {norm[-1][0]}")
    events, skips = series.get("dyn/grad_events", []), series.get("dyn/grad_skips", [])
    if events:
        parts.append(f"{int(events[-1][1])} gradient event(s)" + (f", {int(skips[-1][1])} step(s) skipped" if skips else ""))
    sigma, msv = series.get("dyn/jacobian_sigma_max", []), series.get("dyn/jacobian_msv", [])
    if sigma:
        parts.append(f"input–output Jacobian at step {sigma[-1][0]}: σ_max {sigma[-1][1]:.3g}"
                     + (f", ⟨σ²⟩ {msv[-1][1]:.3g}" if msv else ""))
    return "; ".join(parts)


def summarize_hessian(series: Series) -> str:
    """``HessianSharpness``'s raw-Hessian series, when an ``EdgeOfStability`` beside it tells its own."""
    sharp = series.get("dyn/sharpness", [])
    if not sharp:
        return ""
    text = (f"top Hessian eigenvalue {sharp[0][1]:.4g} at step {sharp[0][0]} → {sharp[-1][1]:.4g} at step "
            f"{sharp[-1][0]} ({len(sharp)} measurements)")
    trace = series.get("dyn/hessian_trace", [])
    return text + (f"; trace {trace[-1][1]:.4g} at step {trace[-1][0]}" if trace else "")


def summarize_critical_points(series: Series) -> str:
    """``CriticalPoints``: how many critical points the map had, by kind, first and last."""
    count = series.get("dyn/critical_points", [])
    if not count:
        return ""

    indices = sorted(int(tag.rsplit("_", 1)[1]) for tag in series if tag.startswith("dyn/critical_points_index_"))

    def at(step: int) -> str:
        counts = {i: int(dict(series[f"dyn/critical_points_index_{i}"]).get(step, 0)) for i in indices}
        degenerate = int(dict(series.get("dyn/critical_points_degenerate", [])).get(step, 0))
        text = describe_counts(counts, max(indices, default=0), degenerate)
        if text:
            return text
        grad = dict(series.get("dyn/critical_points_min_grad_norm", [])).get(step)
        return "none" + (f" (smallest ‖∇ₓf‖ {grad:.3g})" if grad is not None else "")

    first, last = count[0][0], count[-1][0]
    text = f"critical points of the map at step {first}: {at(first)}"
    return text + (f"; at step {last}: {at(last)}" if last != first else "") + f" ({len(count)} measurements)"


def run_summary(series: Series) -> str:
    """One line per callback whose scalars are in the run, then the loss; each says what it is about."""
    curvature = summarize({k: v for k, v in series.items() if k != "train_loss"})
    if any(tag in series for tag in SHARPNESS_TAGS[:2]):  # EdgeOfStability tells the story; the raw Hessian beside it
        eos, hessian = curvature, summarize_hessian(series)
    else:
        eos, hessian = "", curvature if "dyn/sharpness" in series else ""
    sections = [("EdgeOfStability", eos),
                ("HessianSharpness", hessian),
                ("SGDLyapunov", summarize_sgd(series)),
                ("CriticalPoints", summarize_critical_points(series)),
                ("gradients (GradientExplosionMonitor, JacobianSpectrum)", summarize_gradients(series)),
                ("InstabilityWarning", summarize_warning(series)),
                ("training loss", summarize({"train_loss": series["train_loss"]}) if "train_loss" in series else "")]
    lines = [f"{name}: {text}" for name, text in sections if text and not text.startswith("no lightning_dyn")]
    return "\n".join(lines) if lines else "no lightning_dyn scalars in this run"


def report(run_dir: str | Path, out_dir: Optional[str | Path] = None) -> str:
    """Figures into ``out_dir`` (default: ``run_dir``) and the summary, printed and returned."""
    series = read_scalars(run_dir)
    paths = (write_figures(series, out_dir or run_dir) + write_warning_figure(series, out_dir or run_dir)
             + write_logged_figures(run_dir, out_dir or run_dir))
    text = run_summary(series)
    print(text)
    for p in paths:
        print(f"figure: {p}")
    return text
