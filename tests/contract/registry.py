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

from tests.contract.minimal import TopHessianEigenvalue


@dataclass
class ContractEntry:
    name: str
    factory: Callable[..., Any]
    tags: tuple[str, ...]
    bad_kwargs: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    ddp_tag: str = ""
    #: the callback takes ``loss_fn(pl_module, batch)`` (setup checks and NaN reporting are run)
    accepts_loss_fn: bool = True


ENTRIES = [
    ContractEntry(
        name="TopHessianEigenvalue",
        factory=lambda **kw: TopHessianEigenvalue(**{"every_n_steps": 4, **kw}),
        tags=("dyn/sharpness", "dyn/cost/TopHessianEigenvalue_hvps", "dyn/cost/TopHessianEigenvalue_seconds"),
        bad_kwargs=[({"every_n_steps": 0}, "every_n_steps"), ({"probe_size": -1}, "probe_size"),
                    ({"tol": 2.0}, "tol")],
        ddp_tag="dyn/sharpness",
    ),
]
