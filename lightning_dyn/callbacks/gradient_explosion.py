"""GradientExplosionMonitor: gradient norms through depth, and guards that skip or stop cleanly.

Runs in ``on_before_optimizer_step`` — after AMP unscaling, before gradient clipping, hence the
``_preclip`` in the tag names. Every optimizer step costs one fused reduction on the device
(``torch._foreach_norm`` over the gradients) kept there; steps are read back and inspected at the
logged steps (``every_n_steps``), or at every step when ``action`` must decide before the update
(``"skip"``, ``"stop"``, ``"raise"``: one scalar read back, and one all-reduce under DDP, per step).

Logged: ``dyn/grad_norm_preclip`` — the norm of the global gradient (under DDP the
gradients are already all-reduced here) — and its running median ``dyn/grad_norm_preclip_median``;
per layer ``dyn/grad_norm_preclip/<layer>`` and ``dyn/grad_weight_ratio_preclip/<layer>``
(``‖∂L/∂W‖/‖W‖``); at the outputs of the model's blocks (:func:`find_blocks`)
``dyn/backprop_signal/<block>`` = ``‖∂L/∂h_l‖`` of the global loss and its per-layer Lyapunov
exponent ``dyn/backprop_lyapunov`` = −slope of ``log‖∂L/∂h_l‖`` over depth (``½ log χ1`` in the
mean-field limit; positive: gradients grow toward the input); ``dyn/grad_events`` and
``dyn/grad_skips`` so far. TensorBoard also gets a custom-scalar layout, a histogram of the
per-layer norms and, every ``figure_every_n_steps``, the depth profile as a figure.

Detections (:class:`GradientDetector`): a non-finite loss, non-finite gradients, a spike above
``max(threshold, factor × running median)``, and ``|dyn/backprop_lyapunov| > max_growth`` (checked
at the logged steps, where the profile is measured). Each is an event ``{"step", "event", "layer",
"value"}`` in ``callback.events`` (checkpointed). Actions: ``"none"`` records it, ``"warn"`` also
warns, ``"skip"`` drops the update on every rank — gradients set to ``None`` so the optimizer
leaves parameters and its state (momentum, Adam moments and step count) untouched, and buffers
the step's forward pass changed (BatchNorm running statistics) restored — ``"stop"`` skips it
and stops training on every rank, ``"raise"`` raises :class:`GradientExplosionError` on every
rank. Lightning's own counters (``global_step``, step-wise LR schedulers) still advance on a
skipped step. After ``max_consecutive_skips`` skips in a row training stops with a message.

Several optimizers (a GAN's generator and discriminator, manual optimization): each optimizer
step is its own step here — its norms are over the gradients of the parameters *that* optimizer
steps (the other network's leftover ``.grad`` is not counted), it has its own running median, and
a skip drops that optimizer's update alone. The first optimizer's series keeps the tags above;
optimizer ``i ≥ 1`` logs ``dyn/grad_norm_preclip_optimizer_<i>`` and its median
``dyn/grad_norm_preclip_median_optimizer_<i>``; the per-layer series hold each layer's norm from
the last step of the optimizer that steps it.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from typing import Any, Literal, Optional

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..curvature.probe import trainable_signature
from ..curvature.sharded import is_sharded, local
from ..dynamics.backprop_signal import BackpropSignal, find_blocks
from ..dynamics.spike_detection import GradientDetector, GradientStep
from ..dynamics.signal_propagation import backprop_lyapunov, local_growth
from .base import DynamicsCallback, Measurement
from .validation import check_choice, check_positive, check_positive_int
from .compat import ConfigurationError
from .figures import add_figure, depth_profile_figure
from .optimizers import stepped_parameters
from .update_skip import UpdateSkip

Action = Literal["none", "warn", "skip", "stop", "raise"]
ACTIONS: tuple[str, ...] = ("none", "warn", "skip", "stop", "raise")
DECIDING = ("skip", "stop", "raise")
MONITORABLE = ("dyn/grad_norm_preclip", "dyn/backprop_lyapunov", "dyn/grad_events", "dyn/grad_skips")


class GradientExplosionError(RuntimeError):
    """Raised on every rank by ``action="raise"``."""


class GradientExplosionMonitor(DynamicsCallback):
    """Gradient norms per layer, backprop growth through depth, and guards against explosion.

    All arguments are keyword-only.

    Args:
        every_n_steps: log (and inspect, for ``"none"``/``"warn"``) every this many optimizer steps.
            Default 50, as the curvature callbacks: the norms cost one fused reduction per step
            whatever the cadence; logging every step costs Lightning more than the measurement.
        action: ``"none"`` (default: log only), ``"warn"``, ``"skip"``, ``"stop"`` or ``"raise"`` (module docstring).
        threshold: absolute bound on the total gradient norm (``None``: none).
        factor: relative bound, total > ``factor`` × running median (``None``: none); > 1.
        window: steps in the running median.
        warmup: finite steps needed before the relative bound applies.
        max_growth: bound on ``|dyn/backprop_lyapunov|`` per block (``None``: none).
        max_consecutive_skips: stop training after this many skipped steps in a row.
        blocks: names of the submodules whose outputs are the ``h_l`` (default: found automatically
            — residual/transformer blocks, the layers of the largest ``nn.Sequential``/``nn.ModuleList``).
        figure_every_n_steps: depth-profile figure at the first profile, at logged steps that are
            multiples of this (a multiple of ``every_n_steps``; default ten times it), and at fit end.
        at_fit_end: also log the last optimizer step.
        seed: accepted so every callback takes the same common arguments; the monitor draws nothing
            at random, so it changes nothing.
    """

    progress_bar_tag = None
    cost_unit = None
    layout_category = "gradients (GradientExplosionMonitor)"

    def __init__(
        self,
        *,
        every_n_steps: int = 50,
        action: Action = "none",
        threshold: Optional[float] = None,
        factor: Optional[float] = 10.0,
        window: int = 100,
        warmup: int = 10,
        max_growth: Optional[float] = None,
        max_consecutive_skips: int = 10,
        blocks: Optional[list[str]] = None,
        figure_every_n_steps: Optional[int] = None,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        check_choice("action", action, ACTIONS, renamed={"log": "none"})
        check_positive("threshold", threshold, optional=True)
        check_positive("factor", factor, above=1.0, optional=True)
        check_positive("max_growth", max_growth, optional=True)
        check_positive_int("window", window)
        check_positive_int("warmup", warmup)
        check_positive_int("max_consecutive_skips", max_consecutive_skips)
        if blocks is not None and (not isinstance(blocks, (list, tuple)) or not all(isinstance(b, str) for b in blocks)):
            raise ConfigurationError(f"`blocks` must be a list of submodule names, got {blocks!r}")
        figure_every_n_steps = figure_every_n_steps or 10 * every_n_steps
        check_positive_int("figure_every_n_steps", figure_every_n_steps)
        if figure_every_n_steps % every_n_steps:
            raise ConfigurationError(f"`figure_every_n_steps` ({figure_every_n_steps}) must be a multiple of "
                                     f"`every_n_steps` ({every_n_steps})")
        self.action, self.threshold, self.factor = action, threshold, factor
        self.window, self.warmup, self.max_growth = window, warmup, max_growth
        self.max_consecutive_skips, self.block_names = max_consecutive_skips, blocks
        self.figure_every_n_steps = figure_every_n_steps
        self.skips = 0
        self.consecutive_skips = 0
        #: one detector per optimizer (its own running median), in ``trainer.optimizers`` order
        self.detectors: list[GradientDetector] = []
        self.signal: Optional[BackpropSignal] = None
        self._params: list[torch.nn.Parameter] = []
        self._trainable: tuple = ()
        self._norm_dtype = torch.float32
        #: steps not inspected yet: (step, parameter norms, loss) on the device, growth events
        self._pending: list[tuple[int, torch.Tensor, Optional[torch.Tensor], list[dict]]] = []
        self._loss: Optional[torch.Tensor] = None
        self._new_step = True
        #: drops a step's update on action "skip"/"stop"
        self.update_skip = UpdateSkip()
        self._weight_norms: Optional[torch.Tensor] = None
        #: the last inspected step of each optimizer
        self._last: dict[int, GradientStep] = {}
        #: per optimizer (by ``id``): its index and which of ``_params`` it steps
        self._stepped: dict[int, tuple[int, list[bool]]] = {}
        self._last_profile: Optional[tuple[int, np.ndarray, float]] = None
        self._drew_profile = False
        #: the running-median window of each optimizer (checkpointed; the detectors work on them);
        #: ``recent`` is the first optimizer's
        self.windows: list[deque[float]] = [deque(maxlen=window)]

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        self._derive(pl_module)
        if self.action in ("skip", "stop"):
            self.update_skip.prepare(pl_module)

    def layout(self) -> dict[str, list[str]]:
        charts = {"total gradient norm before clipping, and its running median":
                  ["dyn/grad_norm_preclip", "dyn/grad_norm_preclip_median"]}
        if self.signal is not None:  # a depth profile needs two blocks
            charts["backprop Lyapunov exponent per block (0: edge of chaos; > 0: exploding toward the input)"] = [
                "dyn/backprop_lyapunov"]
        charts["events and skipped steps"] = ["dyn/grad_events", "dyn/grad_skips"]
        return charts

    def _derive(self, pl_module: Any) -> None:
        """The trainable parameters by layer (a shared parameter — tied embeddings — counted once,
        in the first module that holds it) and the blocks; again whenever fine-tuning changes
        which parameters train."""
        layer_names, layer_of, params, seen = [], [], [], set()
        for name, module in pl_module.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
            if own:
                seen.update(id(p) for p in own)
                layer_names.append(name or "(root)")
                layer_of += [len(layer_names) - 1] * len(own)
                params += own
        if not params:
            raise ConfigurationError("GradientExplosionMonitor: the model has no parameters that receive gradients")
        self._params = params
        self._trainable = trainable_signature(pl_module)
        shards = [p for p in params if is_sharded(p)]
        self._shard_group = shards[0].device_mesh.get_group() if shards else None
        # built once, on the parameters' device: no host-to-device copy in the per-step norm
        self._shard_mask = torch.tensor([is_sharded(p) for p in params], device=params[0].device)
        self._norm_dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        try:
            blocks = find_blocks(pl_module, self.block_names)
        except ValueError as err:
            raise ConfigurationError(f"GradientExplosionMonitor(blocks=...): {err}") from None
        if len(blocks) < 2 and self.signal is None:
            rank_zero_warn("GradientExplosionMonitor: fewer than two blocks found, so no depth profile "
                           "(dyn/backprop_lyapunov); name them with `blocks=`")
        if self.signal is not None:
            self.signal.detach()
        self.signal = BackpropSignal(blocks) if len(blocks) >= 2 else None
        self._layer_of, self._layer_names = layer_of, layer_names
        self.detectors = [self._detector(window) for window in self.windows]
        self._stepped = {}

    @property
    def recent(self) -> deque[float]:
        """The first optimizer's running-median window."""
        return self.windows[0]

    def _detector(self, window: deque[float]) -> GradientDetector:
        return GradientDetector(self._layer_of, self._layer_names, threshold=self.threshold, factor=self.factor,
                                warmup=self.warmup, recent=window)

    def _optimizer_index(self, trainer: Any, optimizer: Any) -> tuple[int, list[bool]]:
        """The optimizer's index in ``trainer.optimizers`` and which of ``_params`` it steps (cached)."""
        known = self._stepped.get(id(optimizer))
        if known is None:
            index = next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), 0)
            stepped = {id(p) for p in stepped_parameters(optimizer)}
            known = self._stepped[id(optimizer)] = (index, [id(p) in stepped for p in self._params])
            while len(self.windows) <= index:
                self.windows.append(deque(maxlen=self.window))
                self.detectors.append(self._detector(self.windows[-1]))
        return known

    def _follow_trainable(self, pl_module: Any) -> None:
        """Fine-tuning unfroze or froze parameters: inspect what was recorded, then re-derive."""
        if trainable_signature(pl_module) == self._trainable:
            return
        if self._pending:
            self._inspect_pending()
        rank_zero_info("GradientExplosionMonitor: the trainable parameters changed; layers and blocks re-derived")
        self._derive(pl_module)

    def _scheduled(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    # -- every optimizer step -------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not self._new_step:
            return  # a later micro-batch of an accumulated step
        self._new_step = False
        self._follow_trainable(pl_module)
        self.update_skip.snapshot()
        if self.signal is not None and self._scheduled(trainer.global_step + 1):
            self.signal.attach()

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        loss = loss.detach()
        self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if not self.detectors:
            return
        step = trainer.global_step + 1
        self._new_step = True
        device = self._params[0].device
        index, stepped = self._optimizer_index(trainer, optimizer)
        norms = self._norms([p.grad if mine else None for p, mine in zip(self._params, stepped)], device)
        loss, self._loss = self._loss, None  # None: no backward went through Lightning (loss unknown)
        growth: list[dict] = []
        if self._scheduled(step):
            self._weight_norms = self._norms(self._params, device)
            if self.signal is not None and self.signal.attached:
                growth = self._capture_profile(trainer, step, device)
        if self.action not in DECIDING:
            self._pending.append((step, norms, loss, growth, index))
            return
        events = self._inspect(index, [step], norms.cpu().numpy(), [None if loss is None else float(loss)], growth)
        if self.agree(trainer, bool(events)):
            self._act(trainer, step, events, stepped)
        else:
            self.consecutive_skips = 0

    def _capture_profile(self, trainer: Any, step: int, device: torch.device) -> list[dict]:
        """``‖∂L/∂h_l‖`` of the global loss at this step and its exponent; a growth event if beyond ``max_growth``."""
        assert self.signal is not None
        self.signal.detach()
        squares = self.signal.squared_norms(device)
        if trainer.world_size > 1:  # L is the mean over ranks of the local losses
            squares = trainer.strategy.reduce(squares, reduce_op="sum") / trainer.world_size**2
        norms = squares.sqrt().cpu().numpy()
        rate = backprop_lyapunov(norms)
        self._last_profile = (step, norms, rate)
        if self.max_growth is None or not math.isfinite(rate) or abs(rate) <= self.max_growth:
            return []
        local = np.abs(local_growth(norms))
        worst = int(np.nanargmax(local)) if np.isfinite(local).any() else 0
        return [{"step": step, "event": "backprop_growth", "layer": self.signal.names[worst], "value": rate,
                 "bound": self.max_growth}]

    def _norms(self, tensors: list[Optional[torch.Tensor]], device: torch.device) -> torch.Tensor:
        present = [t for t in tensors if t is not None]
        if not present:
            return torch.zeros(len(tensors), dtype=self._norm_dtype, device=device)
        values = torch.stack(torch._foreach_norm([local(t.detach()) for t in present], 2, dtype=self._norm_dtype))
        if self._shard_group is not None:  # sharded training: a rank holds a shard of each sharded tensor
            sharded = self._shard_mask.to(values.device)
            if len(present) != len(tensors):
                sharded = sharded[[i for i, t in enumerate(tensors) if t is not None]]
            squares = values.square()
            summed = torch.where(sharded, squares, torch.zeros_like(squares))
            torch.distributed.all_reduce(summed, group=self._shard_group)
            values = torch.where(sharded, summed, squares).sqrt()
        if len(present) == len(tensors):
            return values
        out = torch.zeros(len(tensors), dtype=self._norm_dtype, device=device)
        out[[i for i, t in enumerate(tensors) if t is not None]] = values
        return out

    def _inspect(self, index: int, steps: list[int], norms: np.ndarray, losses: list[Optional[float]],
                 growth: list[dict]) -> list[dict]:
        records, events = self.detectors[index].inspect(steps, norms, losses)
        self._last[index] = records[-1]
        events = sorted(events + growth, key=lambda e: e["step"])  # stable: within a step, detector order
        self.events.extend(events)
        return events

    def _act(self, trainer: Any, step: int, events: list[dict], stepped: list[bool]) -> None:
        what = "; ".join(_describe(e) for e in events) or "another rank detected an event"
        if self.action == "raise":
            raise GradientExplosionError(f"GradientExplosionMonitor: step {step}: {what}")
        self.update_skip.skip([p for p, mine in zip(self._params, stepped) if mine])  # this optimizer's alone
        self.skips += 1
        self.consecutive_skips += 1
        self.events.append({"step": step, "event": "skipped", "reason": what})
        if self.action == "stop" or self.consecutive_skips >= self.max_consecutive_skips:
            reason = (f"{self.consecutive_skips} consecutive steps skipped (max_consecutive_skips="
                      f"{self.max_consecutive_skips})" if self.action == "skip" else "action='stop'")
            trainer.should_stop = True
            self.events.append({"step": step, "event": "stopped", "reason": reason})
            rank_zero_warn(f"GradientExplosionMonitor: stopping training at step {step} ({reason}); last: {what}")

    # -- the logged steps -----------------------------------------------------------------------
    def _inspect_pending(self) -> list[dict]:
        """Inspect the steps recorded since the last inspection: one transfer for all of them."""
        device = self._params[0].device
        norms = torch.stack([n.to(device) for _, n, _, _, _ in self._pending]).cpu().numpy()
        known = [l.to(device) for _, _, l, _, _ in self._pending if l is not None]
        values = iter(torch.stack(known).double().cpu().tolist() if known else [])
        losses = [None if l is None else next(values) for _, _, l, _, _ in self._pending]
        events: list[dict] = []
        for index in sorted({i for *_, i in self._pending}):
            rows = [j for j, entry in enumerate(self._pending) if entry[4] == index]
            events += self._inspect(index, [self._pending[j][0] for j in rows], norms[rows], [losses[j] for j in rows],
                                    [e for j in rows for e in self._pending[j][3]])
        self._pending = []
        return sorted(events, key=lambda e: e["step"])

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        new_events = self._inspect_pending() if self._pending else []
        if self.action == "warn" and new_events:
            rank_zero_warn(f"GradientExplosionMonitor: {len(new_events)} event(s) up to step {trainer.global_step}; "
                           f"first: {_describe(new_events[0])}")
        step = trainer.global_step
        # the optimizer steps of this training step (several under manual optimization)
        current = {i: r for i, r in self._last.items() if r.step > self.last_step and r.step <= step}
        if not current:
            return Measurement({})
        weights = self._weight_norms if self._scheduled(step) and self._weight_norms is not None \
            else self._norms(self._params, self._params[0].device)
        layer_weights = np.sqrt(np.bincount(self._layer_of, weights=weights.cpu().numpy() ** 2,
                                            minlength=len(self._layer_names)))
        scalars: dict[str, float] = {}
        for i, record in sorted(current.items()):
            suffix = f"_optimizer_{i}" if i else ""
            scalars[f"dyn/grad_norm_preclip{suffix}"] = record.total
            scalars[f"dyn/grad_norm_preclip_median{suffix}"] = self.detectors[i].median()
        # each layer's norm from the optimizer that steps it (the others' norms there are 0)
        layer_norms = np.sqrt(sum(r.layer_norms ** 2 for r in current.values()))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(layer_weights > 0, layer_norms / layer_weights, math.nan)
        for name, g, ratio in zip(self._layer_names, layer_norms, ratios):
            scalars[f"dyn/grad_norm_preclip/{name}"] = float(g)
            scalars[f"dyn/grad_weight_ratio_preclip/{name}"] = float(ratio)
        scalars.update(self._depth_profile(step))
        scalars["dyn/grad_events"] = float(sum(e["event"] not in ("skipped", "stopped") for e in self.events))
        scalars["dyn/grad_skips"] = float(self.skips)
        # a non-finite step is already an event (nonfinite_loss/nonfinite_gradient): its values are left out
        finite = {tag: value for tag, value in scalars.items() if math.isfinite(value)}
        return Measurement(finite, extra={"layer_norms": layer_norms})

    def _depth_profile(self, step: int) -> dict[str, float]:
        if self._last_profile is None or self._last_profile[0] != step or self.signal is None:
            return {}
        _, norms, rate = self._last_profile
        scalars = {f"dyn/backprop_signal/{name}": float(v) for name, v in zip(self.signal.names, norms)}
        scalars["dyn/backprop_lyapunov"] = rate
        return scalars

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        writer = self.tensorboard(trainer)
        if writer is None:
            return
        layer_norms = result.extra.get("layer_norms")
        if layer_norms is not None and np.isfinite(layer_norms).all():
            writer.add_histogram("dyn/grad_norm_preclip_layers", layer_norms, global_step=step)
        profile = self._last_profile
        due = profile is not None and profile[0] == step and (step % self.figure_every_n_steps == 0
                                                               or not self._drew_profile)
        if profile is not None and (due or self.measuring_at_fit_end):
            assert self.signal is not None
            add_figure(writer, "dyn/backprop_depth_profile",
                       depth_profile_figure(profile[1], self.signal.names, step=profile[0]), profile[0])
            self._drew_profile = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_end(trainer, pl_module)
        if self.signal is not None:
            self.signal.detach()

    def may_write(self, tag: str) -> bool:
        return tag in MONITORABLE or tag.startswith("dyn/grad_norm_preclip_optimizer_")

    def monitorable(self, tag: str) -> bool:
        """The total norm, the exponent, events and skips go into the callback metrics; the median
        and the per-layer and per-block series (``dyn/<quantity>/<name>``) to the loggers only."""
        return tag in MONITORABLE or tag.startswith("dyn/grad_norm_preclip_optimizer_")

    # -- state ----------------------------------------------------------------------------------
    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, action=self.action)

    def extra_state(self) -> dict[str, Any]:
        return {
            "skips": self.skips,
            "consecutive_skips": self.consecutive_skips,
            "recent": list(self.recent),
            "windows": [list(w) for w in self.windows[1:]],
            "pending": [(s, n.cpu(), None if l is None else l.cpu(), g, i) for s, n, l, g, i in self._pending],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.skips, self.consecutive_skips = state["skips"], state["consecutive_skips"]
        self.recent.clear()
        self.recent.extend(state["recent"])
        for values in state.get("windows", []):  # several optimizers (absent before 1.2)
            self.windows.append(deque(values, maxlen=self.window))
            if self.detectors:
                self.detectors.append(self._detector(self.windows[-1]))
        self._pending = [entry if len(entry) == 5 else (*entry, 0) for entry in state["pending"]]


def _describe(event: dict) -> str:
    where = f" in {event['layer']}" if "layer" in event else ""
    bound = f" > {event['bound']:.4g}" if "bound" in event else ""
    return f"{event['event']}{where} at step {event['step']} (value {event.get('value', math.nan):.4g}{bound})"
