"""lightning_dyn: dynamical-systems instruments for PyTorch Lightning training."""

from .callbacks import (EdgeOfStability, GradientExplosionError, GradientExplosionMonitor, HessianSharpness,
                        JacobianSpectrum, SGDLyapunov)
from .dynamics.jacobian_spectrum import jacobian_spectrum
from .models.neural_dde import NeuralDDE
from .models.neural_ode import AugmentedNeuralODE, NeuralODE

__version__ = "0.1.0"

__all__ = ["AugmentedNeuralODE", "EdgeOfStability", "GradientExplosionError", "GradientExplosionMonitor",
           "HessianSharpness", "JacobianSpectrum", "NeuralDDE", "NeuralODE", "SGDLyapunov", "jacobian_spectrum"]
