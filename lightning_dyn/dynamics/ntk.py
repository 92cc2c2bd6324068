"""The empirical neural tangent kernel of a probe set: Θ = J Jᵀ with J = ∂f(X)/∂θ.

``J`` stacks the per-sample output Jacobians (``n·C`` rows, one per sample and output, ``P``
columns); ``Θ[(i,c), (j,c')] = ⟨∂f_c(x_i)/∂θ, ∂f_c'(x_j)/∂θ⟩``. Two ways to build it:

- *structured* (every trainable parameter belongs to an ``nn.Linear`` fed a batch of vectors):
  the per-sample gradient of a layer's weight is an outer product ``δ_{ic} ⊗ a_i`` (``a_i`` the
  layer input, ``δ_{ic} = ∂f_c(x_i)/∂z_i`` the backpropagated signal at its output), so the
  layer contributes ``(δ_{ic}·δ_{jc'}) (a_i·a_j + 1)`` (the ``+1`` from the bias). Cost: ``C``
  backward passes over the batch and ``(nC)²·d_out + n²·d_in`` per layer — ``J`` is never formed
  (Novak et al., "Fast finite width neural tangent kernel", ICML 2022, §3).
- *explicit* (anything else: BatchNorm, convolutions, attention): ``J`` by ``torch.func``
  (``vmap`` of ``jacrev`` over samples), then ``J Jᵀ``; refused when ``J`` would exceed
  ``max_bytes``.

Samples must not interact in the forward pass (evaluate in eval mode: BatchNorm running
statistics), which is what makes per-sample Jacobians meaningful.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.func import jacrev, vmap

from ..curvature.substitution import slots, substituted_call

#: default cap on the explicit Jacobian (bytes)
MAX_JACOBIAN_BYTES = 4 * 2**30


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _linear_layers(model: nn.Module) -> Optional[list[nn.Linear]]:
    """The ``nn.Linear`` layers holding every trainable parameter, or ``None`` if some other
    module holds one."""
    layers = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(module, nn.Linear):
            return None
        layers.append(module)
    return layers


def _structured_ntk(model: nn.Module, inputs: torch.Tensor, layers: list[nn.Linear]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    captured: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured[module] = (args[0], output)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        outputs = model(inputs)
    finally:
        for h in handles:
            h.remove()
    n = inputs.shape[0]
    flat = outputs.reshape(n, -1)
    if any(layer not in captured or captured[layer][0].shape[:1] != (n,) or captured[layer][0].dim() != 2
           for layer in layers):
        return None  # a layer applied to sequences / several times: not the simple outer-product form
    zs = [captured[layer][1] for layer in layers]
    C = flat.shape[1]
    deltas: list[list[torch.Tensor]] = [[] for _ in layers]
    for c in range(C):
        grads = torch.autograd.grad(flat[:, c].sum(), zs, retain_graph=c < C - 1, allow_unused=True)
        for l, (g, z) in enumerate(zip(grads, zs)):
            deltas[l].append(torch.zeros_like(z) if g is None else g)
    ntk = torch.zeros(n * C, n * C, dtype=flat.dtype, device=flat.device)
    for layer, ds in zip(layers, deltas):
        delta = torch.stack(ds, dim=1).reshape(n * C, -1).detach()
        a = captured[layer][0].detach()
        gram_in = torch.zeros(n, n, dtype=flat.dtype, device=flat.device)
        if layer.weight.requires_grad:
            gram_in += a @ a.T
        if layer.bias is not None and layer.bias.requires_grad:
            gram_in += 1.0
        term = delta @ delta.T
        term.view(n, C, n, C).mul_(gram_in[:, None, :, None])
        ntk += term
    return ntk, flat.detach()


def _explicit_ntk(model: nn.Module, inputs: torch.Tensor, max_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    params = {k: v.detach() for k, v in _trainable(model).items()}
    table = slots(model)
    n = inputs.shape[0]
    with torch.no_grad():
        outputs = model(inputs).reshape(n, -1)
    C, P = outputs.shape[1], sum(p.numel() for p in params.values())
    need = n * C * P * outputs.element_size()
    if need > max_bytes:
        raise MemoryError(
            f"the per-sample Jacobian of this probe set is {n}×{C} outputs × {P} parameters "
            f"({need / 2**30:.1f} GiB, cap {max_bytes / 2**30:.1f} GiB): use method='hvp', or a smaller probe set")

    def single(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return substituted_call(model, table, p, (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(single), in_dims=(None, 0), chunk_size=64)(params, inputs)
    J = torch.cat([j.reshape(n * C, -1) for j in jac.values()], dim=1)
    return J @ J.T, outputs


def empirical_ntk(model: nn.Module, inputs: torch.Tensor, *, method: str = "auto",
                  max_bytes: int = MAX_JACOBIAN_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """The empirical NTK ``Θ = J Jᵀ`` (``(n·C, n·C)``, rows sample-major, in the model's precision)
    and the outputs ``(n, C)``.

    Args:
        model: the network; called as ``model(inputs)``, in whatever mode it is in.
        inputs: ``n`` samples along the first dimension.
        method: ``"structured"`` (Linear layers only), ``"explicit"``, or ``"auto"`` (structured
            when it applies).
        max_bytes: cap on the explicit Jacobian.
    """
    if method not in ("auto", "structured", "explicit"):
        raise ValueError(f"method must be 'auto', 'structured' or 'explicit', got {method!r}")
    if not _trainable(model):
        raise ValueError("the model has no trainable parameters")
    if method != "explicit":
        layers = _linear_layers(model)
        result = None if layers is None else _structured_ntk(model, inputs, layers)
        if result is not None:
            return result
        if method == "structured":
            raise ValueError("method='structured' needs every trainable parameter in an nn.Linear fed (batch, features)")
    return _explicit_ntk(model, inputs, max_bytes)
