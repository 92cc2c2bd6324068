"""Thin Lightning adapters: when to measure, what to feed the engine, how to log."""

from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError

__all__ = ["ConfigurationError", "DynamicsCallback", "Measurement"]
