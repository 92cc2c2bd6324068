"""Which functions an architecture can represent: critical points of scalar input–output maps.

Kuehn & Kuntz (arXiv:2405.09351): an MLP whose widths never increase, or a neural ODE whose phase
space is no larger than its input, has no critical points at all (it cannot represent a minimum, a
maximum or a saddle); augmented architectures without a bottleneck are Morse functions for generic
weights; bottlenecks and rank-deficient read-ins allow degenerate critical points.

- ``classify_architecture(module)`` — which case an ``nn.Sequential`` MLP or a (augmented) neural
  ODE with affine read-in/read-out is in, and why;
- ``find_critical_points(f, box)`` — the critical points of a trained map on a box, with Morse index,
  degeneracy and a Newton certificate, or the evidence that there are none.

This layer sits above ``models`` (it recognises their layers) and below ``callbacks``.
"""

from .architecture import FunctionClass, classify_architecture
from .critical_points import CriticalPointSearch, find_critical_points

__all__ = ["CriticalPointSearch", "FunctionClass", "classify_architecture", "find_critical_points"]
