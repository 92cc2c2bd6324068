"""HessianSettings: which Hessian a callback measures and how its top eigenpairs are computed.

``HessianSharpness`` and ``EdgeOfStability`` measure the same object — the top eigenpairs of the
Hessian of the training loss over a fixed probe set — and take these settings as one argument,
``hessian=HessianSettings(...)``. In a LightningCLI YAML they are a nested mapping::

    - class_path: lightning_dyn.EdgeOfStability
      init_args:
        every_n_steps: 50
        hessian: {k: 2, probe_size: 512, backend: finite_difference}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch

from ..curvature.backends import SETTINGS_BACKENDS, SettingsBackend
from .compat import ConfigurationError
from .validation import check_choice, check_positive_int, check_tolerance

Backend = SettingsBackend


@dataclass(frozen=True)
class HessianSettings:
    """The Hessian measured and the eigensolver's settings (all keyword arguments).

    Args:
        k: number of top eigenvalues.
        tol: relative accuracy of the eigenvalues (Lanczos error bound), in ``(0, 1)``.
        max_matvecs: cap on Hessian-vector products per eigenvalue measurement (``≥ k``).
        probe_size: samples in the probe set (all ranks together), drawn once when training starts
            from the training set by a private generator (no generator of the run moves); default
            1000, or the whole training set when it is smaller. Ignored when ``probe_batches`` is given.
        probe_batches: the probe set as a list of batches, instead of drawing it.
        loss_fn: ``loss_fn(pl_module, batch) -> scalar``; default: the module's ``training_step``
            (a tensor or a dict with ``"loss"``), with its ``self.log`` calls muted. Required under
            manual optimization (that ``training_step`` steps the optimizer itself).
        mode: the module's mode while measuring: ``"eval"`` (default; every module in eval mode —
            Dropout off, BatchNorm running statistics) or ``"train"``: the modes training has at that
            step, each module's flag left as it is (a BatchNorm frozen in eval mode stays frozen).
        backend: how Hessian-vector products are taken: ``"auto"`` (default: one product at setup
            decides — double backward where it runs and is right, else central differences of
            gradients, said in one line), ``"double_backward"`` or ``"finite_difference"``.
        cold_every: every this many measurements start Lanczos cold instead of warm (``None``:
            never). A warm start cannot see a new top direction it does not contain.
        optimizer: which of the run's optimizers the measurement is about (an index into
            ``trainer.optimizers``; default the first): the Hessian is over the parameters that
            optimizer steps — those of its parameter groups that require grad — so a GAN's
            discriminator, or a backbone left out of a head-only optimizer, is not measured with the
            generator's or the head's step. A run without an optimizer is measured over every
            trainable parameter.
    """

    k: int = 1
    tol: float = 1e-3
    max_matvecs: int = 100
    probe_size: Optional[int] = None
    probe_batches: Optional[list] = None
    loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None
    mode: Literal["eval", "train"] = "eval"
    backend: Backend = "auto"
    cold_every: Optional[int] = 10
    optimizer: int = 0

    def __post_init__(self) -> None:
        check_positive_int("k", self.k)
        check_positive_int("max_matvecs", self.max_matvecs)
        check_positive_int("probe_size", self.probe_size, optional=True)
        check_positive_int("cold_every", self.cold_every, optional=True)
        check_positive_int("optimizer", self.optimizer, minimum=0)
        check_tolerance("tol", self.tol)
        if self.max_matvecs < self.k:
            raise ConfigurationError(f"`max_matvecs` ({self.max_matvecs}) must be at least `k` ({self.k})")
        check_choice("mode", self.mode, ("eval", "train"))
        check_choice("backend", self.backend, SETTINGS_BACKENDS)
        if self.probe_batches is not None and len(self.probe_batches) == 0:
            raise ConfigurationError("`probe_batches` is empty: pass at least one batch, or None to draw them")
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise ConfigurationError(f"`loss_fn` must be callable as loss_fn(pl_module, batch), got "
                                     f"{type(self.loss_fn).__name__}")
