"""Linear algebra on curvature operators (knows nothing of Lightning).

``HessianOperator`` (products over a fixed probe set), ``top_eigenpairs`` (Lanczos with an error
bound and warm starts), ``EigenTracker`` (the top eigenpairs followed across training: warm starts,
the cold rule, the reuse of the products' error), ``UpdateCurvature`` (the secant curvature along
each update, from consecutive gradients), ``trace`` (Hutch++ / Hutchinson), ``spectral_density`` (stochastic
Lanczos quadrature), ``PreconditionedOperator`` (``D H D``), ``ShardedHessianOperator`` (the Hessian
of an FSDP2-sharded model, shard by shard).
"""

from .minibatch_sharpness import BatchSharpnessEstimate, BatchSharpnessSampler, batch_sharpness
from .density import SpectralDensity, spectral_density
from .eigen import EigenResult, top_eigenpairs
from .hessian import HessianOperator
from .operator import CurvatureOperator, DenseOperator, MatrixFreeOperator
from .preconditioned import PreconditionedOperator
from .sharded import ShardedHessianOperator
from .trace_estimation import TraceEstimate, trace
from .tracking import EigenTracker
from .update_curvature import UpdateCurvature

__all__ = [
    "BatchSharpnessEstimate",
    "BatchSharpnessSampler",
    "batch_sharpness",
    "CurvatureOperator",
    "DenseOperator",
    "EigenTracker",
    "UpdateCurvature",
    "MatrixFreeOperator",
    "EigenResult",
    "HessianOperator",
    "PreconditionedOperator",
    "ShardedHessianOperator",
    "SpectralDensity",
    "TraceEstimate",
    "spectral_density",
    "top_eigenpairs",
    "trace",
]
