"""The Hessian a callback measures, and the tracker of its top eigenpairs.

``HessianSharpness`` and ``EdgeOfStability`` are siblings: each holds one :class:`HessianMeasurement`
— the probe set drawn when training starts, the loss, the product backend decided by a product at
setup, the parameters the measured optimizer steps — and that object holds the engine's
:class:`~lightning_dyn.curvature.tracking.EigenTracker` (warm starts, the cold rule, the reuse of the
products' error estimate, the drop of a warm start when the trainable set changes). The callbacks
add only what is theirs: their tags, the threshold, the schedules of the trace and the density.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info

from ..curvature import CurvatureOperator, HessianOperator, spectral_density
from ..curvature.backends import PREFERRED, product_backend
from ..curvature.eigen import EigenResult
from ..curvature.probe import trainable_signature
from ..curvature.sharded import ShardedHessianOperator, sharded_model
from ..curvature.tracking import EigenTracker
from .base import rank_zero_buffers
from ..curvature.batches import batch_size
from .budget import OverheadBudget
from .compat import ConfigurationError
from .figures import add_figure, density_figure
from .hessian_settings import HessianSettings
from .optimizers import describe_measured, optimizer_at, stepped_parameters
from .probe import check_measurable, default_loss, probe_set, training_step_loss

#: the most samples a default probe set takes (one training batch, all ranks', up to this; or the
#: whole training set when it is smaller)
DEFAULT_PROBE_SIZE = 1000


class HessianMeasurement:
    """Probe set, loss, backend and parameters of a Hessian measured during training.

    Args:
        settings: the user's :class:`~lightning_dyn.HessianSettings`.
        seed: seed of the probe-set draw and of the Dropout masks in ``mode="train"``.
    """

    def __init__(self, settings: HessianSettings, *, seed: int, max_overhead: Optional[float] = None) -> None:
        if not isinstance(settings, HessianSettings):
            raise ConfigurationError(f"`hessian` must be a HessianSettings, got {type(settings).__name__} "
                                     "(e.g. hessian=HessianSettings(k=2, probe_size=512))")
        self.settings, self.seed = settings, seed
        self.tracker = EigenTracker(k=settings.k, tol=settings.tol, max_matvecs=settings.max_matvecs,
                                    cold_every=settings.cold_every, seed=seed)
        #: the loss measured — ``loss_fn``, or the ``training_step`` loss (set when training starts)
        self.loss: Callable[[Any, Any], torch.Tensor] = training_step_loss
        #: the backend products use, decided at setup
        self.backend = PREFERRED if settings.backend == "auto" else settings.backend
        self.batches: list = []
        self.sharded = False
        #: the probe set's size in training batches, so that costs read in one batch's gradients
        self.probe_batches_equivalent = 1.0
        #: the share of training the measurements may spend (:mod:`lightning_dyn.callbacks.budget`)
        self.budget = OverheadBudget(max_overhead)

    @property
    def cost_unit(self) -> str:
        """What a product is logged as (``hvps``, or ``fd_hvps`` for central differences)."""
        return product_backend(self.backend).cost_unit

    def prepare(self, trainer: Any, pl_module: Any, owner: str) -> None:
        """Draw the probe set, check one product through the real model, choose the backend."""
        s = self.settings
        self.loss = default_loss(pl_module, s.loss_fn, owner)
        per_batch = getattr(getattr(trainer, "train_dataloader", None), "batch_size", None)
        if s.probe_batches is not None:
            self.batches = list(s.probe_batches)
        else:
            # sized for the run's batches: one training batch (every rank's), at most DEFAULT_PROBE_SIZE
            default = min(DEFAULT_PROBE_SIZE, per_batch * trainer.world_size) if per_batch else DEFAULT_PROBE_SIZE
            self.batches = probe_set(trainer, pl_module, s.probe_size, seed=self.seed, default_size=default,
                                     owner=owner).batches
        self.backend = check_measurable(pl_module, self.loss, self.batches[0], owner=owner, mode=s.mode,
                                        seed=self.seed, backend=s.backend)
        describe_measured(trainer, pl_module, s.optimizer, owner)
        self.sharded = sharded_model(pl_module)
        self.tracker.follow(self.space(trainer, pl_module, owner))
        probe = sum(batch_size(b) for b in self.batches)  # this rank's share, like a training batch
        self.probe_batches_equivalent = probe / per_batch if per_batch else float(len(self.batches))
        rank_zero_info(f"{owner}: the probe set is {self.probe_batches_equivalent:.3g} training batch(es) (default: one); "
                       f"a Hessian-vector product ({self.backend}) costs about {self.gradients(1):.1f} gradient "
                       f"evaluations of a training batch (about as many training steps); {self.budget.describe()}")

    def gradients(self, products: int) -> float:
        """What ``products`` products cost, in gradient evaluations of one training batch."""
        return products * product_backend(self.backend).gradients_per_product * self.probe_batches_equivalent

    def parameters(self, trainer: Any, owner: str) -> Optional[list[torch.nn.Parameter]]:
        """The parameters the measured optimizer steps (``HessianSettings.optimizer``); ``None``
        (every trainable one) when the run has no optimizer."""
        optimizer = optimizer_at(trainer, self.settings.optimizer, owner, required=False)
        return None if optimizer is None else stepped_parameters(optimizer)

    def space(self, trainer: Any, pl_module: Any, owner: str) -> tuple:
        """The identity of the operator's space: which parameters, of which sizes."""
        params = self.parameters(trainer, owner)
        return trainable_signature(pl_module) if params is None else tuple((id(p), p.numel()) for p in params)

    def follow(self, trainer: Any, pl_module: Any, owner: str) -> None:
        """Fine-tuning changed which parameters train (or which the optimizer steps: a group added
        by ``BackboneFinetuning``): the tracker drops its warm start, which spans the old space."""
        before = self.tracker._space
        if self.tracker.follow(self.space(trainer, pl_module, owner)):
            rank_zero_info(f"{owner}: the trainable parameters changed ({len(before or ())} → "
                           f"{len(self.tracker._space)} tensors); measuring cold in the new space")

    def hessian(self, trainer: Any, pl_module: Any, owner: str,
                known_error: Optional[float] = None) -> CurvatureOperator:
        """The Hessian over the probe set at the current parameters."""
        s = self.settings
        params = self.parameters(trainer, owner)
        if sharded_model(pl_module):
            return ShardedHessianOperator(pl_module, self.loss, self.batches, mode=s.mode, seed=self.seed,
                                          known_error=known_error, params=params)
        return HessianOperator(pl_module, self.loss, self.batches, mode=s.mode, seed=self.seed,
                               backend=self.backend, known_error=known_error, params=params)

    def top_eigenpairs(self, trainer: Any, pl_module: Any, owner: str, generator: torch.Generator,
                       transform: Optional[Callable[[CurvatureOperator], CurvatureOperator]] = None) -> EigenResult:
        """One tracked measurement of ``transform(H)`` (default ``H``): warm or cold by the tracker."""
        self.follow(trainer, pl_module, owner)

        def build(known_error: Optional[float]) -> CurvatureOperator:
            op = self.hessian(trainer, pl_module, owner, known_error)
            return op if transform is None else transform(op)

        return self.tracker.measure(build, generator=generator)

    def current_operator(self, trainer: Any, pl_module: Any, owner: str) -> CurvatureOperator:
        """The Hessian at the parameters of the last measurement, reusing its error estimate (for a
        trace or a density taken right after it)."""
        return self.hessian(trainer, pl_module, owner, self.tracker.product_error)

    def state_dict(self) -> dict[str, Any]:
        # sharded vectors are this rank's shards, and a checkpoint keeps one rank's callback state:
        # a resumed sharded run measures cold once
        state = self.tracker.state_dict(vectors=not self.sharded)
        state.pop("generator")  # the callback's own generator draws the starts (checkpointed by it)
        return {**state, "budget": self.budget.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)
        if "budget" in state:  # 1.2 and earlier: none
            self.budget.load_state_dict(state["budget"])


class HessianAttributes:
    """The attributes ``HessianSharpness`` and ``EdgeOfStability`` had in 1.x, read from their
    :class:`HessianMeasurement` (``self.hessian_measurement``); kept so that code reading them goes on
    working. Also their schedule: the fixed one, thinned by the ``max_overhead`` budget."""

    hessian_measurement: HessianMeasurement
    every_n_steps: int

    k = property(lambda self: self.hessian_measurement.settings.k)
    tol = property(lambda self: float(self.hessian_measurement.settings.tol))
    max_matvecs = property(lambda self: self.hessian_measurement.settings.max_matvecs)
    probe_size = property(lambda self: self.hessian_measurement.settings.probe_size)
    probe_batches = property(lambda self: self.hessian_measurement.settings.probe_batches)
    mode = property(lambda self: self.hessian_measurement.settings.mode)
    backend = property(lambda self: self.hessian_measurement.settings.backend)
    loss_fn = property(lambda self: self.hessian_measurement.settings.loss_fn)
    cold_every = property(lambda self: self.hessian_measurement.settings.cold_every)
    #: the backend measurements use (decided at setup)
    product_backend = property(lambda self: self.hessian_measurement.backend)
    loss = property(lambda self: self.hessian_measurement.loss)
    batches = property(lambda self: self.hessian_measurement.batches)

    @property
    def cost_unit(self) -> str:  # type: ignore[override]
        return self.hessian_measurement.cost_unit

    @property
    def previous(self) -> Optional[EigenResult]:
        """The last measurement's eigenpairs (the next warm start)."""
        return self.hessian_measurement.tracker.previous

    @previous.setter
    def previous(self, value: Optional[EigenResult]) -> None:
        self.hessian_measurement.tracker.previous = value

    @property
    def measurements(self) -> int:
        return self.hessian_measurement.tracker.measurements

    def due(self, step: int) -> bool:
        """Every ``every_n_steps`` steps, while the measurements keep within ``max_overhead``."""
        return step % self.every_n_steps == 0 and self.hessian_measurement.budget.allows(step)

    def charge(self, products: int) -> None:
        """Count ``products`` against the budget."""
        self.hessian_measurement.budget.charge(self.hessian_measurement.gradients(products))

    def measured_parameters(self, trainer: Any, pl_module: Any) -> Optional[list[torch.nn.Parameter]]:
        """The parameters the measured optimizer steps (``None``: every trainable one)."""
        return self.hessian_measurement.parameters(trainer, type(self).__name__)

    def hessian_operator(self, trainer: Any, pl_module: Any) -> CurvatureOperator:
        """The Hessian over the probe set at the current parameters."""
        return self.hessian_measurement.current_operator(trainer, pl_module, type(self).__name__)


def density_of(callback: Any, operator: CurvatureOperator, runs: int, steps: int, step: int,
               generator: torch.Generator) -> int:
    """Estimate ``operator``'s spectral density (SLQ), keep it as ``callback.last_density``; products spent."""
    dens = spectral_density(operator, runs, steps, generator=generator)
    callback.last_density = {"step": step, "grid": dens.grid, "density": dens.density}
    return dens.num_matvecs


def fit_end_density(callback: Any, trainer: Any, pl_module: Any, operator: Callable[[], CurvatureOperator],
                    runs: int, steps: int, wanted: bool) -> None:
    """At fit end, the density when ``wanted`` and not already taken at this step (nor just failed);
    its own generator, so the fit-end figure does not shift a resumed run's series."""
    step = trainer.global_step
    failed_here = bool(callback.events) and callback.events[-1]["step"] == step
    last = callback.last_density
    if not wanted or not callback.batches or failed_here or (last is not None and last["step"] == step):
        return
    generator = torch.Generator().manual_seed(callback.seed + step)
    rank_zero_info(f"{type(callback).__name__}: estimating the {callback.operator_name}'s spectral density at fit "
                   f"end ({runs} × {steps} products)")
    with callback.hygiene(pl_module), rank_zero_buffers(trainer, pl_module):
        try:
            callback.total_hvps += density_of(callback, operator(), runs, steps, step, generator)
        except FloatingPointError as err:
            callback._report_nonfinite(step, f"spectral density: {err}")


def eigenvalue_scalars(values: list[float], sharpness_tag: str, eig_tag: str) -> dict[str, float]:
    """The top eigenvalue under ``sharpness_tag``, the next ones under ``eig_tag.format(i)``."""
    return {sharpness_tag: values[0], **{eig_tag.format(i): v for i, v in enumerate(values) if i}}


def eigenvalue_histogram(callback: Any, trainer: Any, step: int, values: list[float]) -> None:
    """The top-``k`` eigenvalues as a TensorBoard histogram (``k > 1``)."""
    writer = callback.tensorboard(trainer)
    if writer is not None and len(values) > 1:
        writer.add_histogram(callback.histogram_tag, torch.tensor(values), global_step=step)


def fit_end_figures(callback: Any, trainer: Any) -> None:
    """The callback's series figure and, if one was taken, its last spectral density, in TensorBoard."""
    writer = callback.tensorboard(trainer)
    if writer is None:
        return
    add_figure(writer, callback.figure_tag, callback.fit_end_figure(), trainer.global_step)
    if callback.last_density is not None:
        d = callback.last_density
        add_figure(writer, callback.density_tag,  # at the step it describes, as its title says
                   density_figure(d["grid"], d["density"], step=d["step"], operator=callback.operator_name,
                                  marks=callback.density_marks()), d["step"])
