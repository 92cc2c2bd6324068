"""lightning_dyn: dynamical-systems instruments for PyTorch Lightning training.

The top level holds what a user of the callbacks and layers needs; the subpackages hold the rest,
one layer each (imports point downwards only):

- ``curvature``  — Hessian-vector products, Lanczos, Hutch++, SLQ on curvature operators (no Lightning);
- ``dynamics``   — optimizer stability thresholds, Lyapunov spectra, SGD linearised near
  interpolation, signal propagation, input–output Jacobians, synchronisation theory;
- ``callbacks``  — the Lightning callbacks that measure those quantities during training;
- ``function_classes`` — which functions an architecture can represent: critical points of scalar
  input–output maps (MLPs, neural ODEs), found numerically and classified by the theorem;
- ``dde``        — delay differential equations by the method of steps (``ddeint``);
- ``ensembles``  — random graphs (graphons) and natural-frequency laws;
- ``models``     — neural ODE/DDE layers, Kuramoto and firing-rate networks, example modules;
- ``data``       — small datasets that need no download.
"""

from .callbacks import (ConfigurationError, CriticalPoints, EdgeOfStability, GradientExplosionError,
                        GradientExplosionMonitor, HessianSettings, HessianSharpness, InstabilityWarning, JacobianSpectrum,
                        SGDLyapunov)
from .dde import ddeint
from .dynamics import jacobian_spectrum, lyapunov_spectrum, sgd_lyapunov
from .function_classes import classify_architecture, find_critical_points
from .models import AugmentedNeuralODE, KuramotoNetwork, NeuralDDE, NeuralODE

__version__ = "1.6.0"

__all__ = [
    # callbacks and their settings
    "CriticalPoints", "EdgeOfStability", "GradientExplosionMonitor", "HessianSettings", "HessianSharpness",
    "InstabilityWarning", "JacobianSpectrum",
    "SGDLyapunov",
    # errors users catch
    "ConfigurationError", "GradientExplosionError",
    # layers
    "AugmentedNeuralODE", "KuramotoNetwork", "NeuralDDE", "NeuralODE",
    # the engine's functions on plain modules
    "classify_architecture", "ddeint", "find_critical_points", "jacobian_spectrum", "lyapunov_spectrum", "sgd_lyapunov",
]
