"""lightning_dyn: dynamical-systems instruments for PyTorch Lightning training."""

from .callbacks import EdgeOfStability, HessianSharpness, SGDLyapunov

__version__ = "0.1.0"

__all__ = ["EdgeOfStability", "HessianSharpness", "SGDLyapunov"]
