"""A progress bar over optimizer steps, for runs whose epochs are a single step.

Full-batch gradient descent — the edge-of-stability setting — has one batch per epoch, so
Lightning's per-epoch bar restarts 3000 times in a 3000-step run. :class:`StepProgressBar` is one
bar from step 0 to ``max_steps`` (or the estimated number of optimizer steps) for the whole fit,
with the epoch and the logged progress-bar metrics (e.g. ``dyn/sharpness_ratio``) beside it.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps across epochs (module docstring).

    Args:
        refresh_rate: update the bar every this many steps.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=False)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=int(trainer.estimated_stepping_batches))
        bar.initial = trainer.global_step  # a resumed run starts where it stopped
        bar.n = trainer.global_step
        bar.set_description("steps")

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        """One bar for the whole run: nothing restarts at an epoch."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix({"epoch": trainer.current_epoch, **self.get_metrics(trainer, pl_module)})
            bar.refresh()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """The bar goes on into the next epoch."""
