"""Argument checks shared by every callback: each raises a ``ConfigurationError`` naming the argument.

One vocabulary across the callbacks (what the words mean is in each callback's docstring):
``every_n_steps``/``at_fit_end``/``seed`` — the schedule and the private generator, on every
callback; ``mode`` — the module's train/eval mode while measuring (``"train"``: the modes training has); ``method`` — the algorithm a
measurement uses; ``backend`` — how Hessian-vector products are taken; ``action`` — what happens
when a callback's condition is met, ``"none"`` (log only), ``"warn"``, ``"stop"`` and the
callback's own; ``tol`` — a relative accuracy in ``(0, 1)``.
"""

from __future__ import annotations

from typing import Any, Optional

from .compat import ConfigurationError


def check_positive_int(name: str, value: Any, minimum: int = 1, *, optional: bool = False) -> None:
    """An integer ``≥ minimum`` (1 by default; ``None`` too when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigurationError(f"`{name}` must be {wanted}{' or None' if optional else ''}, got {value!r}")


def check_positive(name: str, value: Any, *, above: float = 0.0, optional: bool = False) -> None:
    """A number ``> above`` (``None`` too when ``optional``)."""
    if optional and value is None:
        return
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > above):
        raise ConfigurationError(f"`{name}` must be a number > {above:g}{' or None' if optional else ''}, "
                                 f"got {value!r}")


def check_fraction(name: str, value: Any, *, closed_below: bool = False) -> None:
    """A number in ``(0, 1)`` (``[0, 1)`` when ``closed_below``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1 and (
        value >= 0 if closed_below else value > 0)
    if not ok:
        raise ConfigurationError(f"`{name}` must be a number in {'[0' if closed_below else '(0'}, 1), got {value!r}")


def check_tolerance(name: str, value: Any) -> None:
    """A relative accuracy: a number in ``(0, 1)``."""
    check_fraction(name, value)


def check_choice(name: str, value: Any, allowed: tuple, renamed: Optional[dict[Any, Any]] = None) -> None:
    """One of ``allowed``; a spelling of an earlier version (``renamed``: old → new) is named as such."""
    if value in allowed:
        return
    if renamed and value in renamed:
        raise ConfigurationError(f"`{name}={value!r}` is spelled `{name}={renamed[value]!r}` since lightning_dyn 1.0")
    raise ConfigurationError(f"`{name}` must be one of {', '.join(map(repr, allowed))}; got {value!r}")
