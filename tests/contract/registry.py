"""The callbacks the contract suite checks. A new callback adds one entry here and the whole
suite (tests/contract/test_contract.py) runs on it.

Each entry gives:
- ``factory(**overrides)``: a fresh callback measuring often enough for a 12-step run;
- ``tags``: scalar tags it must log through Lightning;
- ``bad_kwargs``: (kwargs, argument name) pairs that must raise naming the argument;
- ``ddp_tag``: the tag compared between ranks and against one process on all the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch.nn import functional as F

from lightning_dyn import EdgeOfStability, HessianSharpness, SGDLyapunov


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


ENTRIES = [
    ContractEntry(
        name="HessianSharpness",
        factory=lambda **kw: HessianSharpness(**{"every_n_steps": 4, "k": 2, "probe_size": 256, "tol": 1e-6,
                                                  "trace_every_n_steps": 8, "density_every_n_steps": 8,
                                                  "density_runs": 2, "density_steps": 10, **kw}),
        tags=("dyn/sharpness", "dyn/eig_1", "dyn/cost/HessianSharpness_hvps"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"k": 0}, "k"), ({"tol": 0.0}, "tol"),
                    ({"mode": "test"}, "mode"), ({"cold_every": -1}, "cold_every"),
                    ({"probe_batches": []}, "probe_batches")],
        ddp_tag="dyn/sharpness",
    ),
    ContractEntry(
        name="EdgeOfStability",
        factory=lambda **kw: EdgeOfStability(**{"every_n_steps": 4, "probe_size": 256, "tol": 1e-6, **kw}),
        tags=("dyn/sharpness_ratio", "dyn/sharpness", "dyn/stability_threshold", "dyn/regime"),
        bad_kwargs=[({"every_n_steps": -3}, "every_n_steps"), ({"action": "explode"}, "action"),
                    ({"act_on": "below"}, "act_on"), ({"margin": 2.0}, "margin"), ({"lr_factor": 1.5}, "lr_factor")],
        ddp_tag="dyn/sharpness",
    ),
    ContractEntry(
        name="SGDLyapunov-gram",
        factory=lambda **kw: SGDLyapunov(**{"every_n_steps": 4, "criterion": F.cross_entropy, "probe_size": 64,
                                             "batch_size": 16,
                                             "num_steps": 60, "num_lrs": 6, **kw}),
        tags=("dyn/sgd_lyapunov", "dyn/gd_lyapunov", "dyn/wme_sharpness", "dyn/probe_loss"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"mode": "exact"}, "mode"),
                    ({"interpolation_tol": 0.0}, "interpolation_tol"), ({"lr": -1.0}, "lr"),
                    ({"num_steps": 5}, "num_steps"), ({"precision": "half"}, "precision"),
                    ({"sampling": "stratified"}, "sampling")],
        ddp_tag="dyn/sgd_lyapunov",
        accepts_loss_fn=False,
        ddp_kwargs={"probe_size": 256, "sampling": "reshuffle"},
    ),
    ContractEntry(
        name="SGDLyapunov-hvp",
        factory=lambda **kw: SGDLyapunov(**{"every_n_steps": 4, "mode": "hvp", "probe_size": 16, "batch_size": 4, "num_steps": 20,
                                             "num_lrs": 1, "batch_sizes": [], "hvp_directions": 4, **kw}),
        tags=("dyn/sgd_lyapunov", "dyn/gd_lyapunov", "dyn/wme_sharpness"),
        bad_kwargs=[({"batch_size": 0}, "batch_size"), ({"batch_sizes": [4, -1]}, "batch_sizes")],
        ddp_tag="dyn/sgd_lyapunov",
        ddp_kwargs={"probe_size": 256, "sampling": "reshuffle"},
    ),
]
