"""The backpropagated signal ``‖∂L/∂h_l‖`` at the outputs of a model's blocks.

Blocks are the units depth counts: chosen by name, or found automatically —

1. residual and transformer blocks: modules whose class is a ``nn.TransformerEncoderLayer`` /
   ``nn.TransformerDecoderLayer`` or whose class name ends in ``Block``, ``Bottleneck``,
   ``EncoderLayer``, ``DecoderLayer`` or ``ResidualUnit`` (torchvision's ``BasicBlock``, timm's and
   GPT-style ``Block``), outermost first;
2. otherwise the largest ``nn.ModuleList`` (its entries) or ``nn.Sequential`` with parameters: a
   Sequential is cut before each child that holds weights (not a normalisation layer), so
   ``Linear, Tanh, Linear, Tanh, …`` gives one block per layer, ending after its activation; a
   final bare weight layer is the readout and not a block;
3. otherwise every weight-holding leaf module but the last.

:class:`BackpropSignal` hooks the blocks' outputs for one optimizer step and accumulates
``Σ ‖∂L/∂h_l‖²`` on the device (micro-batches of an accumulated step add up); nothing is read
back until :meth:`BackpropSignal.squared_norms` is called.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import torch
from torch import nn

_BLOCK_NAME = re.compile(r"(Block|Bottleneck|EncoderLayer|DecoderLayer|ResidualUnit)$")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _holds_weights(module: nn.Module) -> bool:
    return not isinstance(module, _NORMS) and any(p.requires_grad for p in module.parameters())


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if module is model or any(name.startswith(f + ".") for f, _ in found):
            continue
        if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) or \
                _BLOCK_NAME.search(type(module).__name__):
            found.append((name, module))
    return found


def _container_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    containers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Sequential, nn.ModuleList))
                  and _num_params(m) > 0]
    if not containers:
        return []
    prefix, container = max(containers, key=lambda nm: _num_params(nm[1]))
    join = (lambda child: f"{prefix}.{child}") if prefix else (lambda child: child)
    children = list(container.named_children())
    if isinstance(container, nn.ModuleList):
        return [(join(n), m) for n, m in children]
    groups: list[list[tuple[str, nn.Module]]] = []
    for name, child in children:
        if _holds_weights(child) or not groups:
            groups.append([])
        groups[-1].append((name, child))
    if len(groups) > 1 and len(groups[-1]) == 1 and _holds_weights(groups[-1][0][1]):
        groups = groups[:-1]  # the readout
    return [(join(g[-1][0]), g[-1][1]) for g in groups]


def _leaf_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children()) and _holds_weights(m)]
    return leaves[:-1]


def find_blocks(model: nn.Module, names: Optional[Sequence[str]] = None) -> list[tuple[str, nn.Module]]:
    """The blocks of ``model`` in forward (registration) order, as ``(name, module)`` pairs.

    ``names`` picks them explicitly; a name that is not a submodule raises ``ValueError`` listing
    the closest existing names. Otherwise the rules of the module docstring apply (possibly
    returning fewer than two blocks: then there is no depth profile).
    """
    modules = dict(model.named_modules())
    if names is not None:
        missing = [n for n in names if n not in modules]
        if missing:
            known = [n for n in modules if n]
            hint = ", ".join(sorted(known, key=lambda k: _distance(k, missing[0]))[:8])
            raise ValueError(f"no submodule named {missing[0]!r} in {type(model).__name__}; some that exist: {hint}")
        return [(n, modules[n]) for n in names]
    for rule in (_residual_blocks, _container_blocks, _leaf_blocks):
        blocks = rule(model)
        if len(blocks) >= 2:
            return blocks
    return []


def _distance(a: str, b: str) -> int:
    """Edit distance (for 'did you mean' hints)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _first_tensor(output: Any) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


class BackpropSignal:
    """Accumulates ``‖∂L/∂h_l‖²`` at the blocks' outputs while attached (module docstring)."""

    def __init__(self, blocks: Sequence[tuple[str, nn.Module]]) -> None:
        self.names = [n for n, _ in blocks]
        self.modules = [m for _, m in blocks]
        self._handles: list[Any] = []
        self._sums: list[Optional[torch.Tensor]] = [None] * len(self.modules)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Hook the blocks (from the next forward pass on); clears what was accumulated."""
        self.detach()
        self._sums = [None] * len(self.modules)
        self._handles = [m.register_forward_hook(self._forward_hook(i)) for i, m in enumerate(self.modules)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward_hook(self, i: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            h = _first_tensor(output)
            if h is not None and h.requires_grad:
                h.register_hook(lambda grad: self._accumulate(i, grad))
        return hook

    def _accumulate(self, i: int, grad: torch.Tensor) -> None:
        # the norm in the gradient's own precision (float32 for half types), squared in float64
        wide = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else None
        sq = torch.linalg.vector_norm(grad.detach(), dtype=wide).double().square()
        self._sums[i] = sq if self._sums[i] is None else self._sums[i] + sq

    def squared_norms(self, device: torch.device) -> torch.Tensor:
        """``‖∂L/∂h_l‖²`` per block (float64, on ``device``; ``nan`` for a block no gradient reached)."""
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
        return torch.stack([nan if s is None else s.to(device) for s in self._sums])
