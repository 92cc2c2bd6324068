"""Thin Lightning adapters: when to measure, what to feed the engine, how to log.

For users: the callbacks, ``HessianSettings`` and the errors they raise. For contributors writing
a callback: ``DynamicsCallback`` and ``Measurement`` (the contract), ``probe_set`` (a probe set
drawn from the Trainer's train loader), ``training_step_loss`` (the module's own loss) and
``LearningRateReduction`` (a learning-rate reduction that lasts under any scheduler).
"""

from .base import DynamicsCallback, Measurement
from .compat import ConfigurationError
from .critical_points import CriticalPoints
from .edge_of_stability import EdgeOfStability
from .gradient_explosion import GradientExplosionError, GradientExplosionMonitor
from .hessian_settings import HessianSettings
from .hessian_sharpness import HessianSharpness
from .instability_warning import InstabilityWarning
from .jacobian_spectrum import JacobianSpectrum
from .lr_reduction import LearningRateReduction
from .probe import probe_set, training_step_loss
from .sgd_lyapunov import SGDLyapunov

__all__ = ["ConfigurationError", "CriticalPoints", "DynamicsCallback", "EdgeOfStability", "GradientExplosionError",
           "GradientExplosionMonitor", "HessianSettings", "HessianSharpness", "InstabilityWarning", "JacobianSpectrum", "LearningRateReduction",
           "Measurement",
           "SGDLyapunov", "probe_set", "training_step_loss"]
