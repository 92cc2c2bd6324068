"""Dynamical-systems quantities built on the curvature engine and the models."""

from .edge_of_stability import REGIMES, classify_regime
from .lyapunov import LyapunovSpectrum, lyapunov_spectrum
from .ntk import empirical_ntk
from .sgd_lyapunov import SGDStability, StabilityDiagram, critical_lr, sgd_lyapunov
from .mean_field import critical_coupling, lorentzian_order_parameter
from .stability import StabilityScaling, UnsupportedOptimizer, stability_scaling, stability_threshold

__all__ = [
    "LyapunovSpectrum",
    "REGIMES",
    "SGDStability",
    "StabilityDiagram",
    "critical_lr",
    "empirical_ntk",
    "lyapunov_spectrum",
    "sgd_lyapunov",
    "classify_regime",
    "StabilityScaling",
    "UnsupportedOptimizer",
    "critical_coupling",
    "lorentzian_order_parameter",
    "stability_scaling",
    "stability_threshold",
]
