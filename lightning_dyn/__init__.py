"""lightning_dyn: dynamical-systems instruments for PyTorch Lightning training."""

from .callbacks import EdgeOfStability, HessianSharpness, SGDLyapunov
from .models.neural_dde import NeuralDDE
from .models.neural_ode import AugmentedNeuralODE, NeuralODE

__version__ = "0.1.0"

__all__ = ["AugmentedNeuralODE", "EdgeOfStability", "HessianSharpness", "NeuralDDE", "NeuralODE", "SGDLyapunov"]
