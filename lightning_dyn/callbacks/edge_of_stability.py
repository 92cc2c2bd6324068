"""EdgeOfStability: the sharpness against the optimizer's own stability threshold, live.

Each measurement compares the top eigenvalue of the Hessian the optimizer's stability is about with
``stability_threshold`` read from the optimizer at that step — a learning-rate scheduler moves it —
and classifies the regime (``below``, ``progressive_sharpening``, ``edge``, ``above``;
``lightning_dyn.dynamics.classify_regime``):

* plain SGD / heavy ball / Nesterov with one learning rate: ``λ_max(H)``, logged as
  ``dyn/eos_sharpness`` against ``2/η`` (and its momentum variants);
* Adam/AdamW/RMSprop: the preconditioned sharpness ``λ_max(P^{-1}H)``, logged as
  ``dyn/preconditioned_sharpness``; coordinates the optimizer has never updated (second moment
  exactly 0) are left out, and their number logged as ``dyn/never_updated_coordinates``
  (``lightning_dyn.dynamics.optimizer_thresholds``);
* parameter groups with different learning rates ``η_i`` (fine-tuning): ``λ_max(D H D)`` with
  ``D² = diag(η_i/η_max)`` (times ``P^{-1}`` for adaptive methods), against the threshold at
  ``η_max`` — the same units as with one group at ``η_max``, so the series does not jump when
  ``BackboneFinetuning`` adds the backbone's group.

For SGD (plain or with momentum) each measurement also estimates the *batch sharpness*
(Andreyev & Beneventano, arXiv:2412.20553; :mod:`lightning_dyn.curvature.minibatch_sharpness`)::

    BS = E_B [ g_Bᵀ H_B g_B / g_Bᵀ g_B ]

over ``batch_sharpness`` fresh mini-batches of the batch one optimizer step averages (the loader's
batch size × the world size × ``accumulate_grad_batches``), one Hessian–gradient product each: ``dyn/batch_sharpness`` (with ``_stderr`` and ``_ratio``
against the same threshold). Under mini-batch SGD it, not ``λ_max``, is what settles at ``2/η``,
with ``λ_max`` below it; under full-batch GD it is the Rayleigh quotient along the gradient, at most
``λ_max``. The regime is decided from the larger of the two — the one that reaches the threshold first,
the quantity at the edge in the run at hand — and the regime-change text names it.

Also ``dyn/stability_threshold``, ``dyn/sharpness_ratio``, ``dyn/regime`` (0–3 in that order);
the step at which each regime began is kept. The tags are this callback's own: ``HessianSharpness``
attached beside it keeps ``dyn/sharpness``. With several optimizers (a GAN) or one over a subset
of the parameters, the measurement is about one optimizer's step (``HessianSettings.optimizer``,
default the first): its threshold, over the parameters it steps. A learning rate of 0 (the end of
a cosine schedule) takes no step: the sharpness is logged, with no threshold, ratio or regime.
Optional action on reaching the edge or crossing it by ``margin``: ``"warn"``, ``"stop"`` (the
same decision on every rank) or ``"reduce_lr"`` by ``lr_factor`` — a reduction that lasts under
any scheduler (:class:`~lightning_dyn.callbacks.LearningRateReduction`: the factor is
applied around each optimizer step, checkpointed, and logged as ``dyn/lr_factor``). TensorBoard: a
custom-scalars layout (sharpness with threshold on one chart, the ratio with a line at 1) and, at
fit end, the figures of sharpness against threshold and of the Hessian's spectral density.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Optional

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..curvature import CurvatureOperator, PreconditionedOperator
from ..curvature.backends import product_backend
from ..curvature.minibatch_sharpness import BatchSharpnessSampler
from ..dynamics.edge_of_stability import REGIMES, classify_regime
from ..dynamics.optimizer_thresholds import UnsupportedOptimizer, check_supported, is_adaptive, stability_scaling
from ..dynamics.update_stability import UpdateStability, largest_rate
from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError
from .hessian_measurement import (HessianAttributes, HessianMeasurement, eigenvalue_histogram, eigenvalue_scalars,
                                  fit_end_density, fit_end_figures)
from .hessian_settings import HessianSettings
from .lr_reduction import LearningRateReduction
from .optimizers import optimizer_at, stepped_parameters
from .validation import check_choice, check_fraction
from .figures import series_figure


#: mini-batches a batch-sharpness estimate averages by default (mini-batch training)
DEFAULT_BATCH_SHARPNESS = 4


class EdgeOfStability(HessianAttributes, DynamicsCallback):
    """Sharpness against the optimizer's stability threshold, with the edge-of-stability regime.

    All arguments are keyword-only.

    Args:
        every_n_steps: measure every this many optimizer steps (default 50, as ``HessianSharpness``).
        hessian: which Hessian and how its top eigenpairs are computed (:class:`HessianSettings`:
            ``k``, ``tol``, ``max_matvecs``, ``probe_size``, ``probe_batches``, ``loss_fn``, ``mode``,
            ``backend``, ``cold_every``).
        action: what to do when ``act_on`` is reached: ``"none"`` (default: log only), ``"warn"``,
            ``"stop"``, ``"reduce_lr"``.
        act_on: ``"above"`` (ratio beyond ``1 + margin``) or ``"edge"`` (ratio ≥ ``1 − band``).
        margin: how far above the threshold counts as ``above``, in ``[0, 1)``.
        band: how far below the threshold counts as the ``edge``, in ``[0, 1)``.
        lr_factor: learning-rate multiplier for ``action="reduce_lr"``, in ``(0, 1)``.
        density_at_fit_end: at fit end also estimate the measured operator's spectral density for
            TensorBoard's figure (a light SLQ: 2 runs of 20 Lanczos steps — 40 products, about eight
            warm measurements; off by default, counted in the totals when on).
        update_sharpness: also log, every optimizer step, the curvature along the update the optimizer
            just took — the secant ``dᵀ(g_{t+1} − g_t)/dᵀd`` of consecutive training gradients
            (``dᵀ(g_{t+1} − g_t)/dᵀPd`` for adaptive methods), no product: ``dyn/update_sharpness``
            and ``dyn/update_sharpness_ratio`` against the threshold
            (:class:`~lightning_dyn.curvature.UpdateCurvature`, which says what it bounds). Default on.
        max_overhead: a share of training the measurements may spend, in ``(0, 1)`` (e.g. ``0.05``): a
            measurement due by the schedule is skipped while the products spent so far exceed that
            share of training's gradient evaluations (deterministic: counted in products, not
            seconds; :mod:`lightning_dyn.callbacks.budget`). ``None`` (default): the fixed schedule.
        batch_sharpness: mini-batches per measurement for the batch sharpness (SGD only; ``0``: off).
            Each costs one gradient and one Hessian–vector product on a training batch. ``None``
            (default): 4 under mini-batch training (about as many gradient evaluations as a warm ``λ_max``
            over the default probe set), off under full-batch training (where ``λ_max``
            is the quantity at the edge and the one batch would cost three gradient evaluations of
            the whole set a measurement; pass ``1`` to have it).
        at_fit_end: measure once more when training ends.
        seed: seed of the private generator (probe set, start vectors).
    """

    #: its own tags beside HessianSharpness's (the sharpness and eigenvalue tags are set at setup:
    #: ``dyn/eos_*`` for SGD, ``dyn/preconditioned_*`` for adaptive methods)
    sharpness_tag = "dyn/eos_sharpness"
    eig_tag = "dyn/eos_eig_{}"
    histogram_tag = "dyn/eos_top_eigenvalues"
    figure_tag = "dyn/eos_figure"
    density_tag = "dyn/eos_spectral_density"
    layout_category = "edge of stability (EdgeOfStability)"
    #: the progress bar shows how close the run is to its stability threshold
    progress_bar_tag = "dyn/sharpness_ratio"

    def __init__(
        self,
        *,
        every_n_steps: int = 50,
        hessian: HessianSettings = HessianSettings(),
        action: Literal["none", "warn", "stop", "reduce_lr"] = "none",
        act_on: Literal["above", "edge"] = "above",
        margin: float = 0.1,
        band: float = 0.1,
        lr_factor: float = 0.5,
        density_at_fit_end: bool = False,
        update_sharpness: bool = True,
        max_overhead: Optional[float] = None,
        batch_sharpness: Optional[int] = None,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        #: the probe set, loss, backend and the tracker of the top eigenpairs
        self.hessian_measurement = HessianMeasurement(hessian, seed=seed, max_overhead=max_overhead)
        self.hessian = hessian
        check_choice("action", action, ("none", "warn", "stop", "reduce_lr"), renamed={"log": "none"})
        check_choice("act_on", act_on, ("above", "edge"))
        check_fraction("margin", margin, closed_below=True)
        check_fraction("band", band, closed_below=True)
        check_fraction("lr_factor", lr_factor)
        self.action, self.act_on, self.margin, self.band, self.lr_factor = action, act_on, margin, band, lr_factor
        self.density_at_fit_end = density_at_fit_end
        self.density_runs, self.density_steps = 2, 20
        self.last_density: Optional[dict] = None
        self.regime_changes: list[dict[str, Any]] = []
        #: whether the measured operator is Adam's/RMSprop's P⁻¹H (decided with the optimizer, at setup)
        self.preconditioned = False
        self.sharpness_name = "sharpness λ_max(H)"
        self._threshold = float("nan")
        self._never_updated: Optional[int] = None
        #: the lasting learning-rate reduction of ``action="reduce_lr"`` (its factor is checkpointed)
        self.lr_reduction = LearningRateReduction()
        if not isinstance(update_sharpness, bool):
            raise ConfigurationError(f"`update_sharpness` must be a bool, got {update_sharpness!r}")
        #: the per-step secant curvature along the update against the threshold (``None``: off)
        self.update_stability: Optional[UpdateStability] = UpdateStability() if update_sharpness else None
        if batch_sharpness is not None and (isinstance(batch_sharpness, bool) or not isinstance(batch_sharpness, int)
                                            or batch_sharpness < 0):
            raise ConfigurationError(f"`batch_sharpness` must be a number of mini-batches (an int ≥ 0; 0: off; None: "
                                     f"4 under mini-batch training), got {batch_sharpness!r}")
        self._batch_sharpness_default = batch_sharpness is None
        #: the mini-batches of the batch sharpness and their private generator (``None``: off, or not SGD)
        self.batch_sharpness: Optional[BatchSharpnessSampler] = (
            BatchSharpnessSampler(DEFAULT_BATCH_SHARPNESS if batch_sharpness is None else batch_sharpness, seed=seed)
            if batch_sharpness != 0 else None)
        self._batch_size: Optional[int] = None

    def _optimizer(self, trainer: Any) -> Any:
        return optimizer_at(trainer, self.hessian.optimizer, "EdgeOfStability", required=True)

    def prepare(self, trainer: Any, pl_module: Any) -> None:
        optimizer = self._optimizer(trainer)
        try:
            check_supported(optimizer)
        except UnsupportedOptimizer as err:
            raise ConfigurationError(f"EdgeOfStability: {err}") from err
        if self.action == "reduce_lr":
            self.lr_reduction.attach(optimizer)
        name = "preconditioned" if is_adaptive(optimizer) else "eos"
        self.sharpness_tag = f"dyn/{name}_sharpness"
        self.eig_tag = f"dyn/{name}_eig_{{}}"
        self.histogram_tag = f"dyn/{name}_top_eigenvalues"
        self.preconditioned = name == "preconditioned"
        self.operator_name = "preconditioned Hessian P⁻¹H" if self.preconditioned else "Hessian"
        self.sharpness_name = "preconditioned sharpness λ_max(P⁻¹H)" if self.preconditioned else "sharpness λ_max(H)"
        self.hessian_measurement.prepare(trainer, pl_module, type(self).__name__)
        self._prepare_batch_sharpness(trainer)
        if self.update_stability is not None and self.hessian_measurement.sharded:
            rank_zero_info("EdgeOfStability: the per-step update sharpness is not computed under sharded training "
                           "(each rank holds a shard of the update); the measurements are")

    def _prepare_batch_sharpness(self, trainer: Any) -> None:
        """Keep the batch sharpness where it means something: SGD, a known batch size, no sharding."""
        if self.batch_sharpness is None:
            return
        loader = getattr(trainer, "train_dataloader", None)
        per_batch = getattr(loader, "batch_size", None)
        try:
            available = len(loader.dataset)
        except (AttributeError, TypeError):  # an iterable dataset: size unknown
            available = None
        # the batch one optimizer step's gradient averages: every rank's, every accumulated micro-batch's
        step_batch = (per_batch or 0) * trainer.world_size * int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        full_batch = bool(per_batch) and available is not None and step_batch >= available
        why = ("it is SGD's quantity (the optimizer is adaptive: its threshold is on the preconditioned sharpness)"
               if self.preconditioned else "the parameters are sharded" if self.hessian_measurement.sharded
               else "the train dataloader has no batch_size (a custom batch_sampler)" if not per_batch
               else "full-batch training, where λ_max is the quantity at the edge (pass batch_sharpness=1 for the "
                    "Rayleigh quotient along the gradient)" if full_batch and self._batch_sharpness_default else None)
        if why:
            rank_zero_info(f"EdgeOfStability: no batch sharpness: {why}")
            self.batch_sharpness = None
            return
        self._batch_size = step_batch

    def operator(self, trainer: Any, pl_module: Any) -> CurvatureOperator:
        """The measured operator at the current parameters: ``H``, or ``D H D`` (module docstring)."""
        return self._scaled(trainer, self.hessian_operator(trainer, pl_module))

    def _scaled(self, trainer: Any, op: CurvatureOperator) -> CurvatureOperator:
        """``H``, or ``D H D`` in the units of the largest learning rate (module docstring); sets the
        threshold of this step."""
        optimizer = self._optimizer(trainer)
        factor = self.lr_reduction.factor  # the rates the optimizer steps with: the schedule's × factor
        scaling = stability_scaling(optimizer, op.parameters, lr_scale=factor)
        self._never_updated = int(op.space.total(scaling.never_updated)) if scaling.preconditioned else None
        if scaling.scale is None:
            self._threshold = scaling.threshold
            return op
        # λ_max(D H D)/η_ref against threshold/η_ref, η_ref the largest learning rate: with one
        # group that is λ_max(P⁻¹H) against the table's threshold at η (rates all 0: η_ref = 1)
        eta = largest_rate(optimizer, factor)
        self._threshold = scaling.threshold / eta
        return PreconditionedOperator(op, scaling.scale / eta**0.5)

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        eig = self.hessian_measurement.top_eigenpairs(trainer, pl_module, type(self).__name__, self.generator,
                                                      transform=lambda op: self._scaled(trainer, op))
        values = eig.values.tolist()
        scalars = eigenvalue_scalars(values, self.sharpness_tag, self.eig_tag)
        result = Measurement(scalars, hvps=eig.num_matvecs, extra={"values": values, "converged": eig.converged})
        self.charge(eig.num_matvecs)
        if self.action == "reduce_lr":
            result.scalars["dyn/lr_factor"] = self.lr_reduction.factor
        if self._never_updated is not None:
            result.scalars["dyn/never_updated_coordinates"] = float(self._never_updated)
        result.extra["regime"] = None
        if self.batch_sharpness is not None:
            result.scalars.update(self._batch_sharpness(trainer, pl_module))
        if self._threshold == float("inf"):  # a learning rate of 0: no step, nothing to be unstable
            return result
        # the quantity at the edge: λ_max, or the batch sharpness where it is the larger
        tag = self.sharpness_tag
        if result.scalars.get("dyn/batch_sharpness", float("-inf")) > result.scalars[tag]:
            tag = "dyn/batch_sharpness"
        sharp = result.scalars[tag]
        series = [h[tag] for h in self.history if tag in h] + [sharp]
        regime = classify_regime(series, sharp / self._threshold, band=self.band, margin=self.margin)
        result.scalars.update({
            "dyn/stability_threshold": self._threshold,
            "dyn/sharpness_ratio": result.scalars[self.sharpness_tag] / self._threshold,
            "dyn/regime": float(REGIMES.index(regime)),
        })
        if "dyn/batch_sharpness" in result.scalars:
            result.scalars["dyn/batch_sharpness_ratio"] = result.scalars["dyn/batch_sharpness"] / self._threshold
        result.extra.update(regime=regime, edge_quantity=tag, edge_ratio=sharp / self._threshold)
        return result

    def _batch_sharpness(self, trainer: Any, pl_module: Any) -> dict[str, float]:
        """``dyn/batch_sharpness`` and its standard error over fresh mini-batches (module docstring)."""
        assert self.batch_sharpness is not None
        m = self.hessian_measurement
        estimate = self.batch_sharpness.measure(
            pl_module, m.loss, trainer.train_dataloader, batch_size=self._batch_size, mode=m.settings.mode,
            seed=self.seed, backend=m.backend, params=m.parameters(trainer, type(self).__name__))
        # a gradient and a product on one training batch each
        m.budget.charge(estimate.products * (1.0 + product_backend(m.backend).gradients_per_product))
        if estimate.num_batches == 0:
            return {}
        return {"dyn/batch_sharpness": estimate.value, "dyn/batch_sharpness_stderr": estimate.standard_error}

    def layout(self) -> dict[str, list[str]]:
        charts = {
            f"{self.sharpness_name} and the optimizer's stability threshold":
                [self.sharpness_tag, "dyn/stability_threshold"],
            "sharpness / threshold (1 = the threshold: the edge of stability; regime changes: Text tab)":
                ["dyn/sharpness_ratio"],
        }
        if self.batch_sharpness is not None:
            charts[f"{self.sharpness_name} and SGD's batch sharpness E_B[g_BᵀH_Bg_B/‖g_B‖²] against the threshold"] = [
                self.sharpness_tag, "dyn/batch_sharpness", "dyn/stability_threshold"]
            charts["batch sharpness / threshold (1: the edge of stochastic stability of mini-batch SGD)"] = [
                "dyn/batch_sharpness_ratio"]
        if self.preconditioned:
            charts["coordinates the optimizer has never updated (left out of P⁻¹H)"] = ["dyn/never_updated_coordinates"]
        if self.action == "reduce_lr":
            charts["learning-rate factor of action='reduce_lr' (× the scheduler's rate)"] = ["dyn/lr_factor"]
        return charts

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        eigenvalue_histogram(self, trainer, step, result.extra["values"])
        regime = result.extra["regime"]
        if regime is None:  # no threshold at this step (a learning rate of 0)
            return
        entered = not self.regime_changes or self.regime_changes[-1]["regime"] != regime
        if entered:
            self.regime_changes.append({"regime": regime, "step": step,
                                        "sharpness": result.scalars[self.sharpness_tag]})
        quantity = "batch sharpness" if result.extra["edge_quantity"] == "dyn/batch_sharpness" else "sharpness"
        writer = self.tensorboard(trainer)
        if writer is not None and entered:  # the regime is a category: told as text where it changes
            writer.add_text("dyn/regime_changes", f"step {step}: **{regime.replace('_', ' ')}** ({quantity} / "
                            f"threshold {result.extra['edge_ratio']:.3f})", global_step=step)
        triggered = regime == "above" or (self.act_on == "edge" and regime == "edge")
        if self.action != "none" and self.agree(trainer, triggered and entered):
            self._act(trainer, step, result.extra["edge_ratio"], quantity)

    def _act(self, trainer: Any, step: int, ratio: float, quantity: str = "sharpness") -> None:
        message = (f"EdgeOfStability: at step {step} the {quantity} is {ratio:.3f}× the optimizer's stability "
                   f"threshold ({self.act_on})")
        self.events.append({"step": step, "event": self.action, "ratio": ratio})
        if self.action == "warn":
            rank_zero_warn(message)
        elif self.action == "stop":
            rank_zero_warn(message + "; stopping")
            trainer.should_stop = True
        elif self.action == "reduce_lr":
            self.lr_reduction.reduce(self.lr_factor)
            rank_zero_warn(message + f"; learning rate multiplied by {self.lr_factor} (now "
                                     f"{self.lr_reduction.factor:.4g}× the scheduler's, from the next step)")

    # -- the per-step curvature along the update -------------------------------------------------
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """The secant along the last update, from this step's gradients (after AMP unscaling, before
        clipping: the loss's own gradient), logged at every step."""
        if self.update_stability is None or self.hessian_measurement.sharded or not self.batches:
            return
        measured = self._optimizer(trainer)
        if optimizer is not measured and getattr(optimizer, "optimizer", None) is not measured:
            return
        with self.charged():
            step = trainer.global_step
            observed = self.update_stability.observe(measured, stepped_parameters(measured), step,
                                                     lr_scale=self.lr_reduction.factor)
            if observed is None:
                return
            value, ratio = observed
            scalars = {"dyn/update_sharpness": value}
            if ratio == ratio:
                scalars["dyn/update_sharpness_ratio"] = ratio
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=step)

    def fit_end(self, trainer: Any, pl_module: Any) -> None:
        fit_end_density(self, trainer, pl_module, lambda: self.operator(trainer, pl_module), self.density_runs,
                        self.density_steps, self.density_at_fit_end)
        fit_end_figures(self, trainer)

    def fit_end_figure(self) -> Any:
        tags, labels = [self.sharpness_tag, "dyn/stability_threshold"], [self.sharpness_name,
                                                                         "the optimizer's stability threshold"]
        if any("dyn/batch_sharpness" in h for h in self.history):
            tags.insert(1, "dyn/batch_sharpness")
            labels.insert(1, "batch sharpness E_B[g_BᵀH_Bg_B/‖g_B‖²]")
        return series_figure(self.history, tags, labels=labels,
                             title=f"{self.sharpness_name} against the stability threshold",
                             ylabel="curvature (eigenvalue)")

    def density_marks(self) -> dict[str, float]:
        """Lines on the density figure: the sharpness measured last and the threshold."""
        last = next((h for h in reversed(self.history) if self.sharpness_tag in h), None)
        marks = {} if last is None else {f"λ_max measured at step {last['step']}": last[self.sharpness_tag]}
        last = next((h for h in reversed(self.history) if "dyn/stability_threshold" in h), None)
        if last is not None:
            marks["stability threshold"] = last["dyn/stability_threshold"]
        return marks

    def summary(self) -> str:
        """A plain-language account of the regimes met so far."""
        if not self.history:
            return "no measurement yet"
        first, last = self.history[0], self.history[-1]
        tag = self.sharpness_tag
        threshold = (f"threshold {last['dyn/stability_threshold']:.1f}" if "dyn/stability_threshold" in last
                     else "learning rate 0: no threshold")
        parts = [f"sharpness {first[tag]:.1f} at step {first['step']} → {last[tag]:.1f} "
                 f"at step {last['step']} ({threshold})"]
        if "dyn/batch_sharpness" in last:
            parts.append(f"batch sharpness {last['dyn/batch_sharpness']:.1f} at step {last['step']}")
        for change in self.regime_changes:
            parts.append(f"{change['regime'].replace('_', ' ')} from step {change['step']} "
                         f"(sharpness {change['sharpness']:.1f})")
        return "; ".join(parts)

    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, k=self.k, seed=self.seed, eos=True)

    def extra_state(self) -> dict[str, Any]:
        return {**self.hessian_measurement.state_dict(), "regime_changes": list(self.regime_changes),
                "update_curvature": None if self.update_stability is None else self.update_stability.state_dict(),
                "lr_reduction": self.lr_reduction.state_dict(),
                "batch_sharpness": None if self.batch_sharpness is None else self.batch_sharpness.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.hessian_measurement.load_state_dict(state)
        self.regime_changes = list(state["regime_changes"])
        if self.update_stability is not None and state.get("update_curvature"):  # 1.2 and earlier: none
            self.update_stability.load_state_dict(state["update_curvature"])
        if "lr_reduction" in state:  # checkpoints of 1.1 and earlier hold none
            self.lr_reduction.load_state_dict(state["lr_reduction"])
        if self.batch_sharpness is not None and state.get("batch_sharpness"):  # 1.4 and earlier: none
            self.batch_sharpness.load_state_dict(state["batch_sharpness"])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_end(trainer, pl_module)
        self.lr_reduction.detach()
