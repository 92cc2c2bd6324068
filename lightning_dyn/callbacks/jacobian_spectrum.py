"""JacobianSpectrum: how far the model being trained is from dynamical isometry.

On its schedule the callback measures the input–output Jacobian of the model (eval mode) at a
fixed set of probe inputs (``lightning_dyn.dynamics.input_jacobian``; Pennington et al. 2017): the top
singular values ``dyn/jacobian_sigma_max`` (and ``dyn/jacobian_sigma_<i>`` for ``i ≤ k``), the
mean squared singular value ``dyn/jacobian_msv`` ± ``dyn/jacobian_msv_stderr`` and the variance of
the squared singular values ``dyn/jacobian_sv2_variance``: by warm-started Lanczos on ``JᵀJ`` and
Hutchinson — each product one JVP and one VJP — or, when inputs or outputs are narrow (a
classifier's logits), exactly from the Jacobians formed with that many products. Products are
counted in ``dyn/cost/JacobianSpectrum_jvp_vjp``. With a TensorBoard logger, a figure of the
distribution of ``σ²`` (a histogram of the exact values, or stochastic Lanczos quadrature) at every
measurement.

The probe inputs are ``probe_size`` samples of the training set (all ranks together), drawn once
by a private generator (``lightning_dyn.curvature.probe``), the same on every rank, so every rank
measures the same Jacobian as one process on the same inputs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Optional

import torch

from ..curvature.density import spectral_density
from ..curvature.eigen import EigenResult
from ..curvature.tracking import EigenTracker
from ..dynamics.input_jacobian import JacobianGramOperator, jacobian_spectrum
from .base import DynamicsCallback, Measurement
from .validation import check_choice, check_positive_int, check_tolerance
from .compat import ConfigurationError
from .probe import ForwardFn, InputFn, batch_inputs, canonical_order, probe_set
from .figures import add_figure, singular_value_figure

class JacobianSpectrum(DynamicsCallback):
    """Singular values of the model's input–output Jacobian on probe inputs (module docstring).

    All arguments are keyword-only.

    Args:
        every_n_steps: measure every this many optimizer steps. Default 500, ten times the
            curvature callbacks' cadence: a measurement costs up to ``2·max_matvecs`` passes through
            the model on the probe inputs plus ``num_probes`` for the moments, and the input–output
            Jacobian at initialisation and its slow drift are what it is for.
        probe_size: probe inputs (all ranks together), drawn once from the training set by a
            private generator; default 8, or the whole training set when smaller.
        k: top singular values to track.
        method: ``"auto"`` (exact Jacobians when ``min(d_in, d_out) ≤ 64``, else Lanczos),
            ``"lanczos"`` or ``"dense"``.
        tol: relative accuracy of the top ``σ²`` (Lanczos stopping rule), in ``(0, 1)``.
        max_matvecs: cap on Lanczos steps per measurement (each one JVP + one VJP).
        num_probes: Hutchinson probes for the mean and variance of ``σ²``.
        density_runs: SLQ runs for the distribution figure (0: no figure).
        density_steps: Lanczos steps per SLQ run.
        input_fn: ``input_fn(batch) -> inputs`` (floating point, batch first); default: the batch,
            its first entry, or its ``"x"``/``"input"``/``"inputs"`` entry.
        forward_fn: ``forward_fn(pl_module, inputs) -> outputs``; default ``pl_module(inputs)``.
        at_fit_end: measure once more when training ends.
        seed: seed of the private generator (Lanczos start, Hutchinson probes).
    """

    progress_bar_tag = None
    layout_category = "input–output Jacobian (JacobianSpectrum)"

    def layout(self) -> dict[str, list[str]]:
        return {"largest singular values σ of the input–output Jacobian":
                ["dyn/jacobian_sigma_max"] + [f"dyn/jacobian_sigma_{i}" for i in range(2, self.k + 1)],
                "mean squared singular value ⟨σ²⟩ (1: dynamical isometry)": ["dyn/jacobian_msv"],
                "variance of σ² (0: all singular values equal)": ["dyn/jacobian_sv2_variance"]}
    cost_unit = "jvp_vjp"

    def __init__(
        self,
        *,
        every_n_steps: int = 500,
        probe_size: Optional[int] = None,
        k: int = 3,
        method: Literal["auto", "lanczos", "dense"] = "auto",
        tol: float = 1e-3,
        max_matvecs: int = 50,
        num_probes: int = 16,
        density_runs: int = 2,
        density_steps: int = 20,
        input_fn: Optional[InputFn] = None,
        forward_fn: Optional[ForwardFn] = None,
        at_fit_end: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end, seed=seed)
        check_positive_int("probe_size", probe_size, optional=True)
        for name, value in (("k", k), ("max_matvecs", max_matvecs),
                            ("density_steps", density_steps)):
            check_positive_int(name, value)
        check_choice("method", method, ("auto", "lanczos", "dense"))
        check_positive_int("num_probes", num_probes, minimum=2)  # two for a standard error
        check_positive_int("density_runs", density_runs, minimum=0)
        check_tolerance("tol", tol)
        if max_matvecs < k:
            raise ConfigurationError(f"`max_matvecs` ({max_matvecs}) must be at least `k` ({k})")
        self.probe_size, self.k, self.method, self.tol, self.max_matvecs = probe_size, k, method, tol, max_matvecs
        self.num_probes, self.density_runs, self.density_steps = num_probes, density_runs, density_steps
        self.input_fn = input_fn or functools.partial(batch_inputs, owner="JacobianSpectrum")
        self.forward_fn = forward_fn
        self.inputs: Optional[torch.Tensor] = None
        #: the warm start of the top singular values, from measurement to measurement (never cold:
        #: the Gram operator's top directions move slowly, as in 1.x)
        self.tracker = EigenTracker(k=k, tol=tol, max_matvecs=max_matvecs, cold_every=None, seed=seed)

    @property
    def previous(self) -> Optional[EigenResult]:
        """The last measurement's Lanczos result (the next warm start)."""
        return self.tracker.previous

    def prepare(self, trainer: Any, pl_module: Any) -> None:
        batches = probe_set(trainer, pl_module, self.probe_size, seed=self.seed, default_size=8,
                            owner="JacobianSpectrum").all_batches()
        inputs = torch.cat([self.input_fn(b) for b in batches])
        if not inputs.is_floating_point():
            raise ConfigurationError(f"JacobianSpectrum needs floating-point inputs, got {inputs.dtype}: pass "
                                     "input_fn/forward_fn that differentiate through an embedding")
        self.inputs = inputs[canonical_order(inputs).to(inputs.device)]
        pl_module.eval()  # restored by the hygiene around prepare()
        with torch.no_grad():
            outputs = self._forward(pl_module)(self.inputs[:1])
        if not isinstance(outputs, torch.Tensor) or outputs.shape[:1] != (1,):
            raise ConfigurationError("JacobianSpectrum needs a model mapping a batch of inputs to one output tensor "
                                     "with the same batch size: pass forward_fn(pl_module, inputs) -> outputs")
        count = len(self.inputs) * min(self.inputs[0].numel(), outputs[0].numel())
        if self.k > count:
            raise ConfigurationError(f"`k` ({self.k}) exceeds the number of singular values ({count}): lower it "
                                     "or raise `probe_size`")

    def _forward(self, pl_module: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.forward_fn is None:
            return pl_module
        return lambda x: self.forward_fn(pl_module, x)  # type: ignore[misc]

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        assert self.inputs is not None
        pl_module.eval()  # the function the model computes at inference, also through a forward_fn (restored after)
        result = jacobian_spectrum(self._forward(pl_module), self.inputs, k=self.k, method=self.method, tol=self.tol,
                                   max_matvecs=self.max_matvecs, num_probes=self.num_probes,
                                   init=self.tracker.start(), generator=self.generator)
        self.tracker.record(result.eigen, cold=self.tracker.next_is_cold)
        scalars = {"dyn/jacobian_sigma_max": result.sigma_max, "dyn/jacobian_msv": result.msv,
                   "dyn/jacobian_msv_stderr": result.msv_stderr, "dyn/jacobian_sv2_variance": result.sv2_variance}
        scalars.update({f"dyn/jacobian_sigma_{i + 1}": float(s) for i, s in enumerate(result.sigma[1:], 1)})
        return Measurement(scalars, hvps=max(result.num_jvps, result.num_vjps),
                           extra={"sigma2": (result.sigma**2).tolist(), "squares": result.squares})

    def on_measured(self, trainer: Any, pl_module: Any, step: int, result: Measurement) -> None:
        writer = self.tensorboard(trainer)
        if writer is None or not self.density_runs:
            return
        assert self.inputs is not None
        top = result.extra["sigma2"]
        if result.extra["squares"] is not None:  # exact: a histogram of every σ²
            add_figure(writer, "dyn/jacobian_singular_values",
                       singular_value_figure(top, step=step, values=result.extra["squares"].numpy()), step)
            return
        # a generator of its own: only rank 0 draws the figure, and the series must not depend on it
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        with self.hygiene(pl_module):
            pl_module.eval()
            density = spectral_density(JacobianGramOperator(self._forward(pl_module), self.inputs), self.density_runs,
                                       self.density_steps, generator=generator)
        self.total_hvps += density.num_matvecs
        add_figure(writer, "dyn/jacobian_singular_values",
                   singular_value_figure(top, step=step, grid=density.grid, density=density.density), step)

    @functools.cached_property  # Lightning reads it at every hook call; the arguments are fixed
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, k=self.k, seed=self.seed)

    def extra_state(self) -> dict[str, Any]:
        state = self.tracker.state_dict()
        state.pop("generator")  # the callback's own generator draws the starts (checkpointed by it)
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:  # 1.2 and earlier: {"previous": ...}
        self.tracker.load_state_dict(state)
