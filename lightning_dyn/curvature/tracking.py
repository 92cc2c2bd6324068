"""Tracking the top eigenpairs of a curvature operator across training: warm starts, and when not.

Between two measurements a few dozen optimizer steps move the parameters a little, and the top
eigenvectors with them: the previous solve's Ritz vectors (and guard vectors, the next ones) are an
excellent start for the next solve (:func:`~lightning_dyn.curvature.top_eigenpairs` with ``init``).
:class:`EigenTracker` is the state that makes this work along a run, in one place:

* **warm or cold.** Warm from the previous result, except every ``cold_every``-th measurement, the
  first, and after the space changed: a warm start cannot see a new top direction it does not
  contain (a direction that overtakes from far down the spectrum), a cold Lanczos start from a
  random vector can.
* **the products' error.** Central-difference products carry a relative error
  (:attr:`CurvatureOperator.relative_error`) estimated by a second stencil at twice the step — two
  gradients. The first warm measurement after a cold one estimates it along the previous top
  vector, the direction the eigenvalue depends on; it moves slowly with the parameters, so the
  following warm measurements reuse it (``build(known_error)``) until the next cold one. A cold
  measurement estimates its own along its random start and keeps none: that is the error of a whole
  product, pessimistic for the top eigenvalue.
* **the space.** :meth:`EigenTracker.follow` is told what the operator's space is (e.g. which
  parameters train); when it changes — fine-tuning unfreezes a backbone — the warm start, which
  spans the old space, is dropped.

It knows nothing of Lightning (the benchmarks drive it directly) and checkpoints through
:meth:`~EigenTracker.state_dict`.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Optional

import torch

from ..sampling import generator_bytes, generator_from_bytes, private_generator
from .eigen import EigenResult, top_eigenpairs
from .operator import CurvatureOperator

#: ``build(known_error)``: the operator at the current parameters; ``known_error`` is the products'
#: relative error when it is already known (``None``: estimate it)
Build = Callable[[Optional[float]], CurvatureOperator]


class EigenTracker:
    """The top-``k`` eigenpairs of a slowly changing operator, measured warm-started.

    Args:
        k: number of top eigenpairs.
        tol: relative accuracy of each measurement (the solver's error bound).
        max_matvecs: cap on products per measurement.
        cold_every: every this many measurements start cold (``None``: only the first and after
            the space changed).
        seed: seed of the private generator of random starts, used when :meth:`measure` is given
            none.

    Attributes:
        previous: the last :class:`EigenResult` (the next warm start), or ``None``.
        measurements: measurements taken since the start (the cold rule counts them).
        product_error: the products' relative error reused by warm measurements, or ``None``.
        last_cold: whether the last measurement started cold.
    """

    def __init__(self, *, k: int = 1, tol: float = 1e-3, max_matvecs: int = 100, cold_every: Optional[int] = 10,
                 seed: int = 0) -> None:
        if cold_every is not None and cold_every < 1:
            raise ValueError(f"cold_every must be a positive integer or None, got {cold_every!r}")
        self.k, self.tol, self.max_matvecs, self.cold_every = k, float(tol), max_matvecs, cold_every
        self.generator = torch.Generator().manual_seed(seed)
        self.previous: Optional[EigenResult] = None
        self.measurements = 0
        self.product_error: Optional[float] = None
        self.last_cold = True
        self._space: Optional[Hashable] = None

    def follow(self, space: Hashable) -> bool:
        """Declare the space the next operator acts on (any hashable description of it, e.g. the
        identities and sizes of the trainable parameters). If it differs from the one declared
        before, the warm start is dropped; returns whether that happened to a warm start."""
        changed = self._space is not None and space != self._space
        self._space = space
        dropped = changed and self.previous is not None
        if changed:
            self.previous, self.product_error = None, None
        return dropped

    @property
    def next_is_cold(self) -> bool:
        """Whether the next measurement starts cold."""
        return self.previous is None or (self.cold_every is not None and self.measurements % self.cold_every == 0)

    @property
    def known_error(self) -> Optional[float]:
        """The products' relative error an operator at the current parameters may take as known."""
        return self.product_error

    def measure(self, build: Build, *, generator: Optional[torch.Generator] = None) -> EigenResult:
        """Measure the top eigenpairs of ``build(known_error)``, warm or cold by the rule above."""
        reuse = not self.next_is_cold and self.product_error is not None
        op = build(self.product_error if reuse else None)
        init = self.start()
        if init is not None and init.vectors.shape[0] != op.size:
            init = None  # resumed into another space (the checkpoint's vectors do not fit)
        result = top_eigenpairs(op, k=self.k, tol=self.tol, max_matvecs=self.max_matvecs, init=init,
                                prior=self.previous,
                                generator=self.generator if generator is None else private_generator(generator))
        if init is None:
            self.product_error = None
        elif not reuse:
            self.product_error = op.relative_error
        self.record(result, cold=init is None)
        return result

    def start(self) -> Optional[EigenResult]:
        """The next measurement's warm start by the rule (``None``: cold), for a caller whose solver
        calls :func:`~lightning_dyn.curvature.top_eigenpairs` itself (the input–output Jacobian's
        spectrum); it hands the result to :meth:`record`."""
        return None if self.next_is_cold else self.previous

    def record(self, result: Optional[EigenResult], *, cold: bool) -> None:
        """Keep ``result`` as the next warm start (``None``: none) and count the measurement."""
        self.previous, self.last_cold = result, cold
        self.measurements += 1

    def __getstate__(self) -> dict[str, Any]:  # pickled by ``ddp_spawn``
        return {**self.__dict__, "generator": generator_bytes(self.generator)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "generator": generator_from_bytes(state["generator"])})

    def reset(self) -> None:
        """Forget the warm start (the next measurement is cold); the count is kept."""
        self.previous, self.product_error = None, None

    def state_dict(self, *, vectors: bool = True) -> dict[str, Any]:
        """The tracker's state; ``vectors=False`` leaves out the warm start (it is then cold after a
        resume — e.g. vectors sharded over ranks, of which a checkpoint keeps one rank's)."""
        keep = vectors and self.previous is not None
        return {"previous": vars(self.previous) if keep else None, "measurements": self.measurements,
                "product_error": self.product_error if keep else None,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = None if state["previous"] is None else EigenResult(**state["previous"])
        self.product_error = state.get("product_error")
        self.measurements = state.get("measurements", 0)
        if "generator" in state:
            self.generator.set_state(state["generator"])
