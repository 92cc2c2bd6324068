"""Dynamical-systems quantities built on the curvature engine and the models."""

from .edge_of_stability import REGIMES, classify_regime
from .mean_field import critical_coupling, lorentzian_order_parameter
from .stability import StabilityScaling, UnsupportedOptimizer, stability_scaling, stability_threshold

__all__ = [
    "REGIMES",
    "classify_regime",
    "StabilityScaling",
    "UnsupportedOptimizer",
    "critical_coupling",
    "lorentzian_order_parameter",
    "stability_scaling",
    "stability_threshold",
]
