"""The callbacks the contract suite checks. A new callback adds one entry here and the whole
suite (tests/contract/test_contract.py) runs on it.

Each entry gives:
- ``factory(**overrides)``: a fresh callback measuring often enough for a 12-step run;
- ``tags``: scalar tags it must log through Lightning;
- ``bad_kwargs``: (kwargs, argument name) pairs that must raise naming the argument;
- ``ddp_tag``: the tag compared between ranks and against one process on all the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

from torch.nn import functional as F

from lightning_dyn import (CriticalPoints, EdgeOfStability, GradientExplosionMonitor, HessianSettings, HessianSharpness,
                           InstabilityWarning, JacobianSpectrum, SGDLyapunov)


@dataclass
class ContractEntry:
    name: str
    factory: Callable[..., Any]
    tags: tuple[str, ...]
    bad_kwargs: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    ddp_tag: str = ""
    #: the callback takes ``loss_fn(pl_module, batch)`` (setup checks and NaN reporting are run)
    accepts_loss_fn: bool = True
    #: overrides for the DDP comparison, e.g. a probe set of the whole data and one sampling scheme:
    #: Lightning's distributed sampler reshuffles (and deals samples out) even when the loader does
    #: not, so one process and two ranks would otherwise describe different SGD runs
    ddp_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Trainer overrides for the DDP comparison (e.g. every rank on the whole unshuffled data, when
    #: the quantity is of the step's global batch rather than of a probe set)
    ddp_trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    #: for a callback that takes no loss: kwargs naming a setup it cannot serve, and the message expected
    unservable: tuple[dict[str, Any], str] = ({}, "")
    #: for a callback that takes no loss: ``nan_after(going_nan) -> kwargs`` making its measurement NaN
    #: once ``going_nan()`` is true (instead of a loss going NaN), or ``None`` with the reason to skip
    nan_after: Optional[Callable[[Callable[[], bool]], dict[str, Any]]] = None
    nan_skip_reason: str = ""


def first_logit(module: Any, x: Any) -> Any:
    """A scalar map of the contract's classifier: its first logit (a module-level function, so DDP
    spawn can pickle the callback)."""
    return module(x)[:, 0]


SETTINGS = {f.name for f in fields(HessianSettings)}


def _with_settings(cls: type, defaults: dict[str, Any]) -> Callable[..., Any]:
    """A factory for a callback taking ``hessian=HessianSettings(...)``: the harness's overrides
    (``loss_fn=``, ``k=``, ...) go to the settings or to the callback, wherever they belong."""

    def factory(**kw: Any) -> Any:
        merged = {**defaults, **kw}
        settings = {k: v for k, v in merged.items() if k in SETTINGS}
        rest = {k: v for k, v in merged.items() if k not in SETTINGS}
        return cls(hessian=HessianSettings(**settings), **rest)

    return factory


ENTRIES = [
    ContractEntry(
        name="HessianSharpness",
        factory=_with_settings(HessianSharpness, {"every_n_steps": 4, "k": 2, "probe_size": 256, "tol": 1e-6,
                                                  "trace_every_n_steps": 8, "density_every_n_steps": 8,
                                                  "density_runs": 2, "density_steps": 10}),
        tags=("dyn/sharpness", "dyn/eig_1", "dyn/cost/HessianSharpness_hvps"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"k": 0}, "k"), ({"tol": 0.0}, "tol"),
                    ({"mode": "test"}, "mode"), ({"cold_every": -1}, "cold_every"), ({"backend": "exact"}, "backend"),
                    ({"optimizer": -1}, "optimizer"), ({"probe_batches": []}, "probe_batches")],
        ddp_tag="dyn/sharpness",
    ),
    ContractEntry(
        name="EdgeOfStability",
        factory=_with_settings(EdgeOfStability, {"every_n_steps": 4, "probe_size": 256, "tol": 1e-6}),
        tags=("dyn/sharpness_ratio", "dyn/eos_sharpness", "dyn/stability_threshold", "dyn/regime",
              "dyn/batch_sharpness", "dyn/batch_sharpness_ratio"),
        bad_kwargs=[({"every_n_steps": -3}, "every_n_steps"), ({"action": "explode"}, "action"),
                    ({"batch_sharpness": -1}, "batch_sharpness"),
                    ({"act_on": "below"}, "act_on"), ({"margin": 2.0}, "margin"), ({"lr_factor": 1.5}, "lr_factor"),
                    ({"optimizer": 1.5}, "optimizer")],
        ddp_tag="dyn/eos_sharpness",
    ),
    ContractEntry(
        name="SGDLyapunov-gram",
        factory=lambda **kw: SGDLyapunov(**{"every_n_steps": 4, "criterion": F.cross_entropy, "probe_size": 64,
                                             "batch_size": 16,
                                             "num_steps": 60, "num_lrs": 6, **kw}),
        tags=("dyn/sgd_lyapunov", "dyn/gd_lyapunov", "dyn/wme_sharpness", "dyn/probe_loss"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"method": "exact"}, "method"),
                    ({"interpolation_tol": 0.0}, "interpolation_tol"), ({"lr": -1.0}, "lr"),
                    ({"num_steps": 5}, "num_steps"), ({"precision": "half"}, "precision"),
                    ({"sampling": "stratified"}, "sampling")],
        ddp_tag="dyn/sgd_lyapunov",
        accepts_loss_fn=False,
        ddp_kwargs={"probe_size": 128, "sampling": "reshuffle"},
        unservable=({"criterion": None}, "needs `criterion"),
        nan_after=lambda going_nan: {"criterion": lambda out, y: F.cross_entropy(out, y) * (math.nan if going_nan() else 1.0)},
    ),
    ContractEntry(
        name="SGDLyapunov-hvp",
        factory=lambda **kw: SGDLyapunov(**{"every_n_steps": 4, "method": "hvp", "probe_size": 16, "batch_size": 4, "num_steps": 20,
                                             "num_lrs": 1, "batch_sizes": [], "hvp_directions": 4, **kw}),
        tags=("dyn/sgd_lyapunov", "dyn/gd_lyapunov", "dyn/wme_sharpness"),
        bad_kwargs=[({"batch_size": 0}, "batch_size"), ({"batch_sizes": [4, -1]}, "batch_sizes")],
        ddp_tag="dyn/sgd_lyapunov",
        ddp_kwargs={"probe_size": 256, "sampling": "reshuffle"},
    ),
    ContractEntry(
        name="GradientExplosionMonitor",
        factory=lambda **kw: GradientExplosionMonitor(**{"every_n_steps": 4, "blocks": ["net.0", "net.2", "net"],
                                                          **kw}),
        tags=("dyn/grad_norm_preclip", "dyn/grad_norm_preclip_median", "dyn/grad_norm_preclip/net.0",
              "dyn/backprop_lyapunov", "dyn/backprop_signal/net.2",
              "dyn/grad_weight_ratio_preclip/net.4", "dyn/grad_events", "dyn/grad_skips"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"action": "explode"}, "action"),
                    ({"threshold": 0.0}, "threshold"), ({"threshold": -1.0}, "threshold"), ({"factor": 0.5}, "factor"),
                    ({"window": 0}, "window"), ({"max_growth": 0}, "max_growth"), ({"blocks": "net.0"}, "blocks"),
                    ({"figure_every_n_steps": 6}, "figure_every_n_steps")],
        ddp_tag="dyn/grad_norm_preclip",
        accepts_loss_fn=False,
        ddp_trainer_kwargs={"use_distributed_sampler": False},
        unservable=({"blocks": ["net.0", "net.7"]}, "no submodule named 'net.7'"),
        nan_skip_reason="a NaN loss or gradient is an event of the observed run, not a failed measurement "
                        "(tests/callbacks/test_gradient_explosion.py)",
    ),
    ContractEntry(
        name="JacobianSpectrum",
        # Lanczos (warm starts in the state, the private generator); the exact path is the default
        # for these 10 logits and is tested in tests/callbacks/test_gradient_explosion.py
        factory=lambda **kw: JacobianSpectrum(**{"every_n_steps": 4, "probe_size": 8, "k": 2, "method": "lanczos",
                                                  "density_runs": 1,
                                                  "density_steps": 8, **kw}),
        tags=("dyn/jacobian_sigma_max", "dyn/jacobian_sigma_2", "dyn/jacobian_msv", "dyn/jacobian_sv2_variance",
              "dyn/cost/JacobianSpectrum_jvp_vjp"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"k": 0}, "k"), ({"num_probes": 1}, "num_probes"),
                    ({"tol": 0.0}, "tol"), ({"density_runs": -1}, "density_runs"), ({"max_matvecs": 1}, "max_matvecs"),
                    ({"method": "svd"}, "method")],
        ddp_tag="dyn/jacobian_sigma_max",
        accepts_loss_fn=False,
        ddp_kwargs={"probe_size": 256},
        unservable=({"input_fn": lambda batch: batch[1]}, "floating-point"),
        nan_after=lambda going_nan: {"forward_fn": lambda m, x: m(x) * float("nan") if going_nan() else m(x)},
    ),
    ContractEntry(
        name="CriticalPoints",
        # the first logit on the 64 pixel inputs, searched on the bounding box of the probe set: a
        # small search (16 starts, 6 Newton iterations of 65 backward passes each) on a real map
        factory=lambda **kw: CriticalPoints(**{"every_n_steps": 4, "forward_fn": first_logit, "starts": 16,
                                                "max_iter": 6, **kw}),
        tags=("dyn/critical_points_min_grad_norm", "dyn/critical_points", "dyn/critical_points_index_0",
              "dyn/critical_points_degenerate", "dyn/cost/CriticalPoints_backward_passes"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"box": [(1.0, -1.0)]}, "box"), ({"starts": 0}, "starts"),
                    ({"max_iter": 0}, "max_iter"), ({"degeneracy_tol": 0.0}, "degeneracy_tol"),
                    ({"probe_size": -2}, "probe_size"), ({"figure": "yes"}, "figure")],
        ddp_tag="dyn/critical_points_min_grad_norm",
        accepts_loss_fn=False,
        unservable=({"forward_fn": None}, "scalar map"),
        nan_after=lambda going_nan: {"forward_fn": lambda m, x: m(x)[:, 0] * float("nan") if going_nan() else m(x)[:, 0]},
    ),
    ContractEntry(
        name="InstabilityWarning",
        factory=lambda **kw: InstabilityWarning(**{"every_n_steps": 4, "warmup": 2, **kw}),
        tags=("dyn/instability_risk_max", "dyn/instability_episodes"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"action": "explode"}, "action"),
                    ({"levels": {"loss_zscore": 3.0}}, "levels"), ({"levels": {"grad_norm_zscore": 0.0}}, "levels"),
                    ({"window": 1}, "window"), ({"warmup": 200}, "warmup"), ({"merge": 0}, "merge"),
                    ({"lr_factor": 1.0}, "lr_factor"), ({"max_consecutive_skips": 0}, "max_consecutive_skips"),
                    ({"optimizer": -1}, "optimizer")],
        ddp_tag="dyn/instability_risk_max",
        accepts_loss_fn=False,
        # the signals are of the step's global gradient: every rank on the whole data, as one process
        ddp_trainer_kwargs={"use_distributed_sampler": False},
        unservable=({"optimizer": 3}, "optimizer=3"),
        nan_skip_reason="a non-finite gradient is an event of the observed run (risk inf), not a failed "
                        "measurement (tests/callbacks/test_instability_warning.py)",
    ),
]
