"""HessianSharpness: the top Hessian eigenvalues of the training loss, measured live.

Every ``every_n_steps`` optimizer steps (and at fit end) the top-``k`` eigenvalues of the Hessian
of the training loss on a fixed probe set, by Lanczos warm-started from the previous measurement
(``lightning_dyn.curvature.top_eigenpairs``), re-measured cold every ``cold_every`` measurements
(a warm start cannot see a new top direction it does not contain; see ``curvature/eigen.py``).
Optionally the trace (Hutch++) and the spectral density (stochastic Lanczos quadrature) on their
own, slower schedules. Logs ``dyn/sharpness`` (= ``dyn/eig_0``), ``dyn/eig_<i>``,
``dyn/hessian_trace``; TensorBoard histograms of the top-k eigenvalues and, at fit end, figures of
the sharpness over steps and of the last spectral density.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import torch

from ..curvature import CurvatureOperator, HessianOperator, spectral_density, top_eigenpairs, trace
from ..curvature.eigen import EigenResult
from .base import DynamicsCallback, Measurement, check_choice, check_positive_int
from .compat import ConfigurationError
from .probe import check_twice_differentiable, draw_probe_batches, training_step_loss
from .views import add_figure, density_figure, series_figure


def _optional_positive(name: str, value: Any) -> None:
    if value is not None:
        check_positive_int(name, value)


class HessianSharpness(DynamicsCallback):
    """Top-k Hessian eigenvalues (sharpness), trace and spectral density of the training loss.

    Args:
        every_n_steps: measure the top-``k`` eigenvalues every this many optimizer steps.
        k: number of top eigenvalues.
        tol: relative accuracy of the eigenvalues (Lanczos error bound).
        max_matvecs: cap on Hessian-vector products per eigenvalue measurement.
        probe_size: samples in the probe set: the first ones the train dataloader yields, drawn once
            when training starts (ignored when ``probe_batches`` is given).
        probe_batches: the probe set as a list of batches, instead of drawing it.
        loss_fn: ``loss_fn(pl_module, batch) -> scalar``; default: the module's ``training_step``
            (a tensor or a dict with ``"loss"``), with its ``self.log`` calls muted.
        mode: ``"eval"`` (default; Dropout off, BatchNorm running statistics) or ``"train"``.
        cold_every: every this many measurements start Lanczos cold instead of warm (``None``: never).
        trace_every_n_steps: also estimate the trace every this many steps (``None``: never).
        trace_matvecs: products per trace estimate.
        density_every_n_steps: also estimate the spectral density every this many steps (``None``: never).
        density_runs: SLQ start vectors per density.
        density_steps: Lanczos steps per SLQ run.
        at_fit_end: measure once more when training ends.
        seed: seed of the private generator.
    """

    progress_bar_tag = "dyn/sharpness"

    def __init__(
        self,
        every_n_steps: int = 50,
        k: int = 1,
        tol: float = 1e-3,
        max_matvecs: int = 100,
        probe_size: int = 1000,
        probe_batches: Optional[list] = None,
        loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None,
        mode: Literal["eval", "train"] = "eval",
        cold_every: Optional[int] = 10,
        trace_every_n_steps: Optional[int] = None,
        trace_matvecs: int = 30,
        density_every_n_steps: Optional[int] = None,
        density_runs: int = 5,
        density_steps: int = 30,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        for name, value in (("k", k), ("max_matvecs", max_matvecs), ("probe_size", probe_size),
                            ("trace_matvecs", trace_matvecs), ("density_runs", density_runs),
                            ("density_steps", density_steps)):
            check_positive_int(name, value)
        for name, value in (("cold_every", cold_every), ("trace_every_n_steps", trace_every_n_steps),
                            ("density_every_n_steps", density_every_n_steps)):
            _optional_positive(name, value)
        if not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise ConfigurationError(f"`tol` must be a number in (0, 1), got {tol!r}")
        if max_matvecs < k:
            raise ConfigurationError(f"`max_matvecs` ({max_matvecs}) must be at least `k` ({k})")
        check_choice("mode", mode, ("eval", "train"))
        if probe_batches is not None and len(probe_batches) == 0:
            raise ConfigurationError("`probe_batches` is empty: pass at least one batch, or None to draw them")
        self.k, self.tol, self.max_matvecs = k, float(tol), max_matvecs
        self.probe_size, self.probe_batches, self.mode = probe_size, probe_batches, mode
        self.loss_fn = loss_fn or training_step_loss
        self.cold_every = cold_every
        self.trace_every_n_steps, self.trace_matvecs = trace_every_n_steps, trace_matvecs
        self.density_every_n_steps, self.density_runs, self.density_steps = density_every_n_steps, density_runs, density_steps
        self.previous: Optional[EigenResult] = None
        #: estimate the density at fit end even without a schedule (EdgeOfStability's figure)
        self.density_at_fit_end = False
        self.measurements = 0
        self.last_density: Optional[dict] = None
        self.batches: list = []

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self, trainer: Any, pl_module: Any) -> None:
        if self.probe_batches is not None:
            self.batches = list(self.probe_batches)
        else:
            loader = trainer.train_dataloader
            size = getattr(getattr(loader, "dataset", None), "__len__", None)
            if size is not None and self.probe_size > size():
                raise ConfigurationError(
                    f"`probe_size` ({self.probe_size}) is larger than the training set ({size()} samples)")
            self.batches = draw_probe_batches(loader, self.probe_size, pl_module.device, self.seed)
        reason = check_twice_differentiable(pl_module, self.loss_fn, self.batches[0])
        if reason:
            raise ConfigurationError(f"{type(self).__name__} cannot measure the Hessian of this loss: {reason}")

    # -- measurement ----------------------------------------------------------------------------
    def operator(self, trainer: Any, pl_module: Any) -> CurvatureOperator:
        """The operator whose top eigenvalues are measured (subclasses precondition it)."""
        return self.hessian(pl_module)

    def hessian(self, pl_module: Any) -> HessianOperator:
        return HessianOperator(pl_module, self.loss_fn, self.batches, mode=self.mode)

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        step = trainer.global_step
        op = self.operator(trainer, pl_module)
        cold = self.previous is None or (self.cold_every is not None and self.measurements % self.cold_every == 0)
        result = top_eigenpairs(op, k=self.k, tol=self.tol, max_matvecs=self.max_matvecs,
                                init=None if cold else self.previous, generator=self.generator)
        self.previous = result
        self.measurements += 1
        values = result.values.tolist()
        scalars = {"dyn/sharpness": values[0], **{f"dyn/eig_{i}": v for i, v in enumerate(values)}}
        hvps = result.num_matvecs
        if self.trace_every_n_steps and (step % self.trace_every_n_steps == 0 or self.measuring_at_fit_end):
            est = trace(self.hessian(pl_module), self.trace_matvecs, generator=self.generator)
            scalars.update({"dyn/hessian_trace": est.value, "dyn/hessian_trace_stderr": est.stderr})
            hvps += est.num_matvecs
        if self.density_every_n_steps and step % self.density_every_n_steps == 0:
            hvps += self._density(pl_module, step)
        return Measurement(scalars, hvps=hvps, extra={"values": values, "converged": result.converged})

    def _density(self, pl_module: Any, step: int, generator: Optional[torch.Generator] = None) -> int:
        dens = spectral_density(self.hessian(pl_module), self.density_runs, self.density_steps,
                                generator=generator or self.generator)
        self.last_density = {"step": step, "grid": dens.grid, "density": dens.density}
        return dens.num_matvecs

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        writer = self.tensorboard(trainer)
        if writer is not None and self.k > 1:
            writer.add_histogram("dyn/top_eigenvalues", torch.tensor(result.extra["values"]), global_step=step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_end(trainer, pl_module)
        step = trainer.global_step
        wanted = self.density_every_n_steps or self.density_at_fit_end
        failed_here = bool(self.events) and self.events[-1]["step"] == step
        if wanted and self.batches and not failed_here and (self.last_density is None or self.last_density["step"] != step):
            # its own generator, so the fit-end figure does not shift a resumed run's series
            generator = torch.Generator().manual_seed(self.seed + step)
            with self.hygiene(pl_module):
                try:
                    self.total_hvps += self._density(pl_module, step, generator)
                except FloatingPointError as err:
                    self._report_nonfinite(step, f"spectral density: {err}")
        writer = self.tensorboard(trainer)
        if writer is None:
            return
        add_figure(writer, "dyn/sharpness_figure", self.fit_end_figure(), trainer.global_step)
        if self.last_density is not None:
            d = self.last_density
            add_figure(writer, "dyn/spectral_density", density_figure(d["grid"], d["density"], step=d["step"]),
                       trainer.global_step)

    def fit_end_figure(self) -> Any:
        return series_figure(self.history, [f"dyn/eig_{i}" for i in range(self.k)], title="top Hessian eigenvalues",
                             ylabel="eigenvalue")

    # -- state ----------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, k=self.k, seed=self.seed)

    def extra_state(self) -> dict[str, Any]:
        return {"previous": None if self.previous is None else vars(self.previous), "measurements": self.measurements}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.previous = None if state["previous"] is None else EigenResult(**state["previous"])
        self.measurements = state["measurements"]
