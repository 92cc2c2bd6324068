"""Thin Lightning adapters: when to measure, what to feed the engine, how to log."""

from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError
from .edge_of_stability import EdgeOfStability
from .hessian_sharpness import HessianSharpness
from .sgd_lyapunov import SGDLyapunov

__all__ = ["ConfigurationError", "DynamicsCallback", "EdgeOfStability", "HessianSharpness", "Measurement", "SGDLyapunov"]
