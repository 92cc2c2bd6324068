"""Dynamical-systems quantities built on the curvature engine and the models."""

from .mean_field import critical_coupling, lorentzian_order_parameter
from .stability import StabilityScaling, UnsupportedOptimizer, stability_scaling, stability_threshold

__all__ = [
    "StabilityScaling",
    "UnsupportedOptimizer",
    "critical_coupling",
    "lorentzian_order_parameter",
    "stability_scaling",
    "stability_threshold",
]
