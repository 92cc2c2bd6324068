"""Random-network ensembles: graphs sampled from graphons and digraph measures, natural-frequency laws.

The ensembles that oscillator and firing-rate networks are built on (``models``) and that the
mean-field theory of synchronisation is stated for (``dynamics``). Both layers import this one;
it imports neither.
"""

from .digraph_measures import DigraphMeasure, Discretization, SampledNetwork, grid_positions
from .frequencies import FrequencyLaw, density_at_center, natural_frequencies
from .graphs import Graphon, erdos_renyi, erdos_renyi_sparse, graphon_top_eigenvalue, sample_graphon, small_world

__all__ = [
    "DigraphMeasure",
    "Discretization",
    "SampledNetwork",
    "grid_positions",
    "FrequencyLaw",
    "Graphon",
    "density_at_center",
    "erdos_renyi",
    "erdos_renyi_sparse",
    "graphon_top_eigenvalue",
    "natural_frequencies",
    "sample_graphon",
    "small_world",
]
