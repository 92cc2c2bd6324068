"""The Hessian of a loss over a fixed probe set, as a matrix-free operator.

``H = ∇²L(θ)`` with ``L(θ) = Σ_b n_b L_b(θ) / Σ_b n_b``: the loss of each probe batch ``b``
(``loss_fn(model, batch)``, a mean over its ``n_b`` samples) weighted by batch size, so ``L`` is
the mean over all probe samples — the same reduction the optimizer sees. Products ``Hv`` by
Pearlmutter's trick (Pearlmutter 1994, "Fast exact multiplication by the Hessian"):

* ``"double_backward"``: ``Hv = ∇_θ ⟨∇_θ L, v⟩`` — reverse over reverse. With ``cache_graph``
  the first-order graph is built once and each product is a single extra backward pass;
* ``"forward_over_reverse"``: ``Hv = J_{∇L}(θ) v`` by ``torch.func.jvp`` of ``torch.func.grad``;
* ``"finite_difference"``: central differences of gradients (``curvature/finite_difference.py``),
  first-order backward only — for what has no second derivative.

The first two compute the same exact product; ``benchmarks/curvature.py`` measures which is
faster. The third is accurate to :attr:`HessianOperator.relative_error`.

The measurement never disturbs the model: parameters and buffers are substituted with
``torch.func.functional_call`` (BatchNorm running statistics update copies, never the module's),
gradients go to the substituted tensors only (``.grad`` of the module is untouched), the module's
train/eval flags are restored, and the global RNG streams are forked and restored; inside, they
are seeded with a private seed so that Dropout draws the same masks in every product. Under
``torch.distributed`` every product is all-reduced, so each rank sees the Hessian of the global
(all-rank) probe loss.

Activation checkpointing (``torch.utils.checkpoint``, reentrant or not; ``transformers``'
``gradient_checkpointing_enable()``; timm's ``set_grad_checkpointing()``) recomputes parts of the
forward pass *during backward*, from whatever tensors the module holds then. So every backward pass
here runs while the substituted tensors are still in place — the loss and its derivatives are
taken inside one substituted call — and first-order gradients are read from the substitutes'
``.grad`` after ``backward()`` (reentrant checkpointing refuses ``torch.autograd.grad``). Double
backward through reentrant checkpointing is impossible (it raises); the finite-difference backend,
which needs first-order gradients only, serves it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .backends import PRODUCT_BACKENDS, product_backend
from .batches import batch_size, tree_map_tensors
from .context import measurement_context, train_flags
from .finite_difference import STENCILS, Order, central_difference, estimated_error
from .finite_difference import difference_step as difference_step_for
from .operator import CurvatureOperator
from .substitution import slots, substituted_call

LossFn = Callable[[nn.Module, Any], torch.Tensor]
#: the backends' names (their table: ``lightning_dyn.curvature.backends``)
BACKENDS = tuple(PRODUCT_BACKENDS)
HALF = (torch.float16, torch.bfloat16)


class _LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module, so ``functional_call`` can substitute the model's tensors."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any, then: Optional[Callable[..., Any]] = None) -> Any:
        if batch is None:  # no forward pass: ``then()`` alone, with the substituted tensors in place
            assert then is not None
            return then()
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn(model, batch) must return a scalar tensor")
        loss = loss.reshape(())
        # derivatives taken here, while the substituted tensors are in place (module docstring)
        return loss if then is None else then(loss)


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` into the substituted leaves — the one first-order backward that reentrant
    activation checkpointing accepts (it refuses ``torch.autograd.grad``)."""
    if not loss.requires_grad:
        raise ValueError("loss_fn(model, batch) returned a loss that does not depend on the parameters through "
                         "autograd (computed under torch.no_grad(), or detached?)")
    loss.backward()


class HessianOperator(CurvatureOperator):
    """Matrix-free Hessian of a model's loss over a fixed probe set.

    Args:
        model: the network; its trainable parameters (``requires_grad``) span the operator's space,
            flattened in ``named_parameters()`` order.
        loss_fn: ``loss_fn(model, batch) -> scalar``, the mean loss of a batch.
        batches: the probe set, a non-empty sequence of batches (tensors or tuples/lists/dicts of
            tensors), weighted by batch size.
        dtype: compute in this dtype (e.g. ``torch.float64`` for reference values on small models);
            default: the parameters' dtype, but float32 for 16-bit parameters.
        mode: ``"eval"`` (default: every module in eval mode — Dropout off, BatchNorm uses running
            statistics) or ``"train"``: the modes training has — each module's flag as it is when the
            operator is built, so a submodule its user put in eval mode (a frozen BatchNorm) stays in
            it; Dropout draws the same private masks in every product, and the module's running
            statistics are never changed. (On a module whose root is in eval mode, ``"train"``
            switches every submodule to train mode, as ``model.train()``.)
        backend: ``"double_backward"`` (default, faster by ``benchmarks/curvature.py``),
            ``"forward_over_reverse"`` (``torch.func``; needs a model without in-place buffer
            updates, i.e. ``mode="eval"`` for BatchNorm) or ``"finite_difference"`` (gradients only).
        difference_order: ``2`` (two gradients a product) or ``4`` (four) for ``"finite_difference"``.
        difference_step: its step along the unit direction (default: ``lightning_dyn.curvature.finite_difference.difference_step``).
        known_error: the products' relative error when already known — an earlier operator's
            estimate on the same probe set at nearby parameters: the first product then skips the
            estimate's second stencil (two gradients).
        cache_graph: keep the first-order graph between products (one backward per product
            instead of forward + two backwards; costs the activation memory of all probe
            batches). Default: cache when the probe set is a single batch.
        params: restrict the operator to these parameters (default: all trainable ones).
        seed: private seed for Dropout masks in ``mode="train"``.
        distributed: all-reduce products over the default process group (default: when
            ``torch.distributed`` is initialised with more than one rank). Every rank must then
            build the operator and take each product together.

    The operator is the Hessian at the parameters current when it is built; changing them in
    place afterwards raises at the next product (build a new operator — it is cheap).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Any],
        *,
        dtype: Optional[torch.dtype] = None,
        mode: Literal["eval", "train"] = "eval",
        backend: Literal["double_backward", "forward_over_reverse", "finite_difference"] = "double_backward",
        difference_order: Order = 2,
        difference_step: Optional[float] = None,
        known_error: Optional[float] = None,
        cache_graph: Optional[bool] = None,
        params: Optional[Iterable[nn.Parameter]] = None,
        seed: int = 0,
        distributed: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        product_backend(backend)  # a ValueError naming the choices
        if difference_order not in STENCILS:
            raise ValueError(f"difference_order must be 2 or 4, got {difference_order!r}")
        if isinstance(batches, (torch.Tensor, Mapping)) or not isinstance(batches, Sequence):
            raise TypeError("batches must be a list of batches (wrap a single batch as [batch])")
        if len(batches) == 0:
            raise ValueError("the probe set is empty: pass at least one batch")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if params is not None:
            wanted = {id(p) for p in params}
            named = [(n, p) for n, p in named if id(p) in wanted]
        if not named:
            raise ValueError("the model has no trainable parameters to differentiate")
        self.model, self.loss_fn = model, loss_fn
        self.param_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self.shapes = [p.shape for p in self._params]
        self.numels = [p.numel() for p in self._params]
        self.size = sum(self.numels)
        self.device = self._params[0].device
        # a measurement never runs below float32: 16-bit parameters (bf16-true, fp16) are cast up
        self.dtype = dtype or (torch.float32 if self._params[0].dtype in HALF else self._params[0].dtype)
        #: the flags measurements set — ``None`` leaves each module's as training has it (``"train"``
        #: on a module in training mode — a BatchNorm its user froze in eval mode stays frozen)
        self.module_modes = train_flags(model, mode)
        self.backend = backend
        self.seed = seed
        self.cache_graph = (len(batches) == 1) if cache_graph is None else cache_graph
        self._cast = self.dtype != self._params[0].dtype
        self._versions = [p._version for p in self._params]

        def to_device(t: torch.Tensor) -> torch.Tensor:
            t = t.to(self.device)
            return t.to(self.dtype) if self._cast and t.is_floating_point() else t

        self.batches = [tree_map_tensors(to_device, b) for b in batches]
        self.weights = [float(batch_size(b)) for b in self.batches]
        self._wrapper = _LossModule(model, loss_fn)
        self._slots = slots(self._wrapper)
        self._buffers = [(n, b) for n, b in model.named_buffers()]
        chosen = set(self.param_names)
        self._others = [(n, p) for n, p in model.named_parameters() if n not in chosen]
        self._tensors = {
            "model." + n: (p.detach().to(self.dtype) if self._cast else p.detach()).requires_grad_(backend == "double_backward")
            for n, p in named
        }
        self._graphs: dict[int, tuple[list[torch.Tensor], list[int]]] = {}
        self.difference_order = difference_order
        self.difference_step = difference_step or difference_step_for(self.parameters_vector(), difference_order)
        #: relative accuracy of a product — 0 for the exact backends; for finite differences
        #: estimated at the first product (Richardson, steps ε and 2ε)
        self.relative_error = 0.0 if known_error is None else known_error
        self._estimate_error = known_error is None
        if distributed is None:
            distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.distributed = distributed
        total = torch.tensor([sum(self.weights)], device=self.device, dtype=torch.float64)
        if self.distributed:
            dist.all_reduce(total)
        self.total_weight = float(total)

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The parameters spanning the operator's space, in the flat layout's order."""
        return list(self._params)

    # -- flat <-> per-parameter ---------------------------------------------------------------
    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into tensors shaped like the parameters."""
        return [c.view(s) for c, s in zip(torch.split(v, self.numels), self.shapes)]

    @staticmethod
    def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def parameters_vector(self) -> torch.Tensor:
        """The parameters the operator is evaluated at, as a flat vector."""
        return self.flatten([p.detach().to(self.dtype) for p in self._params])

    # -- products -----------------------------------------------------------------------------
    def _arguments(self) -> dict[str, torch.Tensor]:
        """Every tensor of the module, substituted: the operator's parameters, the other parameters
        detached (so no backward reaches the module's own ``.grad``), copies of the buffers."""
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(self.dtype) if self._cast and t.is_floating_point() else t.detach()

        others = {"model." + n: cast(p) for n, p in self._others}
        buffers = {"model." + n: cast(b).clone() for n, b in self._buffers}
        return {**others, **buffers, **self._tensors}

    def _loss(self, tensors: dict[str, torch.Tensor], batch: Any,
              then: Optional[Callable[[torch.Tensor], Any]] = None) -> Any:
        """The loss of ``batch`` with ``tensors`` substituted — or ``then(loss)``, computed before
        the substitution ends (what a backward pass through checkpointed activations needs)."""
        return substituted_call(self._wrapper, self._slots, tensors, (batch, then))

    def loss(self) -> torch.Tensor:
        """The probe loss ``L`` at the operator's parameters (this rank's batches, size-weighted),
        computed like the products: the module's buffers, modes and RNG streams are left alone."""
        with measurement_context(self.model, train=self.module_modes, seed=self.seed):
            tensors = self._arguments()
            total = sum(self._loss(tensors, b) * w for b, w in zip(self.batches, self.weights))
        return total / sum(self.weights)

    def gradient(self) -> torch.Tensor:
        """The flat gradient ``∇L`` of the probe loss (all ranks' under DDP): the cached first-order
        graphs' when products have built them (free), else by first-order backward alone."""
        if self.backend != "double_backward" or len(self._graphs) < len(self.batches):
            return self.gradient_at(torch.zeros(self.size, device=self.device, dtype=self.dtype))
        total = torch.zeros(self.size, device=self.device, dtype=self.dtype)
        for (grads, _), w in zip((self._graphs[i] for i in range(len(self.batches))), self.weights):
            total.add_(self.flatten([g.detach() for g in grads]), alpha=w)
        if self.distributed:
            dist.all_reduce(total)
        return total.div_(self.total_weight)

    def gradient_at(self, shift: torch.Tensor) -> torch.Tensor:
        """The flat gradient ``∇L(θ + shift)`` of the probe loss, by first-order backward only (the
        module's parameters are not touched: the shifted point is substituted)."""
        total = self._gradient_sum(shift.to(self.device, self.dtype))
        if self.distributed:
            dist.all_reduce(total)
        return total.div_(self.total_weight)

    def _gradient_sum(self, shift: torch.Tensor) -> torch.Tensor:
        """``Σ_b n_b ∇L_b(θ + shift)`` over this rank's batches, by ``backward()`` into the shifted
        tensors (module docstring: checkpointed activations)."""
        total = torch.zeros(self.size, device=self.device, dtype=self.dtype)
        # first order only: flash attention and compiled code stay as training runs them
        with measurement_context(self.model, train=self.module_modes, seed=self.seed, second_order=False):
            fixed = self._arguments()
            for batch, w in zip(self.batches, self.weights):
                shifted = {"model." + n: (self._tensors["model." + n].detach() + s).requires_grad_(True)
                           for n, s in zip(self.param_names, self.unflatten(shift))}
                inputs = [shifted["model." + n] for n in self.param_names]
                self._loss({**fixed, **shifted}, batch, then=_backward)
                total.add_(self.flatten([torch.zeros_like(x) if x.grad is None else x.grad for x in inputs]),
                           alpha=w)
        return total

    def _hvp_finite_difference(self, v: torch.Tensor) -> torch.Tensor:
        """Central differences of this rank's gradient sum; the first product also estimates the
        error (a second stencil at 2ε, on the summed products so every rank gets one number)."""
        fine = central_difference(self._gradient_sum, v, self.difference_step, self.difference_order)
        if self.num_matvecs == 0 and self._estimate_error:
            coarse = central_difference(self._gradient_sum, v, 2 * self.difference_step, self.difference_order)
            if self.distributed:
                dist.all_reduce(coarse)
                dist.all_reduce(fine)
            self.relative_error = estimated_error(fine, coarse, self.difference_order)
            return fine.div_(self.total_weight)
        if self.distributed:
            dist.all_reduce(fine)
        return fine.div_(self.total_weight)

    def _first_order(self, i: int) -> tuple[list[torch.Tensor], list[int]]:
        """Gradient of batch ``i``'s loss with its graph; indices of entries that depend on θ."""
        if i in self._graphs:
            return self._graphs[i]
        grads, live = self._loss(self._arguments(), self.batches[i], then=self._gradient_graph)
        if self.cache_graph:
            self._graphs[i] = (grads, live)
        return grads, live

    def _gradient_graph(self, loss: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        if not loss.requires_grad:
            raise ValueError(
                "loss_fn(model, batch) returned a loss that does not depend on the parameters through "
                "autograd (computed under torch.no_grad(), or detached?); the Hessian needs a loss that "
                "is twice differentiable"
            )
        inputs = [self._tensors["model." + n] for n in self.param_names]
        grads = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        return grads, [j for j, g in enumerate(grads) if g.requires_grad]

    def _hvp_double_backward(self, i: int, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.cache_graph:  # a backward through checkpointed segments recomputes them: substituted still
            first = self._first_order(i)
            return self._loss(self._arguments(), None, then=lambda: self._second_order(first, vs))
        # the whole product inside the substitution: a backward may recompute activations
        return self._loss(self._arguments(), self.batches[i],
                          then=lambda loss: self._second_order(self._gradient_graph(loss), vs))

    def _second_order(self, first: tuple[list[torch.Tensor], list[int]], vs: list[torch.Tensor]) -> list[torch.Tensor]:
        grads, live = first
        inputs = [self._tensors["model." + n] for n in self.param_names]
        out = [torch.zeros_like(x) for x in inputs]
        if live:
            hv = torch.autograd.grad(
                [grads[j] for j in live], inputs, grad_outputs=[vs[j] for j in live],
                retain_graph=self.cache_graph, allow_unused=True,
            )
            out = [o if h is None else h for o, h in zip(out, hv)]
        return out

    def _functional(self, i: int) -> tuple[Callable[[dict[str, torch.Tensor]], torch.Tensor], dict[str, torch.Tensor]]:
        """Batch ``i``'s loss as a function of the parameter dict (for ``torch.func``), and the point."""
        fixed = {k: v for k, v in self._arguments().items() if k not in self._tensors}
        batch = self.batches[i]

        def loss_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return self._loss({**fixed, **p}, batch)

        return loss_of, {"model." + n: self._tensors["model." + n] for n in self.param_names}

    def _hvp_forward_over_reverse(self, i: int, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        loss_of, primal = self._functional(i)
        keys = list(primal)
        tangent = dict(zip(keys, vs))
        try:
            _, hv = torch.func.jvp(torch.func.grad(loss_of), (primal,), (tangent,))
        except RuntimeError as err:  # e.g. F.mse_loss has no forward-over-reverse formula in torch 2.13
            raise RuntimeError(
                f"backend='forward_over_reverse' failed on this loss ({err}); use backend='double_backward'"
            ) from err
        return [hv[k] for k in keys]

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        if any(p._version != ver for p, ver in zip(self._params, self._versions)):
            raise RuntimeError(
                "the model's parameters changed in place since this HessianOperator was built; "
                "build a new operator at the new parameters"
            )
        if self.backend == "finite_difference":
            return self._hvp_finite_difference(v)
        vs = self.unflatten(v)
        hvp = self._hvp_double_backward if self.backend == "double_backward" else self._hvp_forward_over_reverse
        total = torch.zeros(self.size, device=self.device, dtype=self.dtype)
        # even with every first-order graph cached, a backward through checkpointed activations
        # runs their forward again: modes and RNG streams as in the first
        with measurement_context(self.model, train=self.module_modes, seed=self.seed):
            for i, w in enumerate(self.weights):
                total.add_(self.flatten(hvp(i, vs)), alpha=w)
        if self.distributed:
            dist.all_reduce(total)
        return total.div_(self.total_weight)
