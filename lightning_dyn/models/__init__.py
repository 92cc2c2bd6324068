"""Models whose depth is time: neural ODE and delay-equation layers, oscillator and firing-rate
networks on graphs."""

from .coupling import GraphCoupling
from .firing_rate import FiringRateNetwork
from .frequencies import density_at_center, natural_frequencies
from .graphs import erdos_renyi, erdos_renyi_sparse, graphon_top_eigenvalue, sample_graphon, small_world
from .mlp import SquaredLossMLP
from .neural_dde import NeuralDDE
from .neural_ode import AugmentedNeuralODE, NeuralODE
from .regressor import ContinuousDepthRegressor
from .kuramoto import KuramotoNetwork, order_parameter, time_averaged_order_parameter

__all__ = [
    "AugmentedNeuralODE",
    "ContinuousDepthRegressor",
    "FiringRateNetwork",
    "GraphCoupling",
    "KuramotoNetwork",
    "NeuralDDE",
    "NeuralODE",
    "SquaredLossMLP",
    "density_at_center",
    "erdos_renyi",
    "erdos_renyi_sparse",
    "graphon_top_eigenvalue",
    "natural_frequencies",
    "order_parameter",
    "sample_graphon",
    "small_world",
    "time_averaged_order_parameter",
]
