"""How well InstabilityWarning warns before loss spikes: precision, recall, lead time, PR-AUC.

The protocol is fixed in code before any level is tuned (the docs' early-warning page states it):

Runs — three settings × 20 seeds, each a real Lightning ``Trainer`` with ``InstabilityWarning``
attached (``action="none"``) and a recorder that reads the loss and the detector's scores every step:

* ``gpt_adamw``: a character-level GPT (2 post-norm layers, width 128, 4 heads, context 64, batch 32)
  on Python's own reference manual (``pydoc_data.topics``, ships with Python), AdamW with β₂ = 0.999,
  a 10-step warmup to 3e-3, and at step 250 the rate multiplied by a factor drawn per seed
  log-uniformly in [1, 30] (a schedule that steps past the stable range), 500 steps;
* ``mlp_sgd_sweep``: a tanh MLP 64-128-128-10 on sklearn's digits, half-MSE on one-hot targets, mini-batch 64, SGD
  with momentum 0.9 and the learning rate swept exponentially from 1e-3 to 10 over 800 steps (a
  learning-rate range test: it passes the stable range);
* ``mlp_gd_stepup``: the same MLP and loss, full-batch GD at η = 0.05 multiplied
  by a factor drawn per seed in [1.5, 2.5] every 300 steps, 1500 steps.

Ground truth (from the per-step training loss only): a spike is a robust z-score ≥ 6 of log-loss
against the previous 100 steps (median and 1.4826 × MAD; at least 20 previous steps); spikes within
20 steps are merged (the first kept); divergence — a non-finite loss or one above 10× its running
maximum — is a spike too, and ends the run.

Scoring: an alarm at step t is decided from what training knows at t (the step's loss and gradient).
Alarm steps at most 20 apart are one episode, and an *alarm* is an episode's first step (so a
detector cannot score by staying on). A spike at s is *warned* when an alarm comes at some t in
[s − 50, s − 1] (lead s − t, the earliest such t). An alarm is true when it warns of a spike, ignored
when it comes within [s, s + 50] of one (the aftermath: a reaction, not a warning) and false
otherwise. Reported: recall (warned spikes / spikes), precision (true / (true + false) alarms),
false alarms per 1000 steps, the median lead and its interquartile range, and PR-AUC — average
precision of the per-step score against the label "a spike within the next 50 steps" (aftermath
steps left out) — pooled over runs.

Calibration: seeds 0–9 of each setting choose the levels (a grid over the three scores' levels for
the combined risk; one threshold for each baseline): the largest recall with at most 1 false alarm
per 1000 steps. Seeds 10–19 are reported. Baselines on the same runs: the loss rule of Lightning's
``SpikeDetection`` (loss above its running mean of 10 by a relative tolerance, default 2: lead 0 by
construction), the gradient-norm z-score over 128 steps (OLMo-core's rule, default 6), and Adam's
update-RMS ratio alone.

Actions: every held-out run that diverged is rerun with ``action="skip"`` and ``action="reduce_lr"``
at the calibrated levels; reported: how many finish, and their final loss (mean of the last 20
steps) against the same seed at a tenth of the learning rate.

    python benchmarks/early_warning.py                       # everything (~45 min on 2 CPU cores)
    python benchmarks/early_warning.py --sections evaluate   # re-score the saved traces
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score
from torch import nn

from lightning_dyn import InstabilityWarning
from lightning_dyn.dynamics import alarm_episodes, loss_spikes

SETTINGS = ("gpt_adamw", "mlp_sgd_sweep", "mlp_gd_stepup")
CALIBRATION, HELD_OUT = range(0, 10), range(10, 20)
HORIZON, MERGE, SPIKE_Z, HISTORY, MIN_HISTORY = 50, 20, 6.0, 100, 20
SCORES = ("update_sharpness_ratio", "update_rms_ratio", "grad_norm_zscore")
TRACES = Path(os.environ.get("EARLY_WARNING_TRACES", "/tmp/early_warning_traces.json"))


# -- the models and settings ----------------------------------------------------------------------
class CharGPT(pl.LightningModule):
    def __init__(self, text: torch.Tensor, vocab: int, step_up: float, seed: int, steps: int, lr_scale: float = 1.0):
        super().__init__()
        self.text, self.step_up, self.seed, self.steps, self.lr_scale = text, step_up, seed, steps, lr_scale
        self.embed = nn.Embedding(vocab, 128)
        self.position = nn.Parameter(torch.randn(64, 128) * 0.02)
        layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True, norm_first=False)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(128)
        self.head = nn.Linear(128, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(64), persistent=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        h = self.blocks(self.embed(x) + self.position, mask=self.mask, is_causal=True)
        return nn.functional.cross_entropy(self.head(self.norm(h)).flatten(0, 1), y.flatten())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=3e-3 * self.lr_scale, betas=(0.9, 0.999), weight_decay=0.1)
        rule = lambda s: min(1.0, (s + 1) / 10) * (self.step_up if s >= self.steps // 2 else 1.0)  # noqa: E731
        warm = torch.optim.lr_scheduler.LambdaLR(opt, rule)
        return [opt], [{"scheduler": warm, "interval": "step"}]

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        starts = torch.randint(0, len(self.text) - 65, (self.steps * 32,), generator=g)
        windows = torch.stack([self.text[s:s + 65] for s in starts.tolist()])
        data = torch.utils.data.TensorDataset(windows[:, :-1], windows[:, 1:])
        return torch.utils.data.DataLoader(data, batch_size=32, shuffle=False)


class DigitsMLP(pl.LightningModule):
    def __init__(self, setting: str, seed: int, steps: int, step_up: float, lr_scale: float = 1.0):
        super().__init__()
        self.setting, self.seed, self.steps, self.step_up, self.lr_scale = setting, seed, steps, step_up, lr_scale
        self.net = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32)
        self.x, self.y = (x - x.mean(0)) / (x.std(0) + 1e-6), torch.tensor(digits.target)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        return 0.5 * (out - nn.functional.one_hot(y, 10).float()).square().sum(1).mean()

    def configure_optimizers(self):
        if self.setting == "mlp_gd_stepup":
            opt = torch.optim.SGD(self.parameters(), lr=0.05 * self.lr_scale)
            rule = lambda s: self.step_up ** (s // 300)  # noqa: E731
        else:
            opt = torch.optim.SGD(self.parameters(), lr=1e-3 * self.lr_scale, momentum=0.9)
            rule = lambda s: 10 ** (4 * s / self.steps)  # noqa: E731  1e-3 → 10
        return [opt], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, rule), "interval": "step"}]

    def train_dataloader(self):
        if self.setting == "mlp_gd_stepup":  # the whole set as one batch, every step
            return torch.utils.data.DataLoader([(self.x, self.y)] * self.steps, batch_size=None)
        data = torch.utils.data.TensorDataset(self.x, self.y)
        g = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, generator=g, drop_last=True)


def char_text() -> tuple[torch.Tensor, int]:
    import pydoc_data.topics as topics
    text = "".join(topics.topics[k] for k in sorted(topics.topics))
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text]), len(chars)


def build(setting: str, seed: int, lr_scale: float = 1.0) -> tuple[pl.LightningModule, int]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(1000 + seed)
    if setting == "gpt_adamw":
        text, vocab = char_text()
        return CharGPT(text, vocab, float(10 ** rng.uniform(0, math.log10(30))), seed, 500, lr_scale), 500
    if setting == "mlp_sgd_sweep":
        return DigitsMLP(setting, seed, 800, 1.0, lr_scale), 800
    return DigitsMLP(setting, seed, 1500, float(rng.uniform(1.5, 2.5)), lr_scale), 1500


class Recorder(pl.Callback):
    """Loss and the detector's scores every step; stops training at divergence."""

    def __init__(self, warning: InstabilityWarning) -> None:
        self.warning, self.loss, self.scores, self.running_max = warning, [], [], -math.inf
        self.diverged = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = float(outputs["loss"])
        risk = self.warning.last_risk
        self.loss.append(loss)
        self.scores.append([math.nan if risk is None else risk.scores.get(n, math.nan) for n in SCORES])
        if not math.isfinite(loss) or (self.running_max > 0 and loss > 10 * self.running_max):
            self.diverged = len(self.loss) - 1  # divergence_step's rule, as the run goes
            trainer.should_stop = True
        self.running_max = max(self.running_max, loss) if math.isfinite(loss) else self.running_max


def run(setting: str, seed: int, *, action: str = "none", levels=None, lr_scale: float = 1.0) -> dict:
    model, steps = build(setting, seed, lr_scale)
    warning = InstabilityWarning(action=action, levels=levels, max_consecutive_skips=50)
    recorder = Recorder(warning)
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, callbacks=[warning, recorder], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         deterministic=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    return {"setting": setting, "seed": seed, "loss": recorder.loss, "scores": recorder.scores,
            "diverged": recorder.diverged, "seconds": time.perf_counter() - start,
            "callback_seconds": warning.total_seconds, "steps": steps, "skips": warning.skips,
            "lr_factor": warning.lr_reduction.factor}


# -- ground truth and scoring ---------------------------------------------------------------------
def spikes(loss: list[float], diverged=None) -> list[int]:
    """Spike onsets (module docstring; :func:`lightning_dyn.dynamics.loss_spikes`), divergence included."""
    return loss_spikes(loss, z=SPIKE_Z, history=HISTORY, min_history=MIN_HISTORY, merge=MERGE)


def prepared(trace: dict) -> dict:
    """What scoring needs of a run, computed once: the spike onsets, the per-step scores (NaN where a
    score does not exist) up to the end of the run (its divergence), and the loss rule's score."""
    if "_onsets" not in trace:
        n = len(trace["loss"]) if trace["diverged"] is None else trace["diverged"] + 1
        loss = np.asarray(trace["loss"][:n], dtype=float)
        rule = np.zeros(n)  # SpikeDetection: (L_t − mean of the last 10) / mean, when the loss went up
        for t in range(1, n):
            mean = loss[max(0, t - 10):t].mean()
            rule[t] = math.inf if not math.isfinite(loss[t]) else (
                (loss[t] - mean) / mean if loss[t] > loss[t - 1] and mean > 0 else 0.0)
        trace["_onsets"] = spikes(trace["loss"])
        trace["_scores"] = np.asarray(trace["scores"], dtype=float).reshape(-1, len(SCORES))[:n]
        trace["_rule"] = rule
    return trace


def score_series(trace: dict, detector: str, levels: dict | None = None) -> np.ndarray:
    """The per-step score of a detector (alarm at ≥ its threshold; the risk's threshold is 1)."""
    trace = prepared(trace)
    if detector == "risk":
        return np.max([np.nan_to_num(trace["_scores"][:, i], nan=0.0) / levels[name]
                       for i, name in enumerate(SCORES)], axis=0)
    if detector == "loss_rule":
        return trace["_rule"]
    return np.nan_to_num(trace["_scores"][:, SCORES.index(detector)], nan=-math.inf)


def episode_onsets(alarm: np.ndarray) -> np.ndarray:
    """The first step of each alarm episode (the detector's rule: alarm steps at most MERGE apart are one)."""
    return np.array([a for a, _ in alarm_episodes([(t, 1.0) for t in np.flatnonzero(alarm).tolist()], MERGE)],
                    dtype=np.int64)


def score_run(alarm: np.ndarray, onsets: list[int]) -> dict:
    """Warnings, true and false alarms of one run (module docstring): an alarm is an episode's onset."""
    starts = episode_onsets(np.asarray(alarm, dtype=bool))
    leads, true, ignored = [], np.zeros(len(starts), bool), np.zeros(len(starts), bool)
    for s in onsets:
        warning = (starts >= s - HORIZON) & (starts < s)
        if warning.any():
            leads.append(int(s - starts[warning].min()))
        true |= warning
        ignored |= (starts >= s) & (starts <= s + HORIZON)
    return {"spikes": len(onsets), "warned": len(leads), "leads": leads, "true": int(true.sum()),
            "false": int((~true & ~ignored).sum()), "steps": len(alarm)}


def pooled(results: list[dict]) -> dict:
    spikes_ = sum(r["spikes"] for r in results)
    warned = sum(r["warned"] for r in results)
    true, false = sum(r["true"] for r in results), sum(r["false"] for r in results)
    steps = sum(r["steps"] for r in results)
    leads = [x for r in results for x in r["leads"]]
    return {"recall": warned / spikes_ if spikes_ else math.nan,
            "precision": true / (true + false) if true + false else math.nan,
            "fa_per_1000": 1000 * false / steps, "spikes": spikes_, "warned": warned,
            "lead_median": statistics.median(leads) if leads else math.nan,
            "lead_iqr": (float(np.percentile(leads, 25)), float(np.percentile(leads, 75))) if leads else (math.nan,) * 2}


def labels(n: int, onsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-step label (a spike within the next HORIZON steps) and the steps kept (not aftermath)."""
    label, keep = np.zeros(n, bool), np.ones(n, bool)
    for s in onsets:
        label[max(0, s - HORIZON):s] = True
    for s in onsets:
        keep[s:s + HORIZON + 1] = False
    return label, keep


def evaluate(traces: list[dict], detector: str, threshold: float, levels=None) -> dict:
    return pooled([score_run(score_series(t, detector, levels) >= threshold, prepared(t)["_onsets"]) for t in traces])


def pr_auc(traces: list[dict], detector: str, levels=None) -> float:
    ys, ss = [], []
    for trace in traces:
        s = score_series(trace, detector, levels)
        label, keep = labels(len(s), prepared(trace)["_onsets"])
        ys.append(label[keep])
        ss.append(np.clip(s[keep], -1e12, 1e12))
    y = np.concatenate(ys)
    return float(average_precision_score(y, np.concatenate(ss))) if y.any() else math.nan


def best(candidates, objective):
    """The candidate with the largest recall at ≤ 1 false alarm per 1000 steps (ties: fewer false alarms)."""
    top, top_key = None, None
    for c in candidates:
        r = objective(c)
        if not r["fa_per_1000"] <= 1.0:
            continue
        key = (r["recall"] if r["recall"] == r["recall"] else 0.0, -r["fa_per_1000"])
        if top_key is None or key > top_key:
            top, top_key = c, key
    return top


def calibrate(traces: list[dict]) -> dict:
    grids = {"update_sharpness_ratio": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5,
                                        2.0, 3.0, math.inf],
             "update_rms_ratio": [1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, math.inf],
             "grad_norm_zscore": [2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, math.inf]}
    combos = [dict(zip(SCORES, c)) for c in itertools.product(*grids.values())]
    levels = best(combos, lambda lv: evaluate(traces, "risk", 1.0, lv))
    thresholds = {}
    for detector in ("loss_rule", *SCORES):
        values = np.concatenate([score_series(t, detector) for t in traces])
        values = np.unique(np.quantile(values[np.isfinite(values)], np.linspace(0.5, 1.0, 400)))
        thresholds[detector] = best(values.tolist(), lambda v: evaluate(traces, detector, v))
    return {"levels": levels, "thresholds": thresholds}


# -- the report -----------------------------------------------------------------------------------
def line(name: str, r: dict, auc: float) -> str:
    lo, hi = r["lead_iqr"]
    return (f"{name:<44} recall {r['recall']:.2f} ({r['warned']}/{r['spikes']})  precision {r['precision']:.2f}  "
            f"FA/1000 {r['fa_per_1000']:.2f}  lead {r['lead_median']:.0f} [{lo:.0f}, {hi:.0f}]  PR-AUC {auc:.3f}")


def report(traces: list[dict], calibration: dict) -> list[str]:
    out = []
    levels, thresholds = calibration["levels"], calibration["thresholds"]
    out.append(f"calibrated levels (seeds 0-9): {levels}")
    out.append("calibrated baseline thresholds: " + ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} none"
                                                              for k, v in thresholds.items()))
    for setting in (None, *SETTINGS):
        held = [t for t in traces if t["seed"] in HELD_OUT and (setting is None or t["setting"] == setting)]
        if not held:
            continue
        out.append(f"\n== held-out seeds 10-19, {setting or 'all settings'}: {len(held)} runs, "
                   f"{sum(len(t['loss']) for t in held)} steps, {sum(t['diverged'] is not None for t in held)} diverged")
        if levels is not None:
            out.append(line("InstabilityWarning (risk, calibrated levels)", evaluate(held, "risk", 1.0, levels),
                            pr_auc(held, "risk", levels)))
        from lightning_dyn.dynamics.early_warning import DEFAULT_LEVELS
        out.append(line("InstabilityWarning (risk, shipped default levels)", evaluate(held, "risk", 1.0, DEFAULT_LEVELS),
                        pr_auc(held, "risk", DEFAULT_LEVELS)))
        names = {"loss_rule": "loss rule (SpikeDetection), rtol", "grad_norm_zscore": "grad-norm z-score (OLMo)",
                 "update_rms_ratio": "Adam update-RMS ratio", "update_sharpness_ratio": "update sharpness ratio alone"}
        defaults = {"loss_rule": 2.0, "grad_norm_zscore": 6.0}
        for detector, name in names.items():
            auc = pr_auc(held, detector)
            if thresholds.get(detector) is not None:
                out.append(line(f"{name} calibrated {thresholds[detector]:.3g}",
                                evaluate(held, detector, thresholds[detector]), auc))
            if detector in defaults:
                out.append(line(f"{name} default {defaults[detector]:g}", evaluate(held, detector, defaults[detector]), auc))
    return out


def actions(traces: list[dict], levels: dict) -> list[str]:
    out = ["\n== actions on the held-out runs that diverged without one"]
    diverged = [t for t in traces if t["seed"] in HELD_OUT and t["diverged"] is not None]
    tally = {"skip": 0, "reduce_lr": 0}
    for t in diverged:
        stable = run(t["setting"], t["seed"], lr_scale=0.1)
        row = [f"{t['setting']} seed {t['seed']}: diverged at {t['diverged']}; lr/10: "
               f"{'diverged' if stable['diverged'] is not None else 'final %.3f' % np.mean(stable['loss'][-20:])}"]
        for action in tally:
            r = run(t["setting"], t["seed"], action=action, levels=levels)
            finished = r["diverged"] is None and len(r["loss"]) == r["steps"]
            tally[action] += finished
            extra = f"{r['skips']} skips" if action == "skip" else f"lr factor {r['lr_factor']:.3g}"
            row.append(f"{action}: {'finished, final %.3f' % np.mean(r['loss'][-20:]) if finished else 'did not finish'}"
                       f" ({extra})")
        out.append("; ".join(row))
    out.append(f"finished: skip {tally['skip']}/{len(diverged)}, reduce_lr {tally['reduce_lr']}/{len(diverged)}")
    return out


def overhead(repeats: int, gpt2_steps: int) -> list[str]:
    """Time inside the callback against the fit: the GPT setting (seed 0 at a tenth of its rate, 200
    steps, interleaved repeats), and a 10.5M-parameter GPT-2 from a ``transformers`` config as a user
    attaches the callback (``benchmarks/finite_difference.py``'s model: 8 layers, width 320, AdamW,
    batches of 8 × 64 tokens) for ``gpt2_steps`` steps."""
    out = ["\n== overhead: gpt_adamw seed 0, lr/10, 200 steps, interleaved repeats"]
    plain, observed, inside = [], [], []
    for _ in range(repeats):
        for with_cb in (False, True):
            model, _ = build("gpt_adamw", 0, 0.1)
            cbs = [InstabilityWarning()] if with_cb else []
            seconds = fit_seconds(model, cbs, 200)
            (observed if with_cb else plain).append(seconds)
            if with_cb:
                inside.append(cbs[0].total_seconds)
    p, o, i = statistics.median(plain), statistics.median(observed), statistics.median(inside)
    out.append(f"plain {p:.2f} s, with InstabilityWarning {o:.2f} s: {100 * (o - p) / p:+.1f}% wall; "
               f"inside the callback {i:.3f} s = {100 * i / p:.1f}% of training ({1000 * i / 200:.2f} ms a step); "
               "0 extra gradient evaluations (no forward or backward pass: signals from the step's own gradient "
               "and the optimizer's state)")
    if gpt2_steps:
        from finite_difference import LanguageModel, gpt, tokens

        def gpt2_run(callbacks):
            module = LanguageModel(gpt(8, 320))
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens(512, 1)), batch_size=8,
                                                 shuffle=True, generator=torch.Generator().manual_seed(0))
            return fit_seconds(module, callbacks, gpt2_steps, loader)

        plain = gpt2_run([])
        warning = InstabilityWarning()
        with_cb = gpt2_run([warning])
        out.append(f"GPT-2 10.5M (transformers config, AdamW, 8 × 64 tokens), {gpt2_steps} steps: plain {plain:.1f} s "
                   f"({1000 * plain / gpt2_steps:.0f} ms a step), with InstabilityWarning {with_cb:.1f} s; inside the "
                   f"callback {warning.total_seconds:.2f} s = {1000 * warning.total_seconds / gpt2_steps:.1f} ms a step "
                   f"= {100 * warning.total_seconds / plain:.1f}% of training "
                   f"({warning.signals.stability.curvature.sampled_coordinates:,} of "
                   f"{sum(p.numel() for p in warning._params):,} coordinates sampled)")
    return out


def fit_seconds(model, callbacks, steps, loader=None) -> float:
    trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sections", default="runs,evaluate,actions,overhead",
                        help="runs (missing ones, saved to $EARLY_WARNING_TRACES), evaluate, actions, overhead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpt2-steps", type=int, default=30, help="steps of the GPT-2 overhead row (0: none)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    traces = json.loads(TRACES.read_text()) if TRACES.exists() else []
    if "runs" in sections:
        done = {(t["setting"], t["seed"]) for t in traces}
        for setting in args.settings.split(","):
            for seed in range(args.seeds):
                if (setting, seed) in done:
                    continue
                trace = run(setting, seed)
                traces.append(trace)
                TRACES.write_text(json.dumps([{k: v for k, v in t.items() if not k.startswith("_")} for t in traces]))
                print(f"{setting} seed {seed}: {len(trace['loss'])} steps, diverged {trace['diverged']}, "
                      f"spikes {spikes(trace['loss'])}, {trace['seconds']:.1f} s", flush=True)
    calibration = calibrate([t for t in traces if t["seed"] in CALIBRATION]) if traces else {"levels": None}
    if "evaluate" in sections:
        print("\n".join(report(traces, calibration)), flush=True)
    if "actions" in sections and calibration["levels"] is not None:
        print("\n".join(actions(traces, calibration["levels"])), flush=True)
    if "overhead" in sections:
        print("\n".join(overhead(args.repeats, args.gpt2_steps)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
