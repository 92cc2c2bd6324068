"""Which case of the critical-point theorem an architecture is in, read off its layers and weights.

Kuehn & Kuntz (arXiv:2405.09351) classify scalar input–output maps ``f: ℝⁿ → ℝ`` of multilayer
perceptrons and neural ODEs by their critical points (``∇ₓf(x) = 0``):

**MLP** ``f(x) = w_Lᵀ σ(W_{L−1} ⋯ σ(W_1 x + b_1) ⋯) + b_L`` with an elementwise activation whose
derivative is positive (tanh, sigmoid, softplus, leaky ReLU). By the chain rule

    ∇ₓf(x) = W_1ᵀ D_1 W_2ᵀ D_2 ⋯ W_{L−1}ᵀ D_{L−1} w_L,   D_l = diag σ'(pre-activations) invertible.

- Widths that never increase (``n ≥ n_1 ≥ … ≥ n_{L−1} ≥ 1``) with full-rank weights: every ``W_lᵀ``
  is injective and ``w_L ≠ 0``, so ``∇ₓf`` never vanishes — **no critical points**, whatever the
  weights were trained to.
- A layer wider than the one before (the map is *augmented*) and no bottleneck: critical points can
  exist, and for all weights outside a set of Lebesgue measure zero every one of them is
  non-degenerate (``∇²ₓf`` invertible): ``f`` is a **Morse function**.
- A **bottleneck**: a hidden layer (or a rank-deficient weight) of width ``d < n`` followed later by
  a wider one. Then ``f = g ∘ h`` with ``h: ℝⁿ → ℝᵈ``, and every critical point of the part ``g``
  after the bottleneck pulls back to a set of dimension ``≥ n − d`` of critical points of ``f``
  (a line, a plane): **degenerate critical points** occur for an open set of weights.

A weight ``W`` of rank ``r < min(rows, columns)`` factors as ``ℝ^cols → ℝʳ → ℝ^rows`` (the paper's
normal form: a rank-deficient network is a full-rank network with a narrower linear layer), so the
classification runs on the chain of dimensions ``n, r_1?, n_1, r_2?, n_2, …, 1`` with every such
rank inserted: no critical points iff the chain never increases; a bottleneck iff some entry
``d < n`` is followed by a larger one.

**Neural ODE** ``f(x) = λᵀ φ_T(A x + a) + μ`` with ``φ_T`` the time-``T`` flow map of ``ḣ = F(t, h)``
on ``ℝᵐ`` (a diffeomorphism): ``∇ₓf = Aᵀ Dφ_T(Ax + a)ᵀ λ``.

- ``m ≤ n`` and ``rank A = m`` (``Aᵀ`` injective), ``λ ≠ 0``: **no critical points**.
- ``m > n`` (augmented) with ``rank A = n`` and ``λ ≠ 0``: critical points can exist; Morse outside
  a measure-zero set of fields.
- ``rank A < n``: ``f`` is constant along ``ker A`` — every critical point is **degenerate**.

Our ``AugmentedNeuralODE`` reads in ``A = [I; 0]`` (``m = n + augment_dims``, rank ``n``); a plain
``NeuralODE`` has ``A = I`` unless an ``nn.Linear`` precedes it. Other modules (ReLU, attention,
a non-affine read-out) are outside the theorem, and the classification says so and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import nn

from ..models.neural_ode import FIXED_STEP, AugmentedNeuralODE, NeuralODE

Case = Literal["no_critical_points", "morse", "degenerate", "constant", "not_covered"]

#: each case in a few words
HEADLINES = {"no_critical_points": "no critical points possible", "morse": "Morse for generic weights",
             "degenerate": "degenerate critical points possible", "constant": "a constant map",
             "not_covered": "outside the theorem"}
#: strictly increasing activations with σ' > 0 everywhere and twice differentiable
SMOOTH_INCREASING = (nn.Tanh, nn.Sigmoid, nn.Softplus, nn.LogSigmoid, nn.Identity)
#: σ' > 0 wherever it exists, but not twice differentiable (the Morse statement needs C²)
KINKED_INCREASING = (nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Softsign)
#: modules that are the identity in eval mode
PASS_THROUGH = (nn.Dropout, nn.Flatten, nn.AlphaDropout)


@dataclass(frozen=True)
class FunctionClass:
    """The theorem's verdict on an architecture with its current weights.

    Attributes:
        case: ``"no_critical_points"`` (impossible, whatever training does), ``"morse"`` (critical
            points possible, non-degenerate for generic weights), ``"degenerate"`` (degenerate
            critical points possible: a bottleneck or a rank-deficient read-in), ``"constant"``
            (the read-out is zero) or ``"not_covered"`` (outside the theorem's assumptions).
        architecture: ``"MLP"``, ``"neural ODE"`` or ``"augmented neural ODE"`` (or what was found).
        input_dim: ``n``.
        dims: the chain of dimensions the classification ran on (widths, inserted ranks, the
            phase space), input first.
        reason: the verdict in words: which layer is the bottleneck, which map is rank-deficient.
    """

    case: Case
    architecture: str
    input_dim: Optional[int]
    dims: tuple[int, ...]
    reason: str

    @property
    def headline(self) -> str:
        """The case in a few words (``"Morse for generic weights"``)."""
        return HEADLINES[self.case]

    @property
    def critical_points_possible(self) -> bool:
        """Whether the theorem allows critical points (``False`` only for ``"no_critical_points"``)."""
        return self.case != "no_critical_points"

    def __str__(self) -> str:
        return self.reason


def _rank(weight: torch.Tensor) -> int:
    """Numerical rank at the precision the weight is stored in (a float32 weight whose rows are
    dependent up to float32 rounding is rank-deficient)."""
    eps = torch.finfo(weight.dtype).eps if weight.is_floating_point() else 0.0
    return int(torch.linalg.matrix_rank(weight.detach().double(), rtol=max(weight.shape) * eps))


def _flatten(module: nn.Module) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            out += [(f"{name}.{n}", m) for n, m in _flatten(child)]
        else:
            out.append((name, child))
    return out


def _not_covered(architecture: str, reason: str, input_dim: Optional[int] = None) -> FunctionClass:
    return FunctionClass("not_covered", architecture, input_dim, (), reason)


def classify_architecture(module: nn.Module) -> FunctionClass:
    """Which case of the theorem (module docstring) ``module``'s scalar input–output map is in.

    Accepts an ``nn.Sequential`` MLP (``nn.Linear`` layers and elementwise activations, nested
    Sequentials, ``Dropout``/``BatchNorm1d`` as in eval mode, one output), a ``NeuralODE`` or
    ``AugmentedNeuralODE`` between optional ``nn.Linear`` read-in and read-out, or a module holding
    exactly one such network as its only child (a ``LightningModule`` with ``self.net``).
    Ranks are numerical ranks of the current weights (``torch.linalg.matrix_rank``).
    """
    layers = _flatten(module) if isinstance(module, nn.Sequential) else [("", module)]
    if any(isinstance(m, NeuralODE) for _, m in layers):
        return _classify_ode(layers)
    if isinstance(module, nn.Sequential):
        return _classify_mlp(layers)
    children = list(module.named_children())
    if len(children) == 1:
        return classify_architecture(children[0][1])
    kinds = ", ".join(type(m).__name__ for _, m in children) or "no submodules"
    return _not_covered(type(module).__name__, f"{type(module).__name__} is not an nn.Sequential MLP or a neural ODE "
                        f"with affine read-in/read-out ({kinds}): the theorem does not cover it")


def _affine(name: str, layer: nn.Module) -> Optional[tuple[torch.Tensor, str]]:
    """``(weight, label)`` of an affine layer (``BatchNorm1d`` in eval mode is a diagonal one)."""
    if isinstance(layer, nn.Linear):
        return layer.weight, f"layer {name} (Linear {layer.in_features}→{layer.out_features})"
    if isinstance(layer, nn.BatchNorm1d):
        scale = layer.weight if layer.affine else torch.ones(layer.num_features)
        return torch.diag(scale.detach()), f"layer {name} (BatchNorm1d, a diagonal affine map in eval mode)"
    return None


def _activation_problem(name: str, layer: nn.Module) -> Optional[str]:
    if isinstance(layer, nn.LeakyReLU) and not layer.negative_slope > 0:
        return f"layer {name} (LeakyReLU with slope {layer.negative_slope}) is not strictly increasing"
    if isinstance(layer, (nn.ELU, nn.CELU)) and not layer.alpha > 0:
        return f"layer {name} ({type(layer).__name__} with alpha {layer.alpha}) is not strictly increasing"
    if isinstance(layer, nn.Softplus) and not layer.beta > 0:
        return f"layer {name} (Softplus with beta {layer.beta}) is not strictly increasing"
    if isinstance(layer, SMOOTH_INCREASING + KINKED_INCREASING + PASS_THROUGH):
        return None
    if isinstance(layer, (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardsigmoid)):
        return (f"layer {name} ({type(layer).__name__}) has σ' = 0 on an interval, so the map can be constant "
                "on open sets (a continuum of critical points)")
    return (f"layer {name} ({type(layer).__name__}) is not an affine layer or an elementwise activation with "
            "σ' > 0 (tanh, sigmoid, softplus, leaky ReLU)")


def _classify_mlp(layers: list[tuple[str, nn.Module]]) -> FunctionClass:
    dims: list[int] = []
    places: list[str] = []
    kinked: Optional[str] = None
    for name, layer in layers:
        affine = _affine(name, layer)
        if affine is None:
            problem = _activation_problem(name, layer)
            if problem:
                return _not_covered("MLP", f"outside the theorem: {problem}", dims[0] if dims else None)
            if isinstance(layer, KINKED_INCREASING) and kinked is None:
                kinked = f"layer {name} ({type(layer).__name__})"
            continue
        weight, label = affine
        rows, cols = weight.shape
        if not dims:
            dims, places = [cols], ["the input"]
        elif cols != dims[-1]:
            return _not_covered("MLP", f"{label} takes {cols} inputs after a layer of width {dims[-1]}")
        rank = _rank(weight)
        if rank < min(rows, cols):
            dims.append(rank)
            places.append(f"the weight of {label}, of rank {rank}")
        dims.append(rows)
        places.append(label)
    if not dims:
        return _not_covered("MLP", "an nn.Sequential without affine layers")
    n = dims[0]
    if dims[-1] != 1:
        return _not_covered("MLP", f"the output has {dims[-1]} entries: the theorem is about scalar outputs", n)
    return _verdict("MLP", dims, places, kinked)


def _verdict(architecture: str, dims: list[int], places: list[str], kinked: Optional[str]) -> FunctionClass:
    n, chain = dims[0], tuple(dims)
    widths = "–".join(map(str, chain))
    if 0 in dims:
        zero = places[dims.index(0)]
        return FunctionClass("constant", architecture, n, chain, f"{architecture} {widths}: {zero} maps everything "
                             "to 0, so the map is constant (every input is a critical point)")
    increase = next((i for i in range(1, len(dims)) if dims[i] > dims[i - 1]), None)
    if increase is None:
        return FunctionClass("no_critical_points", architecture, n, chain,
                             f"{architecture} {widths}: the dimensions never increase and the weights have full "
                             "rank, so ∇ₓf = W₁ᵀD₁⋯W_Lᵀ ≠ 0 everywhere — no critical points: no minimum, maximum "
                             "or saddle can be represented")
    for i in range(1, len(dims) - 1):
        if dims[i] < n:
            wider = next((j for j in range(i + 1, len(dims)) if dims[j] > dims[i]), None)
            if wider is not None:
                return FunctionClass("degenerate", architecture, n, chain,
                                     f"{architecture} {widths}: bottleneck at {places[i]} — dimension {dims[i]} < "
                                     f"input dimension {n}, widened again to {dims[wider]} by {places[wider]}: every "
                                     "critical point of the part after it is a "
                                     f"{n - dims[i]}-dimensional set of degenerate critical points of f")
    if kinked:
        return _not_covered(architecture, f"{architecture} {widths}: augmented at {places[increase]}, so critical "
                            f"points can exist, but {kinked} is not twice differentiable: the Morse statement needs "
                            "a C² activation", n)
    return FunctionClass("morse", architecture, n, chain,
                         f"{architecture} {widths}: augmented at {places[increase]} (wider than the layer before) "
                         "without a bottleneck — critical points can exist, and for all weights outside a "
                         "measure-zero set each is non-degenerate (f is Morse)")


def _classify_ode(layers: list[tuple[str, nn.Module]]) -> FunctionClass:
    index = next(i for i, (_, m) in enumerate(layers) if isinstance(m, NeuralODE))
    _, ode = layers[index]
    before, after = layers[:index], layers[index + 1:]
    augmented = isinstance(ode, AugmentedNeuralODE)
    architecture = "augmented neural ODE" if augmented else "neural ODE"
    if len(before) > 1 or (before and not isinstance(before[0][1], nn.Linear)):
        return _not_covered(architecture, f"before the ODE: {[type(m).__name__ for _, m in before]} — the theorem "
                            "needs an affine read-in (one nn.Linear, or none)")
    readout = list(after)
    if augmented and ode.readout is not None:
        readout = [("readout", ode.readout)] + readout
    readout = [(n_, m) for n_, m in readout if not isinstance(m, PASS_THROUGH)]
    if len(readout) != 1 or not isinstance(readout[0][1], nn.Linear) or readout[0][1].out_features != 1:
        kinds = [type(m).__name__ for _, m in readout] or ["none"]
        return _not_covered(architecture, f"read-out {kinds}: the theorem needs one affine read-out nn.Linear(·, 1)")
    # composed in the weights' own dtype, so ranks are judged at their precision (as for an MLP)
    read_in = before[0][1].weight.detach() if before else None
    lam = readout[0][1].weight.detach()
    if augmented:
        if ode.channel_dim != -1:
            return _not_covered(architecture, "an AugmentedNeuralODE over channels of images: the theorem is about "
                                "vector inputs")
        # the ODE's input channels: the read-in's rows, else what the read-out sees of them
        k = read_in.shape[0] if read_in is not None else lam.shape[1] - (ode.augment_dims if ode.readout is not None else 0)
        embed = torch.cat([torch.eye(k, dtype=lam.dtype), torch.zeros(ode.augment_dims, k, dtype=lam.dtype)])
        A = embed if read_in is None else embed.to(read_in.dtype) @ read_in
        if ode.readout is None:  # the default read-out keeps the first k channels
            lam = torch.cat([lam, lam.new_zeros(1, ode.augment_dims)], dim=1)
    else:
        A = read_in if read_in is not None else torch.eye(lam.shape[1], dtype=lam.dtype)
    m, n = A.shape
    if lam.shape[1] != m:
        return _not_covered(architecture, f"the read-out takes {lam.shape[1]} inputs from a {m}-dimensional phase space")
    rank_a, rank_l = _rank(A), _rank(lam)
    chain = (n, m, 1)
    reading = f"{architecture} on ℝ^{m} from ℝ^{n} (read-in rank {rank_a})"
    caveat = ""
    if ode.solver in FIXED_STEP:
        caveat = (f" — of the exact flow: the computed map is {ode.solver} steps of size {ode.step_size}, itself a "
                  "diffeomorphism only while the step times the field's Lipschitz constant is small (a critical "
                  "point found numerically then means the solver folds the space, not the flow)")
    if rank_l == 0:
        return FunctionClass("constant", architecture, n, chain, f"{reading}: the read-out is zero — a constant map")
    if m <= n and rank_a == m:
        return FunctionClass("no_critical_points", architecture, n, chain,
                             f"{reading}: phase space no larger than the input and a full-rank read-in, so "
                             "∇ₓf = Aᵀ Dφ_Tᵀ λ ≠ 0 (the flow map is a diffeomorphism) — no critical points: no "
                             f"minimum, maximum or saddle can be represented{caveat}")
    if rank_a < n:
        return FunctionClass("degenerate", architecture, n, chain,
                             f"{reading}: the read-in has rank {rank_a} < input dimension {n}, so f is constant "
                             f"along a {n - rank_a}-dimensional kernel — every critical point is degenerate")
    return FunctionClass("morse", architecture, n, chain,
                         f"{reading}: augmented (m = {m} > n = {n}) with a full-rank read-in — critical points "
                         "can exist, non-degenerate for all fields outside a measure-zero set (f is Morse)")
