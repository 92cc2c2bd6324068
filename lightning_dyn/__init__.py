"""lightning_dyn: dynamical-systems instruments for PyTorch Lightning training."""

__version__ = "0.1.0"
