"""HessianSharpness: the top Hessian eigenvalues of the training loss, measured live.

Every ``every_n_steps`` optimizer steps (and at fit end) the top-``k`` eigenvalues of the Hessian
of the training loss on a fixed probe set, by Lanczos warm-started from the previous measurement
(``lightning_dyn.curvature.top_eigenpairs``), re-measured cold every ``cold_every`` measurements
(a warm start cannot see a new top direction it does not contain; see ``curvature/eigen.py``).
Optionally the trace (Hutch++) and the spectral density (stochastic Lanczos quadrature) on their
own, slower schedules. Logs ``dyn/sharpness`` (the top eigenvalue), ``dyn/eig_<i>`` (the next ones, i ≥ 1),
``dyn/hessian_trace``; TensorBoard histograms of the top-k eigenvalues and, at fit end, figures of
the sharpness over steps and of the last spectral density.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info

from ..curvature import CurvatureOperator, HessianOperator, spectral_density, top_eigenpairs, trace
from ..curvature.eigen import EigenResult
from .base import DynamicsCallback, Measurement, rank_zero_buffers
from .compat import ConfigurationError
from .hessian_settings import HessianSettings
from .validation import check_positive_int
from ..curvature.probe import trainable_signature
from ..curvature.sharded import ShardedHessianOperator, sharded_model
from .optimizers import describe_measured, optimizer_at, stepped_parameters
from .probe import check_measurable, default_loss, probe_set, training_step_loss
from .figures import add_figure, density_figure, series_figure


class HessianSharpness(DynamicsCallback):
    """Top-k Hessian eigenvalues (sharpness), trace and spectral density of the training loss.

    All arguments are keyword-only.

    Args:
        every_n_steps: measure the top-``k`` eigenvalues every this many optimizer steps. Default
            50: a warm measurement costs a few Hessian-vector products (each about two training
            steps), a few percent of training at that cadence.
        hessian: which Hessian and how its eigenpairs are computed — ``k``, ``tol``, ``max_matvecs``,
            the probe set (``probe_size``/``probe_batches``), ``loss_fn``, ``mode``, ``backend``,
            ``cold_every`` (:class:`HessianSettings`). The cost is logged as
            ``dyn/cost/<callback>_hvps`` (or ``..._fd_hvps``: central differences, two gradients each).
        trace_every_n_steps: also estimate the trace every this many steps (``None``: never).
        trace_matvecs: products per trace estimate.
        density_every_n_steps: also estimate the spectral density every this many steps (``None``: never).
        density_runs: SLQ start vectors per density.
        density_steps: Lanczos steps per SLQ run.
        at_fit_end: measure once more when training ends.
        seed: seed of the private generator (probe set, start vectors).
    """

    progress_bar_tag = "dyn/sharpness"
    #: the tags this callback writes (a subclass measuring another operator names its own)
    sharpness_tag = "dyn/sharpness"
    eig_tag = "dyn/eig_{}"
    figure_tag = "dyn/sharpness_figure"
    density_tag = "dyn/spectral_density"
    histogram_tag = "dyn/top_eigenvalues"
    #: what ``operator()`` is, in words (figure titles)
    operator_name = "Hessian"
    #: the category of this callback's charts in TensorBoard's custom-scalars page
    layout_category = "Hessian (HessianSharpness)"

    def __init__(
        self,
        *,
        every_n_steps: int = 50,
        hessian: HessianSettings = HessianSettings(),
        trace_every_n_steps: Optional[int] = None,
        trace_matvecs: int = 30,
        density_every_n_steps: Optional[int] = None,
        density_runs: int = 5,
        density_steps: int = 30,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        if not isinstance(hessian, HessianSettings):
            raise ConfigurationError(f"`hessian` must be a HessianSettings, got {type(hessian).__name__} "
                                     "(e.g. hessian=HessianSettings(k=2, probe_size=512))")
        for name, value in (("trace_matvecs", trace_matvecs), ("density_runs", density_runs),
                            ("density_steps", density_steps)):
            check_positive_int(name, value)
        for name, value in (("trace_every_n_steps", trace_every_n_steps),
                            ("density_every_n_steps", density_every_n_steps)):
            check_positive_int(name, value, optional=True)
        self.hessian = hessian
        self.k, self.tol, self.max_matvecs = hessian.k, float(hessian.tol), hessian.max_matvecs
        self.probe_size, self.probe_batches, self.mode = hessian.probe_size, hessian.probe_batches, hessian.mode
        self.backend, self.loss_fn, self.cold_every = hessian.backend, hessian.loss_fn, hessian.cold_every
        #: the backend measurements use, decided at setup
        self.product_backend = "double_backward" if self.backend == "auto" else self.backend
        #: the loss measured — ``loss_fn``, or the ``training_step`` loss (set when training starts)
        self.loss: Callable[[Any, Any], torch.Tensor] = training_step_loss
        self.trace_every_n_steps, self.trace_matvecs = trace_every_n_steps, trace_matvecs
        self.density_every_n_steps, self.density_runs, self.density_steps = density_every_n_steps, density_runs, density_steps
        self.previous: Optional[EigenResult] = None
        #: estimate the density at fit end even without a schedule (EdgeOfStability's figure)
        self.density_at_fit_end = False
        self.measurements = 0
        self.last_density: Optional[dict] = None
        self.batches: list = []
        self._trainable: tuple = ()
        self._sharded = False
        self._product_error: Optional[float] = None
        self._reuse_error = False

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        owner = type(self).__name__
        self.loss = default_loss(pl_module, self.loss_fn, owner)
        if self.probe_batches is not None:
            self.batches = list(self.probe_batches)
        else:
            self.batches = probe_set(trainer, pl_module, self.probe_size, seed=self.seed, default_size=1000,
                                     owner=owner).batches
        self.product_backend = check_measurable(pl_module, self.loss, self.batches[0], owner=owner, mode=self.mode,
                                                seed=self.seed, backend=self.backend)
        self.cost_unit = "fd_hvps" if self.product_backend == "finite_difference" else "hvps"
        describe_measured(trainer, pl_module, self.hessian.optimizer, owner)
        self._trainable = self._signature(trainer, pl_module)
        self._sharded = sharded_model(pl_module)

    def measured_parameters(self, trainer: Any, pl_module: Any) -> Optional[list[torch.nn.Parameter]]:
        """The parameters the measured optimizer steps (``HessianSettings.optimizer``); ``None``
        (every trainable one) when the run has no optimizer."""
        optimizer = optimizer_at(trainer, self.hessian.optimizer, type(self).__name__, required=False)
        return None if optimizer is None else stepped_parameters(optimizer)

    def _signature(self, trainer: Any, pl_module: Any) -> tuple:
        params = self.measured_parameters(trainer, pl_module)
        return trainable_signature(pl_module) if params is None else tuple((id(p), p.numel()) for p in params)

    def _follow_trainable(self, trainer: Any, pl_module: Any) -> None:
        """Fine-tuning changed which parameters train (or which the optimizer steps: a group added
        by ``BackboneFinetuning``): the warm start spans the old space, drop it."""
        now = self._signature(trainer, pl_module)
        if now != self._trainable:
            if self.previous is not None:
                rank_zero_info(f"{type(self).__name__}: the trainable parameters changed ({len(self._trainable)} → "
                               f"{len(now)} tensors); measuring cold in the new space")
            self._trainable, self.previous = now, None

    # -- measurement ----------------------------------------------------------------------------
    def operator(self, trainer: Any, pl_module: Any) -> CurvatureOperator:
        """The operator whose top eigenvalues are measured (subclasses precondition it)."""
        return self.hessian_operator(trainer, pl_module)

    def hessian_operator(self, trainer: Any, pl_module: Any) -> CurvatureOperator:
        """The Hessian over the probe set. With central differences, warm measurements reuse the
        products' error estimate of the first warm measurement after the last cold one (estimated
        along the previous top vector, the direction the eigenvalue depends on; it moves slowly with
        the parameters, and re-estimating costs two gradients — a fifth of a warm measurement). A
        cold measurement estimates its own, along its random start, and keeps none: that estimate is
        the error of a whole product, pessimistic for the top eigenvalue."""
        known = self._product_error if self._reuse_error else None
        params = self.measured_parameters(trainer, pl_module)
        if sharded_model(pl_module):
            return ShardedHessianOperator(pl_module, self.loss, self.batches, mode=self.mode, seed=self.seed,
                                          known_error=known, params=params)
        return HessianOperator(pl_module, self.loss, self.batches, mode=self.mode, seed=self.seed,
                               backend=self.product_backend, known_error=known, params=params)

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        step = trainer.global_step
        self._follow_trainable(trainer, pl_module)
        cold = self.previous is None or (self.cold_every is not None and self.measurements % self.cold_every == 0)
        self._reuse_error = not cold and self._product_error is not None
        op = self.operator(trainer, pl_module)
        if self.previous is not None and self.previous.vectors.shape[0] != op.size:
            self.previous, cold = None, True  # resumed into another trainable set
        result = top_eigenpairs(op, k=self.k, tol=self.tol, max_matvecs=self.max_matvecs,
                                init=None if cold else self.previous, generator=self.generator)
        if cold:  # estimated along a random vector: pessimistic for the top eigenvalue, not kept
            self._product_error = None
        elif not self._reuse_error:  # estimated along the previous top vector: the direction that matters
            self._product_error = getattr(op, "relative_error", 0.0)
        self._reuse_error = True  # the trace and density below are taken at the same parameters
        self.previous = result
        self.measurements += 1
        values = result.values.tolist()
        scalars = {self.sharpness_tag: values[0], **{self.eig_tag.format(i): v for i, v in enumerate(values) if i}}
        hvps = result.num_matvecs
        if self.trace_every_n_steps and (step % self.trace_every_n_steps == 0 or self.measuring_at_fit_end):
            est = trace(self.hessian_operator(trainer, pl_module), self.trace_matvecs, generator=self.generator)
            scalars.update({"dyn/hessian_trace": est.value, "dyn/hessian_trace_stderr": est.stderr})
            hvps += est.num_matvecs
        if self.density_every_n_steps and step % self.density_every_n_steps == 0:
            hvps += self._density(trainer, pl_module, step)
        return Measurement(scalars, hvps=hvps, extra={"values": values, "converged": result.converged})

    def _density(self, trainer: Any, pl_module: Any, step: int, generator: Optional[torch.Generator] = None) -> int:
        dens = spectral_density(self.operator(trainer, pl_module), self.density_runs, self.density_steps,
                                generator=generator or self.generator)
        self.last_density = {"step": step, "grid": dens.grid, "density": dens.density}
        return dens.num_matvecs

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        writer = self.tensorboard(trainer)
        if writer is not None and self.k > 1:
            writer.add_histogram(self.histogram_tag, torch.tensor(result.extra["values"]), global_step=step)

    def fit_end(self, trainer: Any, pl_module: Any) -> None:
        step = trainer.global_step
        # a density at fit end when asked for: EdgeOfStability's figure, or a schedule that has come
        # round at least once (a 300-step schedule on a 288-step run asked for none)
        scheduled = self.density_every_n_steps is not None and step >= self.density_every_n_steps
        wanted = scheduled or self.density_at_fit_end
        failed_here = bool(self.events) and self.events[-1]["step"] == step
        if wanted and self.batches and not failed_here and (self.last_density is None or self.last_density["step"] != step):
            # its own generator, so the fit-end figure does not shift a resumed run's series
            generator = torch.Generator().manual_seed(self.seed + step)
            rank_zero_info(f"{type(self).__name__}: estimating the {self.operator_name}'s spectral density at fit end "
                           f"({self.density_runs} × {self.density_steps} products)")
            with self.hygiene(pl_module), rank_zero_buffers(trainer, pl_module):
                try:
                    self.total_hvps += self._density(trainer, pl_module, step, generator)
                except FloatingPointError as err:
                    self._report_nonfinite(step, f"spectral density: {err}")
        writer = self.tensorboard(trainer)
        if writer is None:
            return
        add_figure(writer, self.figure_tag, self.fit_end_figure(), trainer.global_step)
        if self.last_density is not None:
            d = self.last_density
            add_figure(writer, self.density_tag,  # at the step it describes, as its title says
                       density_figure(d["grid"], d["density"], step=d["step"], operator=self.operator_name,
                                      marks=self.density_marks()), d["step"])

    def density_marks(self) -> dict[str, float]:
        """Lines on the density figure: the top eigenvalue measured last."""
        last = next((h for h in reversed(self.history) if self.sharpness_tag in h), None)
        return {} if last is None else {f"λ_max measured at step {last['step']}": last[self.sharpness_tag]}

    def eigenvalue_tags(self) -> list[str]:
        """The tags of the top-``k`` eigenvalues, largest first."""
        return [self.sharpness_tag] + [self.eig_tag.format(i) for i in range(1, self.k)]

    def layout(self) -> dict[str, list[str]]:
        """This callback's charts in the run's custom-scalars layout (title → tags)."""
        charts = {f"top-{self.k} Hessian eigenvalues (dyn/sharpness = the largest)": self.eigenvalue_tags()}
        if self.trace_every_n_steps:
            charts["Hessian trace (Hutch++)"] = ["dyn/hessian_trace"]
        return charts

    def fit_end_figure(self) -> Any:
        return series_figure(self.history, self.eigenvalue_tags(),
                             labels=["λ₁ (sharpness)"] + [f"λ{chr(0x2080 + i + 1)}" for i in range(1, self.k)],
                             title=f"top {self.operator_name} eigenvalues", ylabel=f"eigenvalue of the {self.operator_name}")

    # -- state ----------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, k=self.k, seed=self.seed)

    def extra_state(self) -> dict[str, Any]:
        # sharded vectors are this rank's shards, and a checkpoint keeps one rank's callback state:
        # a resumed sharded run measures cold once
        keep = self.previous is not None and not self._sharded
        return {"previous": vars(self.previous) if keep else None, "measurements": self.measurements,
                "product_error": self._product_error if keep else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.previous = None if state["previous"] is None else EigenResult(**state["previous"])
        self._product_error = state.get("product_error")
        self.measurements = state["measurements"]
