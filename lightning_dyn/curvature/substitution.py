"""Calling a model with other tensors in place of its parameters and buffers, leaving it untouched.

``torch.func.functional_call`` swaps tensors into module attributes for the call and swaps the
originals back after. Two things in everyday models defeat its default handling:

* a *tied parameter* — one ``Parameter`` held by two modules (GPT-2's ``wte`` and ``lm_head``) —
  must be substituted in every module that holds it, or the call mixes new and old values;
* an *aliased module* — one submodule reachable by two paths (``self.backbone = self.net[0]``) —
  must be substituted once: ``functional_call(tie_weights=True)`` expands a tied name to every path,
  swaps the same attribute of the same module twice, and restores the *substitute* the second time,
  leaving plain tensors in the model after the call (seen with ``BackboneFinetuning``: training
  then silently updated parameters the model no longer used).

:func:`slots` lists every (module, attribute) holding a tensor once, by one of its paths, with
the canonical name (``named_parameters()``/``named_buffers()``, which list a tensor once);
:func:`substituted_call` calls with ``tie_weights=False`` on exactly those slots.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def slots(model: nn.Module) -> dict[str, str]:
    """``{path of a (module, attribute) slot: canonical name of the tensor in it}``, each slot once."""
    canonical = {id(t): n for n, t in model.named_parameters(remove_duplicate=True)}
    canonical.update({id(t): n for n, t in model.named_buffers(remove_duplicate=True)})
    seen: set[tuple[int, str]] = set()
    out: dict[str, str] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attribute, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is None or (id(module), attribute) in seen or id(tensor) not in canonical:
                continue
            seen.add((id(module), attribute))
            out[f"{prefix}.{attribute}" if prefix else attribute] = canonical[id(tensor)]
    return out


def substituted_call(model: nn.Module, table: dict[str, str], tensors: dict[str, torch.Tensor], args: tuple,
                     kwargs: Any = None) -> Any:
    """``model(*args, **kwargs)`` with ``tensors`` (by canonical name) in every slot of ``table``
    (:func:`slots`) that holds one of them; the model's own tensors everywhere else and after."""
    by_slot = {slot: tensors[name] for slot, name in table.items() if name in tensors}
    return torch.func.functional_call(model, by_slot, args, kwargs, tie_weights=False, strict=False)
