"""The demo's progress bar counts optimizer steps across one-step epochs (full-batch GD)."""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_dyn.data import DigitsDataModule
from lightning_dyn.models import SquaredLossMLP
from lightning_dyn.progress import StepProgressBar


class _Count(StepProgressBar):
    def init_train_tqdm(self):
        self.created = getattr(self, "created", 0) + 1
        return super().init_train_tqdm()


def test_one_bar_from_the_first_step_to_the_last():
    bar = _Count()
    trainer = pl.Trainer(max_steps=12, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(SquaredLossMLP(widths=(64, 8, 10)), DigitsDataModule(n=100))
    assert trainer.current_epoch == 12  # twelve one-step epochs ...
    assert bar.created == 1 and bar.train_progress_bar.total == 12 and bar.train_progress_bar.n == 12  # ... one bar
