"""Models whose depth is time: neural ODE and delay-equation layers, oscillator and firing-rate
networks on graphs (the graphs and frequency laws they are built on are in ``ensembles``)."""

from .coupling import GraphCoupling
from .firing_rate import FiringRateNetwork
from .mlp import SquaredLossMLP
from .neural_dde import NeuralDDE
from .neural_ode import AugmentedNeuralODE, NeuralODE
from .regressor import ContinuousDepthRegressor
from .surface_regressor import SurfaceRegressor
from .kuramoto import KuramotoNetwork, order_parameter, time_averaged_order_parameter
from .stochastic import sdeint_additive

__all__ = [
    "AugmentedNeuralODE",
    "ContinuousDepthRegressor",
    "FiringRateNetwork",
    "GraphCoupling",
    "KuramotoNetwork",
    "NeuralDDE",
    "NeuralODE",
    "SquaredLossMLP",
    "SurfaceRegressor",
    "order_parameter",
    "sdeint_additive",
    "time_averaged_order_parameter",
]
