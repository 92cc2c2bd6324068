"""The probe set and the loss a measurement differentiates, as callbacks get them from a Trainer.

The probe set itself (which samples, drawn how, each rank's share) is
:func:`lightning_dyn.curvature.probe.draw_probe_set`; here it is drawn from the trainer's train
dataloader with the trainer's rank and world size, and the loss is checked once at setup — one
Hessian-vector product through the real model — so a setup a measurement cannot serve fails before
training with the way out, not 10,000 steps in.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ..curvature.backends import FALLBACK, PREFERRED, SettingsBackend
from ..curvature.batches import tree_map_tensors
from ..curvature.hessian import HessianOperator
from ..curvature.probe import ProbeSet, ProbeSetError, draw_probe_set
from ..curvature.sharded import ShardedHessianOperator, sharded_model
from .compat import ConfigurationError

LossFn = Callable[[nn.Module, Any], torch.Tensor]
#: ``input_fn(batch) -> inputs`` and ``forward_fn(pl_module, inputs) -> outputs`` of the callbacks
#: that measure the model's input–output map
InputFn = Callable[[Any], torch.Tensor]
ForwardFn = Callable[[Any, torch.Tensor], torch.Tensor]


def probe_set(trainer: Any, pl_module: Any, probe_size: Optional[int], *, seed: int, default_size: int,
              owner: str) -> ProbeSet:
    """The probe set of a callback, drawn from the trainer's train dataloader (global samples)."""

    def gather(batches: list[Any]) -> list[Any]:
        everyone = [None] * trainer.world_size
        torch.distributed.all_gather_object(everyone, [tree_map_tensors(lambda t: t.cpu(), b) for b in batches])
        return [tree_map_tensors(lambda t: t.to(pl_module.device), b) for share in everyone for b in share]

    try:
        probe = draw_probe_set(trainer.train_dataloader, probe_size, device=pl_module.device, seed=seed,
                               default_size=default_size, rank=trainer.global_rank, world_size=trainer.world_size,
                               all_gather=gather)
    except ProbeSetError as err:
        raise ConfigurationError(f"{owner}: {err}") from None
    rank_zero_info(f"{owner}: probe set of {probe.description}")
    return probe


def batch_inputs(batch: Any, *, owner: str) -> torch.Tensor:
    """The model's inputs in a batch: the batch itself, its first entry, or ``"x"``/``"input(s)"``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in ("x", "input", "inputs"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise ConfigurationError(f"{owner} cannot find the inputs in the batch: pass input_fn(batch) -> inputs")


def canonical_order(*tensors: torch.Tensor) -> torch.Tensor:
    """A content-defined order of the samples (lexicographic in the tensors' entries), so every
    rank — and one process on the same data — sees the probe set in the same order."""
    keys = torch.cat([t.reshape(len(t), -1).double() for t in tensors], 1)
    return torch.from_numpy(np.lexsort(keys.cpu().numpy().T[::-1]).copy())


@contextlib.contextmanager
def muted_logging(pl_module: nn.Module) -> Iterator[None]:
    """Make ``self.log``/``self.log_dict`` no-ops while the measurement calls ``training_step``."""
    had = {name: name in vars(pl_module) for name in ("log", "log_dict")}
    pl_module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    pl_module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, present in had.items():
            if not present:
                delattr(pl_module, name)


def training_step_loss(pl_module: nn.Module, batch: Any) -> torch.Tensor:
    """The loss an unmodified ``LightningModule`` trains on: ``training_step(batch, 0)``, a tensor
    or a dict with ``"loss"``; its own ``self.log`` calls are muted."""
    with muted_logging(pl_module):
        out = pl_module.training_step(batch, 0)
    if isinstance(out, Mapping):
        out = out.get("loss")
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            "training_step must return the loss (a tensor or a dict with 'loss') for the default loss; "
            "otherwise pass loss_fn(pl_module, batch)"
        )
    return out


def default_loss(pl_module: Any, loss_fn: Optional[LossFn], owner: str) -> LossFn:
    """``loss_fn`` if given, else the module's ``training_step`` — refused under manual
    optimization, where ``training_step`` runs its own backward and optimizer step, which a
    measurement must never do."""
    if loss_fn is not None:
        return loss_fn
    if not getattr(pl_module, "automatic_optimization", True):
        raise ConfigurationError(
            f"{owner}: this module uses manual optimization (automatic_optimization = False), so its training_step "
            "runs backward and the optimizer step itself and cannot serve as the loss of a measurement. Pass "
            "`loss_fn=lambda pl_module, batch: <the training loss of batch>` (no backward, no step)")
    return training_step_loss


#: central-difference steps (float64, unit direction) the setup check compares a product with
CHECK_STEPS = (1e-3, 1e-4)
#: relative disagreement between the product and its central difference that counts as wrong
CHECK_TOLERANCE = 1e-3


Backend = SettingsBackend
#: estimated relative error of a sharded central-difference product above which it is refused
SHARDED_ACCURACY = 1e-2


def check_measurable(pl_module: nn.Module, loss_fn: LossFn, batch: Any, *, owner: str, mode: str = "eval",
                     seed: int = 0, backend: Backend = "auto") -> str:
    """Take one Hessian-vector product through the real model on one probe batch (like a
    measurement: modes, buffers and RNG streams are left alone) and return the backend that
    measurements will use, or raise a :class:`~lightning_dyn.ConfigurationError` saying why none can.

    Double backward is checked twice: that it runs, and that it is right — a product through an
    operation whose backward is not itself differentiable silently drops that operation's second
    derivative, so it is compared, in float64, with central differences of gradients
    ``(∇L(θ+εv) − ∇L(θ−εv))/2ε``, which need none. With ``backend="auto"`` either failure selects
    central differences (said in one line); with ``"double_backward"`` it is refused."""
    if sharded_model(pl_module):
        return _check_sharded(pl_module, loss_fn, batch, owner=owner, mode=mode, seed=seed, backend=backend)

    def product(chosen: str) -> None:
        op = HessianOperator(pl_module, loss_fn, [batch], distributed=False, mode=mode, seed=seed,
                             cache_graph=False, backend=chosen)
        op.matvec(torch.randn(op.size, generator=torch.Generator().manual_seed(seed)).to(op.device, op.dtype))

    reason = why_not = None
    try:
        with torch.enable_grad():
            loss = HessianOperator(pl_module, loss_fn, [batch], distributed=False, mode=mode, seed=seed).loss()
            if not loss.requires_grad:
                reason = "the loss does not require grad (computed under torch.no_grad() or detached?)"
            elif not torch.isfinite(loss.detach()).all():
                reason = f"the loss on the probe set is not finite ({float(loss.detach())})"
            elif backend == FALLBACK:
                product(FALLBACK)
                return FALLBACK
            else:
                try:
                    product(PREFERRED)
                    why_not = _disagreement(pl_module, loss_fn, batch, mode=mode, seed=seed)
                except RuntimeError as err:
                    why_not = f"a Hessian-vector product (double backward) cannot be taken through this model: {err}"
                if why_not and backend == "auto":
                    product(FALLBACK)
                    rank_zero_info(f"{owner}: Hessian-vector products by central differences of gradients "
                                   f"(backend='auto'; double backward: {why_not.split(': ', 1)[0]})")
                    return FALLBACK
                reason = why_not and (f"{why_not}. Use backend='finite_difference' (or 'auto'), or pass `loss_fn=` "
                                      "computing the same loss through a differentiable implementation")
    except (TypeError, ValueError) as err:
        reason = str(err)
    except RuntimeError as err:
        reason = f"a gradient cannot be taken through this model: {err}"
    if reason:
        raise ConfigurationError(f"{owner} cannot measure the Hessian of this loss: {reason}")
    return PREFERRED


def _check_sharded(pl_module: nn.Module, loss_fn: LossFn, batch: Any, *, owner: str, mode: str, seed: int,
                   backend: Backend) -> str:
    """The check under sharded training (FSDP2): double backward cannot go through parameters that
    are all-gathered for each layer, so products are central differences shard by shard
    (:class:`~lightning_dyn.curvature.sharded.ShardedHessianOperator`); one is taken on every rank."""
    if backend == PREFERRED:
        raise ConfigurationError(
            f"{owner}: the model's parameters are sharded (FSDP2 fully_shard), and double backward cannot go through "
            "parameters that are all-gathered for each layer; use backend='auto' or 'finite_difference'")
    try:  # the operator refuses a model it cannot serve (sharding_problem) with the reason
        op = ShardedHessianOperator(pl_module, loss_fn, [batch], mode=mode, seed=seed)
        loss = float(op.loss())
        if not np.isfinite(loss):
            raise ValueError(f"the loss on the probe set is not finite ({loss})")
        op.matvec(op.space.random((op.size,), device=op.device, dtype=op.dtype,
                                  generator=torch.Generator().manual_seed(seed)))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigurationError(f"{owner} cannot measure the Hessian of this loss: {err}") from err
    if not op.relative_error <= SHARDED_ACCURACY:
        raise ConfigurationError(
            f"{owner}: central differences through this sharded model are inaccurate (estimated relative error "
            f"{op.relative_error:.2g}): a 16-bit MixedPrecisionPolicy(param_dtype=...) rounds the shifted parameters "
            "before the forward pass. Measure without that policy (bf16 autocast through `precision=` is fine)")
    rank_zero_info(f"{owner}: sharded parameters (FSDP2): Hessian-vector products by central differences of "
                   "gradients, shard by shard")
    return FALLBACK


def _disagreement(pl_module: nn.Module, loss_fn: LossFn, batch: Any, *, mode: str, seed: int) -> Optional[str]:
    """Why a float64 product disagrees with central differences, or ``None``.

    A missing second derivative is an error that does not depend on the step ``ε``; the
    differences' own errors do: truncation shrinks as ``ε²``, rounding grows as ``1/ε`` (a model
    that computes part of its loss in float32 — ``transformers`` upcasts logits with ``.float()`` —
    rounds at 1e-7), and a step that crosses a kink of a piecewise-linear activation sees a jump
    the Hessian, defined almost everywhere, does not have. So the product is refused only when it
    disagrees at two steps ten apart, by about the same amount (within a factor 3). A check that
    cannot run (the model fails in float64) is a reason too: it never counts as agreement."""
    try:
        op = HessianOperator(pl_module, loss_fn, [batch], distributed=False, mode=mode, seed=seed,
                             cache_graph=True, dtype=torch.float64)
        generator = torch.Generator().manual_seed(seed + 1)
        errors = []
        for eps in CHECK_STEPS:
            v = torch.randn(op.size, generator=generator, dtype=torch.float64).to(op.device)
            v /= torch.linalg.vector_norm(v)
            exact = op.matvec(v)
            central = (op.gradient_at(eps * v) - op.gradient_at(-eps * v)) / (2 * eps)
            scale = max(float(torch.linalg.vector_norm(central)), float(torch.linalg.vector_norm(exact)), 1e-300)
            errors.append(float(torch.linalg.vector_norm(exact - central)) / scale)
            if errors[-1] <= CHECK_TOLERANCE:
                return None
    except (RuntimeError, TypeError, ValueError) as err:
        # a check that did not run is no pass: say so, and let the caller take the safe backend
        return (f"the float64 check of double backward against central differences could not run: "
                f"{type(err).__name__}: {err}")
    if max(errors) > 3 * min(errors):
        return None  # the differences' own error, not the product's
    return (f"a Hessian-vector product disagrees with central differences of the gradient: by "
            f"{min(errors):.1%} (relative, float64): an operation in the model has a backward that is not "
            "differentiable itself (a custom autograd.Function, a fused kernel), so double backward drops its "
            "second derivative")
