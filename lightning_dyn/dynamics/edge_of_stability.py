"""The edge-of-stability regimes of a sharpness series (Cohen et al. 2021, arXiv:2103.00065).

Under full-batch gradient descent the sharpness ``S`` first rises (*progressive sharpening*) until
it reaches the stability threshold ``2/η`` and then hovers at or just above it (*edge of
stability*) while the loss keeps falling non-monotonically. With the ratio ``ρ = S / threshold``:

* ``above``: ``ρ > 1 + margin`` (the step is unstable by more than the margin);
* ``edge``: ``1 − band ≤ ρ ≤ 1 + margin``;
* ``progressive_sharpening``: ``ρ < 1 − band`` and ``S`` rose by at least ``rise`` (relative) over the
  last ``window`` measurements;
* ``below``: otherwise.
"""

from __future__ import annotations

from typing import Literal, Sequence

Regime = Literal["below", "progressive_sharpening", "edge", "above"]
REGIMES: tuple[Regime, ...] = ("below", "progressive_sharpening", "edge", "above")


def classify_regime(sharpness: Sequence[float], ratio: float, *, band: float = 0.1, margin: float = 0.1,
                    rise: float = 0.02, window: int = 3) -> Regime:
    """The regime at the latest measurement (``sharpness`` the series so far, ``ratio`` the latest ρ)."""
    if ratio > 1 + margin:
        return "above"
    if ratio >= 1 - band:
        return "edge"
    if len(sharpness) > window and sharpness[-1] >= (1 + rise) * sharpness[-1 - window]:
        return "progressive_sharpening"
    return "below"
