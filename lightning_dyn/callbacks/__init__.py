"""Thin Lightning adapters: when to measure, what to feed the engine, how to log."""

from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError
from .edge_of_stability import EdgeOfStability
from .gradient_explosion import GradientExplosionError, GradientExplosionMonitor
from .hessian_sharpness import HessianSharpness
from .jacobian_spectrum import JacobianSpectrum
from .sgd_lyapunov import SGDLyapunov

__all__ = ["ConfigurationError", "DynamicsCallback", "EdgeOfStability", "GradientExplosionError",
           "GradientExplosionMonitor", "HessianSharpness", "JacobianSpectrum", "Measurement", "SGDLyapunov"]
