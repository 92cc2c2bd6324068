"""Models whose depth is time: oscillator and firing-rate networks on graphs."""

from .coupling import GraphCoupling
from .firing_rate import FiringRateNetwork
from .frequencies import density_at_center, natural_frequencies
from .graphs import erdos_renyi, erdos_renyi_sparse, graphon_top_eigenvalue, sample_graphon, small_world
from .mlp import SquaredLossMLP
from .kuramoto import KuramotoNetwork, order_parameter, time_averaged_order_parameter

__all__ = [
    "FiringRateNetwork",
    "GraphCoupling",
    "KuramotoNetwork",
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
