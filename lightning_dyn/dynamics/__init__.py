"""Dynamical-systems quantities built on the curvature engine and the models."""

from .backprop_signal import BackpropSignal, find_blocks
from .central_flow import CentralFlow, FlowPoint, module_loss
from .complementarity import complementarity_residual, solve_complementarity
from .early_warning import InstabilityDetector, Risk, alarm_episodes, divergence_step, loss_spikes
from .edge_of_stability import REGIMES, classify_regime
from .spike_detection import GradientDetector
from .incoherence import critical_coupling_from_rates, exponential_rate, incoherence_growth_rate, kronecker_phases
from .input_jacobian import JacobianSpectrumResult, jacobian_spectrum
from .lyapunov import LyapunovSpectrum, lyapunov_spectrum
from .ntk import empirical_ntk
from .sgd_stability import SGDStability, StabilityDiagram, critical_lr, sgd_lyapunov
from .synchronization import (critical_coupling, critical_gain, lorentzian_order_parameter, noisy_critical_coupling,
                              noisy_order_parameter)
from .twisted_states import TwistedState, twisted_state
from .vlasov import VlasovKuramoto, VlasovSolution, wrapped_cauchy_phases
from .signal_propagation import MeanFieldPoint, backprop_lyapunov, critical_weight_variance, mean_field
from .optimizer_thresholds import StabilityScaling, UnsupportedOptimizer, stability_scaling, stability_threshold
from .update_stability import UpdateStability
from .warning_signals import WarningSignals

__all__ = [
    "CentralFlow",
    "FlowPoint",
    "module_loss",
    "complementarity_residual",
    "solve_complementarity",
    "BackpropSignal",
    "GradientDetector",
    "InstabilityDetector",
    "alarm_episodes",
    "divergence_step",
    "loss_spikes",
    "Risk",
    "UpdateStability",
    "WarningSignals",
    "JacobianSpectrumResult",
    "MeanFieldPoint",
    "backprop_lyapunov",
    "critical_weight_variance",
    "find_blocks",
    "jacobian_spectrum",
    "mean_field",
    "LyapunovSpectrum",
    "REGIMES",
    "SGDStability",
    "StabilityDiagram",
    "critical_lr",
    "empirical_ntk",
    "lyapunov_spectrum",
    "sgd_lyapunov",
    "classify_regime",
    "StabilityScaling",
    "UnsupportedOptimizer",
    "critical_coupling",
    "critical_gain",
    "lorentzian_order_parameter",
    "noisy_critical_coupling",
    "noisy_order_parameter",
    "critical_coupling_from_rates",
    "exponential_rate",
    "incoherence_growth_rate",
    "kronecker_phases",
    "TwistedState",
    "twisted_state",
    "VlasovKuramoto",
    "VlasovSolution",
    "wrapped_cauchy_phases",
    "stability_scaling",
    "stability_threshold",
]
