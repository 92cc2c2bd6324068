"""The minimal callback the contract suite was first run on: the top Hessian eigenvalue of the
training loss on a probe set, warm-started. Later callbacks plug into the same suite."""

from __future__ import annotations

from typing import Any, Callable, Optional

from lightning_dyn.callbacks.base import DynamicsCallback, Measurement, check_positive_int
from lightning_dyn.callbacks.compat import ConfigurationError
from lightning_dyn.callbacks.probe import check_twice_differentiable, draw_probe_batches, training_step_loss
from lightning_dyn.curvature import HessianOperator, top_eigenpairs
from lightning_dyn.curvature.eigen import EigenResult


class TopHessianEigenvalue(DynamicsCallback):
    """Logs ``dyn/sharpness``, the top Hessian eigenvalue of the training loss on a probe set.

    Args:
        every_n_steps: measure every this many optimizer steps.
        probe_size: samples in the probe set (the first ones the train dataloader yields).
        tol: relative accuracy of the eigenvalue.
        loss_fn: ``loss_fn(pl_module, batch)``; default: the module's ``training_step``.
        at_fit_end: measure once more at fit end.
    """

    progress_bar_tag = "dyn/sharpness"

    def __init__(self, every_n_steps: int = 5, probe_size: int = 512, tol: float = 1e-6,
                 loss_fn: Optional[Callable[[Any, Any], Any]] = None, at_fit_end: bool = True) -> None:
        super().__init__(every_n_steps=every_n_steps, at_fit_end=at_fit_end)
        check_positive_int("probe_size", probe_size)
        if not (isinstance(tol, float) and 0 < tol < 1):
            raise ConfigurationError(f"`tol` must be a float in (0, 1), got {tol!r}")
        self.probe_size, self.tol = probe_size, tol
        self.loss_fn = loss_fn or training_step_loss
        self.previous: Optional[EigenResult] = None

    def prepare(self, trainer: Any, pl_module: Any) -> None:
        self.batches = draw_probe_batches(trainer.train_dataloader, self.probe_size, pl_module.device, self.seed)
        reason = check_twice_differentiable(pl_module, self.loss_fn, self.batches[0])
        if reason:
            raise ConfigurationError(f"{type(self).__name__} cannot measure the Hessian of this loss: {reason}")

    def measure(self, trainer: Any, pl_module: Any) -> Measurement:
        op = HessianOperator(pl_module, self.loss_fn, self.batches)
        result = top_eigenpairs(op, tol=self.tol, init=self.previous, generator=self.generator)
        self.previous = result
        return Measurement({"dyn/sharpness": float(result.values[0])}, hvps=result.num_matvecs)

    def extra_state(self) -> dict[str, Any]:
        return {"previous": None if self.previous is None else vars(self.previous)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.previous = None if state["previous"] is None else EigenResult(**state["previous"])
