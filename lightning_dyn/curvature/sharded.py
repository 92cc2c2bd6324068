"""The Hessian of sharded training (FSDP2's ``fully_shard``), by central differences of the
gradients training itself computes.

Under ``fully_shard`` every parameter is a DTensor sharded on its first dimension over the
data-parallel ranks. A forward pass all-gathers each layer's parameters just before the layer
runs and frees them after; the backward pass reduce-scatters each gradient into the ranks'
shards of ``.grad``, averaged over the ranks. The unsharded parameters are temporaries built by
the all-gather, not leaves of the graph — so no second derivative can be taken through them, and
substituting other tensors for the module's parameters (what :class:`HessianOperator` does) is
overwritten by the next all-gather. What does work is what training does, so the product is

    ``H v ≈ ‖v‖ (g(θ + εu) − g(θ − εu)) / 2ε``,  ``u = v/‖v‖``

(or the fourth-order stencil) where each gradient ``g`` is one ordinary forward and backward per
probe batch at the shifted point, written into each rank's own parameter shards and read from
its shards of ``.grad``. Each rank's loss is weighted by ``n_b · W / N`` (its batch's size, the
number of ranks, the size of the global probe set), so the ranks' average that the
reduce-scatter forms is the gradient of the global probe loss ``L = Σ n_b L_b / N``. Around every
gradient the module's ``.grad`` is set aside and put back, and the shards are restored by a copy
of a clone kept from the start — bitwise, as ``θ + εu − εu`` would not be. The all-gathers are
collective, so every rank runs the same number of forward passes: a rank with fewer probe batches
runs its first one again with weight 0. Before each gradient and after the last, every FSDP module
is resharded (``FSDPModule.reshard``), so no forward pass uses parameters gathered before a shift.

Vectors — products, Lanczos bases — are this rank's shards: the space is a
:class:`~lightning_dyn.curvature.space.ShardedSpace`, and memory per rank falls with the number of
ranks like the parameters' own. The step and the error estimate are those of
:mod:`~lightning_dyn.curvature.finite_difference`, taken over the whole of ``θ``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .batches import batch_size, tree_map_tensors
from .context import measurement_context, train_flags
from .finite_difference import STENCILS, Order, central_difference, estimated_error
from .finite_difference import difference_step as difference_step_for
from .operator import CurvatureOperator
from .space import ShardedSpace

try:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover - torch < 2.6
    DTensor = Shard = FSDPModule = None  # type: ignore[assignment,misc]

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def is_sharded(tensor: Any) -> bool:
    """Whether ``tensor`` is a DTensor (a sharded parameter, gradient or optimizer state)."""
    return DTensor is not None and isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view of its storage), or the tensor itself."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def reshard(model: nn.Module) -> None:
    """Free every unsharded parameter FSDP holds, so the next forward pass all-gathers the shards as
    they are now (the root keeps its parameters gathered after a forward pass without backward, and
    ``set_reshard_after_backward(False)`` keeps them across steps)."""
    for module in model.modules():
        if FSDPModule is not None and isinstance(module, FSDPModule):
            module.reshard()


def sharded_model(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is sharded (``fully_shard`` was applied)."""
    return any(is_sharded(p) for p in model.parameters())


def sharding_problem(model: nn.Module) -> Optional[str]:
    """Why the Hessian of ``model`` cannot be measured shard by shard, or ``None``: every trainable
    parameter must be a DTensor sharded on one mesh dimension (FSDP2) — no replicated parameter
    (its gradient would not be reduced), no tensor or hybrid parallelism."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    plain = [n for n, p in params if not is_sharded(p)]
    if plain:
        return (f"{len(plain)} trainable parameter(s) are not sharded (e.g. {plain[0]!r}): apply fully_shard to the "
                "root module too, so that every parameter's gradient is reduced")
    for name, p in params:
        if p.device_mesh.ndim != 1 or not all(isinstance(pl, Shard) for pl in p.placements):
            return (f"parameter {name!r} is placed as {p.placements} on a {p.device_mesh.ndim}-D mesh; only FSDP "
                    "sharding over one data-parallel mesh dimension is supported (no tensor or hybrid parallelism)")
        if p.device_mesh != params[0][1].device_mesh:
            return "the parameters are sharded over different meshes"
    return None


class ShardedHessianOperator(CurvatureOperator):
    """Matrix-free Hessian of a sharded model's probe loss, by central differences (module docstring).

    Args:
        model: a module whose trainable parameters are all FSDP2-sharded DTensors.
        loss_fn: ``loss_fn(model, batch) -> scalar``, the mean loss of a batch.
        batches: this rank's share of the probe set (at least one batch).
        mode: ``"eval"`` (default) or ``"train"`` (Dropout with a private seed, BatchNorm in batch mode).
        difference_order: ``2`` or ``4``.
        difference_step: the step along the unit direction (default: the balanced one over all of θ).
        seed: the private seed of a measurement's RNG streams.
        known_error: the products' relative error when already known (as for :class:`HessianOperator`).

    Every rank must build the operator and take each product together. The operator is the
    Hessian at the parameters current when it is built; an optimizer step in between raises.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Any], *,
                 mode: Literal["eval", "train"] = "eval", difference_order: Order = 2,
                 difference_step: Optional[float] = None, seed: int = 0, known_error: Optional[float] = None,
                 params: Optional[Iterable[nn.Parameter]] = None) -> None:
        super().__init__()
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        if difference_order not in STENCILS:
            raise ValueError(f"difference_order must be 2 or 4, got {difference_order!r}")
        problem = sharding_problem(model)
        if problem:
            raise ValueError(problem)
        if not batches:
            raise ValueError("this rank holds no probe batch: use a probe set of at least one sample per rank")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if params is not None:
            wanted = {id(p) for p in params}
            named = [(n, p) for n, p in named if id(p) in wanted]
        self.model, self.loss_fn = model, loss_fn
        self.param_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._locals = [local(p.detach()) for p in self._params]
        self.shapes = [t.shape for t in self._locals]
        self.numels = [t.numel() for t in self._locals]
        self.size = sum(self.numels)
        self._dimension = sum(p.numel() for p in self._params)
        self.device, self.dtype = self._locals[0].device, self._locals[0].dtype
        self.space = ShardedSpace(self._params[0].device_mesh.get_group())
        self.world = dist.get_world_size(self.space.group)
        self.seed = seed
        self.module_modes = train_flags(model, mode)
        self.batches = [tree_map_tensors(lambda t: t.to(self.device), b) for b in batches]
        self.weights = [float(batch_size(b)) for b in self.batches]
        counts = torch.tensor([len(self.batches), sum(self.weights)], dtype=torch.float64)
        most = counts[:1].clone()
        dist.all_reduce(most, op=dist.ReduceOp.MAX, group=self.space.group)
        dist.all_reduce(counts, group=self.space.group)
        self.total_weight = float(counts[1])
        padding = int(most) - len(self.batches)  # forward passes are collective: run as many as the others
        self.batches += [self.batches[0]] * padding
        self.weights += [0.0] * padding
        self._origin = [t.clone() for t in self._locals]
        # the products run the module itself: in train mode BatchNorm would move its running statistics
        self._buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.difference_order = difference_order
        self.difference_step = difference_step or difference_step_for(
            self.parameters_vector(), difference_order, self.space, self._dimension)
        self.relative_error = 0.0 if known_error is None else known_error
        self._estimate_error = known_error is None
        self._versions = [t._version for t in self._locals]

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self._params)

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector (this rank's shard) into tensors shaped like the local parameter shards."""
        return [c.view(s) for c, s in zip(torch.split(v, self.numels), self.shapes)]

    def parameters_vector(self) -> torch.Tensor:
        """This rank's shard of ``θ``, flat."""
        return torch.cat([t.reshape(-1) for t in self._origin])

    def loss(self) -> torch.Tensor:
        """The global probe loss ``L`` at the operator's parameters (every rank gets it)."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), measurement_context(self.model, train=self.module_modes, seed=self.seed,
                                                  second_order=False):
            for batch, w in zip(self.batches, self.weights):
                total += self.loss_fn(self.model, batch).double() * w
            self._restore()
        dist.all_reduce(total, group=self.space.group)
        return total / self.total_weight

    def gradient_at(self, shift: torch.Tensor) -> torch.Tensor:
        """This rank's shard of ``∇L(θ + shift)``; ``shift`` is this rank's shard of the shift."""
        saved = [p.grad for p in self._params]
        try:
            with torch.no_grad():
                for t, origin, s in zip(self._locals, self._origin, self.unflatten(shift.to(self.dtype))):
                    t.copy_(origin + s)
            reshard(self.model)
            for p in self._params:
                p.grad = None
            with torch.enable_grad(), measurement_context(self.model, train=self.module_modes, seed=self.seed,
                                                          second_order=False):
                for batch, w in zip(self.batches, self.weights):
                    loss = self.loss_fn(self.model, batch)
                    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                        raise ValueError("loss_fn(model, batch) must return a scalar tensor")
                    (loss.reshape(()) * (w * self.world / self.total_weight)).backward()
            grads = [torch.zeros_like(t) if p.grad is None else local(p.grad).to(self.dtype)
                     for p, t in zip(self._params, self._locals)]
            return torch.cat([g.reshape(-1) for g in grads])
        finally:
            self._restore()
            for p, g in zip(self._params, saved):
                p.grad = g

    def _restore(self) -> None:
        """Shards and buffers back to the values at construction (bitwise), every module resharded so
        training's next forward gathers ``θ`` itself."""
        with torch.no_grad():
            for t, origin in zip(self._locals, self._origin):
                t.copy_(origin)
            for buffer, value in self._buffers:
                buffer.copy_(value)
        reshard(self.model)
        self._versions = [t._version for t in self._locals]

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        if any(t._version != ver for t, ver in zip(self._locals, self._versions)):
            raise RuntimeError("the model's parameters changed in place since this operator was built; build a new "
                               "operator at the new parameters")
        fine = central_difference(self.gradient_at, v, self.difference_step, self.difference_order, self.space)
        if self.num_matvecs == 0 and self._estimate_error:
            coarse = central_difference(self.gradient_at, v, 2 * self.difference_step, self.difference_order,
                                        self.space)
            self.relative_error = estimated_error(fine, coarse, self.difference_order, self.space)
        return fine
