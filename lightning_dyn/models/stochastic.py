"""Stochastic differential equations with additive noise: ``dX = f(t, X) dt + σ dW``.

Two fixed-step schemes on Brownian increments ``ΔW ~ N(0, Δt)`` drawn from a private generator
(the same generator state gives the same path; a batch of states gets independent paths):

* ``"euler_maruyama"``: ``X_{n+1} = X_n + f(t_n, X_n) Δt + σ ΔW_n`` (Maruyama 1955). Strong order ½
  in general; for additive noise (σ independent of ``X``) it coincides with Milstein's scheme and
  has strong order 1, weak order 1.
* ``"heun"``: the stochastic Heun (trapezoidal predictor–corrector) scheme
  ``X̃ = X_n + f_n Δt + σΔW_n``, ``X_{n+1} = X_n + ½(f_n + f(t_{n+1}, X̃)) Δt + σΔW_n``: strong
  order 1 and weak order 2 for additive noise (Kloeden & Platen 1992, §15.1), at two drift
  evaluations a step.

For ``dX = −λX dt + σ dW`` both have closed-form stationary variances, which the tests check:
Euler–Maruyama ``σ²/(λ(2 − λΔt))``, Heun ``σ²Δt(1 − λΔt/2)² / (1 − (1 − λΔt + (λΔt)²/2)²)``
(the exact process: ``σ²/(2λ)``).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Sequence, Union

import torch

SDEMethod = Literal["euler_maruyama", "heun"]
SDE_METHODS = ("euler_maruyama", "heun")


def sdeint_additive(
    drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    times: Union[Sequence[float], torch.Tensor],
    diffusion: Union[float, torch.Tensor],
    *,
    step_size: float,
    method: SDEMethod = "euler_maruyama",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Integrate ``dX = drift(t, X) dt + diffusion·dW`` and return ``X`` at ``times``, shape ``(T, *x0.shape)``.

    Args:
        drift: ``f(t, X)``, e.g. an ``nn.Module`` vector field.
        x0: the initial state (any shape; every entry gets its own Brownian motion).
        times: increasing save times; ``times[0]`` is the initial time.
        diffusion: ``σ``, a scalar or a tensor broadcasting against ``x0``.
        step_size: the largest step; each interval between saves is cut into equal steps.
        method: ``"euler_maruyama"`` or ``"heun"``.
        generator: private generator of the Brownian increments (default seed 0), on ``x0``'s device.
    """
    if method not in SDE_METHODS:
        raise ValueError(f"method must be one of {SDE_METHODS}, got {method!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    t = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
    if t.dim() != 1 or t.numel() < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("times must be an increasing 1-D sequence of at least two times")
    g = generator if generator is not None else torch.Generator(device=x0.device).manual_seed(0)
    sigma = torch.as_tensor(diffusion, dtype=x0.dtype, device=x0.device)
    x = x0
    out = [x0]
    for k in range(t.numel() - 1):
        span = float(t[k + 1] - t[k])
        n = max(1, math.ceil(span / step_size - 1e-9))
        dt = span / n
        for j in range(n):
            tn = t[k] + j * dt
            dW = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device) * math.sqrt(dt)
            f = drift(tn, x)
            if method == "euler_maruyama":
                x = x + f * dt + sigma * dW
            else:
                predictor = x + f * dt + sigma * dW
                x = x + 0.5 * (f + drift(tn + dt, predictor)) * dt + sigma * dW
        out.append(x)
    return torch.stack(out)


__all__ = ["SDEMethod", "SDE_METHODS", "sdeint_additive"]
