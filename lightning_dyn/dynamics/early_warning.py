"""One alarm from the per-step signals: the instability risk.

Each raw signal of :mod:`~lightning_dyn.dynamics.warning_signals` becomes a *score* on a scale of
its own, then is divided by its *level*, the score at which it alone raises the alarm:

* ``update_sharpness_ratio`` — the ratio ``ρ`` itself (1 is the optimizer's threshold);
* ``update_rms_ratio`` — Adam's update RMS over its running median of the previous ``window``
  steps (1 is the steady state);
* ``grad_norm_zscore`` — ``(‖g_t‖ − mean) / std`` over the previous ``window`` steps (the rule
  OLMo-core skips steps on, with its level 6).

The risk is the largest of them,

    risk_t = max_k score_k(t) / level_k,

so ``risk ≥ 1`` is the alarm and the signals with ``score_k ≥ level_k`` are those that raised it; a
non-finite gradient norm is ``risk = inf``. The running statistics need ``warmup`` steps before
their scores exist; a signal absent at a step (no secant yet, not Adam) does not count. Alarms at
most ``merge`` steps apart belong to one *episode*: an event, a warning, an action each. The
default levels were calibrated on held-out runs with a fixed protocol (the early-warning page of
the docs, ``benchmarks/early_warning.py``).

:func:`loss_spikes` is the ground truth that calibration and evaluation use, from the loss alone:
a spike is a robust z-score ≥ 6 of log-loss against the previous 100 steps (median and
1.4826 × MAD), a run of such steps (gaps up to 20 merged) counted once at its first step;
divergence — a non-finite loss or one above 10× its running maximum — is a spike too.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

#: the scores, and the raw signal each is computed from
SCORES: dict[str, str] = {
    "update_sharpness_ratio": "update_sharpness_ratio",
    "update_rms_ratio": "update_rms",
    "grad_norm_zscore": "grad_norm",
}

#: the alarm level of each score, calibrated on seeds 0–9 of ``benchmarks/early_warning.py`` (the
#: largest recall at ≤ 1 false alarm per 1000 steps): on mini-batch runs the update sharpness is
#: biased upward by the batch noise, hence a level above the threshold itself (1)
DEFAULT_LEVELS: dict[str, float] = {
    "update_sharpness_ratio": 1.25,
    "update_rms_ratio": 2.5,
    "grad_norm_zscore": 5.0,
}


@dataclass
class Risk:
    """The detector's verdict on one step."""

    step: int
    #: ``max_k score_k / level_k`` (0 when no score exists yet; ``inf`` for a non-finite gradient)
    value: float
    #: the scores that exist at this step
    scores: dict[str, float] = field(default_factory=dict)
    #: the scores at or beyond their level (``"nonfinite_gradient"`` for a non-finite norm)
    raised_by: list[str] = field(default_factory=list)
    #: the first alarm of an episode (more than ``merge`` steps after the last alarm)
    new_episode: bool = False

    @property
    def alarm(self) -> bool:
        return self.value >= 1.0


class InstabilityDetector:
    """Scores, risk and episodes (module docstring); its state is the running windows.

    Args:
        levels: the alarm level of each score (missing keys: ``DEFAULT_LEVELS``; a level of
            ``inf`` turns a score off).
        window: steps in the running statistics of ``update_rms`` and ``grad_norm``.
        warmup: values a running statistic needs before its score exists.
        merge: alarms at most this many steps apart are one episode.
    """

    def __init__(self, levels: Optional[Mapping[str, float]] = None, *, window: int = 128, warmup: int = 20,
                 merge: int = 20) -> None:
        unknown = set(levels or {}) - set(SCORES)
        if unknown:
            raise ValueError(f"unknown scores {sorted(unknown)}; known: {list(SCORES)}")
        self.levels = {**DEFAULT_LEVELS, **(levels or {})}
        if any(not (level > 0) for level in self.levels.values()):
            raise ValueError(f"levels must be positive (inf turns a score off), got {self.levels}")
        if not (window >= 2 and 1 <= warmup <= window and merge >= 1):
            raise ValueError(f"need window ≥ 2, 1 ≤ warmup ≤ window, merge ≥ 1; got {window}, {warmup}, {merge}")
        self.window, self.warmup, self.merge = window, warmup, merge
        self.recent: dict[str, deque[float]] = {"update_rms": deque(maxlen=window), "grad_norm": deque(maxlen=window)}
        self.last_alarm: Optional[int] = None
        self.episodes = 0

    def scores(self, signals: Mapping[str, float]) -> dict[str, float]:
        """The scores of one step's raw signals, against the windows of the steps before it."""
        scores: dict[str, float] = {}
        ratio = signals.get("update_sharpness_ratio")
        if ratio is not None and math.isfinite(ratio):
            scores["update_sharpness_ratio"] = ratio
        rms, recent = signals.get("update_rms"), self.recent["update_rms"]
        if rms is not None and math.isfinite(rms) and len(recent) >= self.warmup:
            median = statistics.median(recent)
            if median > 0:
                scores["update_rms_ratio"] = rms / median
        norm, recent = signals.get("grad_norm"), self.recent["grad_norm"]
        if norm is not None and math.isfinite(norm) and len(recent) >= self.warmup:
            mean = statistics.fmean(recent)
            std = statistics.pstdev(recent, mean)
            scores["grad_norm_zscore"] = (norm - mean) / std if std > 0 else 0.0
        return scores

    def update(self, step: int, signals: Mapping[str, float]) -> Risk:
        """Score step ``step``, then add its finite signals to the windows."""
        norm = signals.get("grad_norm")
        if norm is not None and not math.isfinite(norm):
            risk = Risk(step, math.inf, {}, ["nonfinite_gradient"])
        else:
            scores = self.scores(signals)
            relative = {name: score / self.levels[name] for name, score in scores.items()}
            value = max(relative.values(), default=0.0)
            risk = Risk(step, value, scores, [name for name, r in relative.items() if r >= 1.0])
        for name, recent in self.recent.items():
            value = signals.get(name)
            if value is not None and math.isfinite(value):
                recent.append(value)
        if risk.alarm:
            risk.new_episode = self.last_alarm is None or step - self.last_alarm > self.merge
            self.episodes += risk.new_episode
            self.last_alarm = step
        return risk

    def state_dict(self) -> dict[str, Any]:
        return {"recent": {k: list(v) for k, v in self.recent.items()}, "last_alarm": self.last_alarm,
                "episodes": self.episodes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, values in state["recent"].items():
            self.recent[name] = deque(values, maxlen=self.window)
        self.last_alarm, self.episodes = state["last_alarm"], state["episodes"]


def alarm_episodes(risk: Sequence[tuple[int, float]], merge: int = 20) -> list[tuple[int, int]]:
    """The (first, last) steps of the runs of ``risk ≥ 1`` in a ``(step, risk)`` series, alarms at
    most ``merge`` steps apart merged (the detector's episodes)."""
    episodes: list[list[int]] = []
    for step, value in risk:
        if value >= 1.0:
            if episodes and step - episodes[-1][1] <= merge:
                episodes[-1][1] = step
            else:
                episodes.append([step, step])
    return [(a, b) for a, b in episodes]


def divergence_step(losses: Sequence[float], *, factor: float = 10.0) -> Optional[int]:
    """The first step whose loss is non-finite or above ``factor`` × the running maximum of the
    steps before it (``None``: the run did not diverge)."""
    running = -math.inf
    for t, loss in enumerate(losses):
        if not math.isfinite(loss) or (running > 0 and loss > factor * running):
            return t
        running = max(running, loss)
    return None


def loss_spikes(losses: Sequence[float], *, z: float = 6.0, history: int = 100, min_history: int = 20,
                merge: int = 20, divergence_factor: float = 10.0) -> list[int]:
    """The onsets of loss spikes (module docstring): steps ``t`` with
    ``(log L_t − median) / (1.4826 · MAD) ≥ z`` over the previous ``history`` steps (at least
    ``min_history`` of them), a run of such steps with gaps up to ``merge`` counted at its first
    step, and the divergence step (:func:`divergence_step`) — the series is read up to it."""
    diverged = divergence_step(losses, factor=divergence_factor)
    end = len(losses) if diverged is None else diverged
    logs = [math.log(max(float(loss), 1e-300)) for loss in losses[:end]]
    above = []
    for t in range(min_history, end):
        past = logs[max(0, t - history):t]
        median = statistics.median(past)
        mad = 1.4826 * statistics.median(abs(x - median) for x in past)
        if mad > 0 and (logs[t] - median) / mad >= z:
            above.append(t)
    if diverged is not None:
        above.append(diverged)
    onsets: list[int] = []
    last: Optional[int] = None
    for t in above:
        if last is None or t - last > merge:
            onsets.append(t)
        last = t
    return onsets
