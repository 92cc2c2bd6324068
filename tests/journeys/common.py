"""What the journeys share: an independent reference for the top eigenvalue, a plain fit, the
training state an observer must leave as it was.

The reference does not use ``lightning_dyn``: a float64 deep copy of the model, Hessian-vector
products by plain double backward through ``torch.func.functional_call`` (attention on the math
kernel, no warm start, no Lanczos of ours), and scipy's ARPACK to a tolerance of 1e-10.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import scipy.sparse.linalg
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tests.contract.harness import seed_all


def _float64(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.double() if batch.is_floating_point() else batch
    if isinstance(batch, Mapping):  # a dict, or transformers' BatchEncoding (a UserDict)
        return {k: _float64(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_float64(v) for v in batch)
    return batch


def _samples(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
    return len(first)


def reference_top_eigenvalue(module: torch.nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor],
                             batches: Sequence[Any], *, scale: Optional[torch.Tensor] = None,
                             modes: str = "eval", params: Optional[Sequence[torch.nn.Parameter]] = None) -> float:
    """``λ_max(D H D)`` (``D = diag(scale)``, or ``H``) of the size-weighted mean of ``loss_fn`` over
    ``batches``, in float64 and eval mode (``modes="as_is"``: each module's flag as the module has
    it), by ARPACK on independent double-backward products. ``params``: the Hessian over these
    parameters only (default: every one that requires grad)."""
    wanted = None if params is None else {id(p) for p in params}
    chosen = [n for n, p in module.named_parameters() if p.requires_grad and (wanted is None or id(p) in wanted)]
    model = copy.deepcopy(module).double()
    if modes == "eval":
        model.eval()
    names = [n for n, p in model.named_parameters() if n in chosen]
    point = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in chosen}
    batches = [_float64(b) for b in batches]
    sizes = [_samples(b) for b in batches]
    with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
        loss = sum(loss_fn(_Swap(model, point), b) * n for b, n in zip(batches, sizes)) / sum(sizes)
        grads = torch.autograd.grad(loss, [point[n] for n in names], create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    d = None if scale is None else scale.double().cpu()

    def matvec(v: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.asarray(v).reshape(-1)).double()
        v = v if d is None else d * v
        hv = torch.autograd.grad((flat_grad * v).sum(), [point[n] for n in names], retain_graph=True,
                                 allow_unused=True)
        hv = torch.cat([torch.zeros_like(point[n]).reshape(-1) if h is None else h.reshape(-1)
                        for n, h in zip(names, hv)])
        return (hv if d is None else d * hv).numpy()

    op = scipy.sparse.linalg.LinearOperator((flat_grad.numel(),) * 2, matvec=matvec, dtype=np.float64)
    return float(scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-10, ncv=40)[0][0])


class _Swap:
    """The model called with the reference's parameters substituted (``functional_call``): a
    reference ``loss_fn(model, batch)`` calls ``model(...)``; other attributes are the model's."""

    def __init__(self, model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
        self._model, self._params = model, params

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self._model, self._params, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def fit(module: pl.LightningModule, loader: Any, callbacks: list, *, seed: int = 0, **trainer_kwargs: Any) -> pl.Trainer:
    """Seed everything and fit on a real CPU Trainer, quietly."""
    seed_all(seed)
    kwargs = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    kwargs.update(trainer_kwargs)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(module, loader)
    return trainer


def training_state(trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any]:
    """Parameters, buffers, optimizer state and the global torch RNG after a fit."""
    return {"state": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "optimizer": [o.state_dict() for o in trainer.optimizers],
            "torch_rng": torch.get_rng_state()}


def cross_entropy(model: Any, batch: Any) -> torch.Tensor:
    """The classifiers' loss, as a ``loss_fn(model, batch)``."""
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


class Classifier(pl.LightningModule):
    """``net`` trained on cross-entropy by SGD over the parameters that train (fine-tuning freezes some)."""

    def __init__(self, net: torch.nn.Module, lr: float = 0.1, momentum: float = 0.0) -> None:
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = cross_entropy(self, batch)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=self.momentum)
