"""The ways a Hessian-vector product is taken, in one table.

Every place that names a backend — :class:`~lightning_dyn.curvature.HessianOperator`, the callbacks'
``HessianSettings(backend=...)``, the setup check that picks one, the cost a callback logs — reads
it from :data:`PRODUCT_BACKENDS` here:

=========================  =======  ================  ==========================================
backend                    exact    cost (gradients)  what it needs
=========================  =======  ================  ==========================================
``double_backward``        yes      ≈ 2               a twice-differentiable graph
``forward_over_reverse``   yes      ≈ 2               ``torch.func`` transforms of the loss
``finite_difference``      no       2 (central)       first-order backward only
=========================  =======  ================  ==========================================

"Exact" means up to rounding; central differences are accurate to the operator's estimated
``relative_error`` (``lightning_dyn.curvature.finite_difference``). A callback may ask for
``"auto"`` (:data:`SETTINGS_BACKENDS`): a product at setup decides between the first and the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ProductBackend:
    """One way of taking ``Hv``.

    Attributes:
        name: the name users pass.
        exact: the product is exact up to rounding (else: accurate to ``relative_error``).
        second_order: it differentiates through the backward pass (double backward or ``torch.func``).
        cost_unit: the unit of the product count a callback logs, ``dyn/cost/<callback>_<cost_unit>``.
        gradients_per_product: the cost of a product in gradient evaluations (central differences:
            their stencil's; the exact backends: measured, ``benchmarks/curvature.py``).
    """

    name: str
    exact: bool
    second_order: bool
    cost_unit: str
    gradients_per_product: float


#: every backend, by name
PRODUCT_BACKENDS: dict[str, ProductBackend] = {b.name: b for b in (
    ProductBackend("double_backward", exact=True, second_order=True, cost_unit="hvps", gradients_per_product=2.0),
    ProductBackend("forward_over_reverse", exact=True, second_order=True, cost_unit="hvps", gradients_per_product=2.0),
    ProductBackend("finite_difference", exact=False, second_order=False, cost_unit="fd_hvps",
                   gradients_per_product=2.0),
)}

#: what a callback's ``HessianSettings(backend=...)`` accepts
SettingsBackend = Literal["auto", "double_backward", "finite_difference"]
#: the names ``HessianSettings(backend=...)`` accepts
SETTINGS_BACKENDS: tuple[str, ...] = ("auto", "double_backward", "finite_difference")
#: the exact backend ``"auto"`` tries first
PREFERRED = "double_backward"
#: the backend ``"auto"`` falls back to when the exact one cannot run or is wrong
FALLBACK = "finite_difference"


def product_backend(name: str) -> ProductBackend:
    """The table's entry for ``name``; a ``ValueError`` naming the choices for anything else."""
    try:
        return PRODUCT_BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend must be one of {', '.join(map(repr, PRODUCT_BACKENDS))}, got {name!r}") from None
