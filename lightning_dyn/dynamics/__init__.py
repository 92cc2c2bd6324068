"""Dynamical-systems quantities built on the curvature engine and the models."""

from .mean_field import critical_coupling, lorentzian_order_parameter

__all__ = ["critical_coupling", "lorentzian_order_parameter"]
