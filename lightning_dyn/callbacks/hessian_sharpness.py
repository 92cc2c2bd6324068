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

import functools
from typing import Any, Optional

from ..curvature import trace
from .base import DynamicsCallback, Measurement
from .hessian_measurement import (HessianAttributes, HessianMeasurement, density_of, eigenvalue_histogram,
                                  eigenvalue_scalars, fit_end_density, fit_end_figures)
from .hessian_settings import HessianSettings
from .validation import check_positive_int
from .figures import series_figure


class HessianSharpness(HessianAttributes, DynamicsCallback):
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
        max_overhead: a share of training the measurements may spend, in ``(0, 1)`` (e.g. ``0.05``): a
            measurement due by the schedule is skipped while the products spent so far exceed that
            share of training's gradient evaluations (deterministic: counted in products, not
            seconds; :mod:`lightning_dyn.callbacks.budget`). ``None`` (default): the fixed schedule.
        at_fit_end: measure once more when training ends.
        seed: seed of the private generator (probe set, start vectors).
    """

    progress_bar_tag = "dyn/sharpness"
    #: the tags this callback writes
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
        max_overhead: Optional[float] = None,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        #: the probe set, loss, backend and the tracker of the top eigenpairs
        self.hessian_measurement = HessianMeasurement(hessian, seed=seed, max_overhead=max_overhead)
        for name, value in (("trace_matvecs", trace_matvecs), ("density_runs", density_runs),
                            ("density_steps", density_steps)):
            check_positive_int(name, value)
        for name, value in (("trace_every_n_steps", trace_every_n_steps),
                            ("density_every_n_steps", density_every_n_steps)):
            check_positive_int(name, value, optional=True)
        self.hessian = hessian
        self.trace_every_n_steps, self.trace_matvecs = trace_every_n_steps, trace_matvecs
        self.density_every_n_steps, self.density_runs, self.density_steps = density_every_n_steps, density_runs, density_steps
        self.last_density: Optional[dict] = None

    def prepare(self, trainer: Any, pl_module: Any) -> None:
        self.hessian_measurement.prepare(trainer, pl_module, type(self).__name__)

    # -- measurement ----------------------------------------------------------------------------
    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        step = trainer.global_step
        owner = type(self).__name__
        result = self.hessian_measurement.top_eigenpairs(trainer, pl_module, owner, self.generator)
        values = result.values.tolist()
        scalars = eigenvalue_scalars(values, self.sharpness_tag, self.eig_tag)
        hvps = result.num_matvecs
        if self.trace_every_n_steps and (step % self.trace_every_n_steps == 0 or self.measuring_at_fit_end):
            est = trace(self.hessian_operator(trainer, pl_module), self.trace_matvecs, generator=self.generator)
            scalars.update({"dyn/hessian_trace": est.value, "dyn/hessian_trace_stderr": est.stderr})
            hvps += est.num_matvecs
        if self.density_every_n_steps and step % self.density_every_n_steps == 0:
            hvps += density_of(self, self.hessian_operator(trainer, pl_module), self.density_runs,
                               self.density_steps, step, self.generator)
        self.charge(hvps)
        return Measurement(scalars, hvps=hvps, extra={"values": values, "converged": result.converged})

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        eigenvalue_histogram(self, trainer, step, result.extra["values"])

    def fit_end(self, trainer: Any, pl_module: Any) -> None:
        # a density at fit end when a schedule has come round at least once (a 300-step schedule
        # on a 288-step run asked for none)
        scheduled = self.density_every_n_steps is not None and trainer.global_step >= self.density_every_n_steps
        fit_end_density(self, trainer, pl_module, lambda: self.hessian_operator(trainer, pl_module),
                        self.density_runs, self.density_steps, scheduled)
        fit_end_figures(self, trainer)

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
    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, k=self.k, seed=self.seed)

    def extra_state(self) -> dict[str, Any]:
        return self.hessian_measurement.state_dict()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.hessian_measurement.load_state_dict(state)
