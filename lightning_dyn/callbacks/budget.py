"""A share of training that measurements may spend: an adaptive schedule with a stated rule.

A measurement due by the fixed schedule (every ``every_n_steps`` optimizer steps) is taken only
while everything measured so far has cost at most ``max_overhead`` of the training done so far:

    spent ≤ max_overhead × step,

both counted in gradient evaluations of one training batch — a training step is one (forward and
backward of a batch); a Hessian-vector product on the probe set is ``g`` of them, ``g`` the
backend's gradients per product (two) times the probe's size in training batches. So a costly
measurement pushes the next one later, to the next step of the fixed schedule at which the budget
has recovered, and the run's measurements cost ``max_overhead`` of its gradient evaluations at
most (plus one measurement's worth). The count is deterministic — products, not seconds — so every
rank of a distributed run and every rerun measures at the same steps. ``None``: the fixed schedule.
"""

from __future__ import annotations

from typing import Any, Optional

from .compat import ConfigurationError


class OverheadBudget:
    """The rule above. ``max_overhead`` in ``(0, 1)``, or ``None`` for no budget."""

    def __init__(self, max_overhead: Optional[float]) -> None:
        if max_overhead is not None and not (isinstance(max_overhead, (int, float)) and 0 < max_overhead < 1):
            raise ConfigurationError(f"`max_overhead` must be a fraction in (0, 1) or None, got {max_overhead!r}")
        self.max_overhead = None if max_overhead is None else float(max_overhead)
        #: gradient evaluations spent by measurements so far
        self.spent = 0.0

    def allows(self, step: int) -> bool:
        """Whether a measurement at ``step`` keeps within the budget."""
        return self.max_overhead is None or self.spent <= self.max_overhead * step

    def charge(self, gradients: float) -> None:
        self.spent += float(gradients)

    def describe(self) -> str:
        if self.max_overhead is None:
            return "a fixed schedule"
        return (f"measurements skipped while they would exceed {self.max_overhead:.0%} of training's gradient "
                "evaluations (max_overhead)")

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent = float(state["spent"])
