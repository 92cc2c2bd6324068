"""The mesh of the method of steps: uniform steps plus the breakpoints of the delays.

The solution's derivative jumps at ``t0`` (history and solution meet) and the jump propagates to
the ``m``-th derivative at ``t0 + Σ_i m_i τ_i`` with ``Σ_i m_i = m``. A method of order ``p``
loses its order on a step that straddles a jump in one of the first ``p`` derivatives, so those
breakpoints (``1 ≤ Σ m_i ≤ p``) are mesh nodes (Bellen & Zennaro 2003, §3.2). Uniform nodes within
a tenth of a step of a breakpoint are dropped, so no step is tiny.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Optional

#: a mesh node: its time, and the delay multiplicities ``(m_1, …, m_k)`` when it is a breakpoint
Node = tuple[float, Optional[tuple[int, ...]]]


def breakpoint_mesh(t_span: tuple[float, float], delays: list[float], step_size: float, order: int,
                    max_steps: int) -> list[Node]:
    """Sorted mesh nodes on ``t_span`` for delays ``delays`` (host floats) and a method of ``order``."""
    t0, t1 = t_span
    h = step_size
    breaks: dict[float, tuple[int, ...]] = {}
    for total in range(1, order + 1):
        for ms in itertools.product(range(total + 1), repeat=len(delays)):
            if sum(ms) != total:
                continue
            value = t0 + sum(m * tau for m, tau in zip(ms, delays))
            if value < t1 - 1e-12 * max(1.0, abs(t1)):
                breaks.setdefault(round(value, 12), ms)
    count = math.ceil((t1 - t0) / h - 1e-9)
    if count + len(breaks) > max_steps:
        raise ValueError(f"step_size={h} on t_span={t_span} needs {count + len(breaks)} steps, more than "
                         f"max_steps={max_steps}")
    uniform = [t0 + k * h for k in range(1, count)]
    bvals = sorted(breaks)
    nodes: list[Node] = [(t0, None), (t1, None)]
    nodes += [(v, breaks[v]) for v in bvals]

    def far_from_breaks(u: float) -> bool:
        i = bisect.bisect_left(bvals, u)
        return min(abs(u - b) for b in bvals[max(0, i - 1):i + 1]) > 0.1 * h

    nodes += [(u, None) for u in uniform if not bvals or far_from_breaks(u)]
    return sorted(nodes, key=lambda n: n[0])
