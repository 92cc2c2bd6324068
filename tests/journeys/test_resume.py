"""Resume from a checkpoint saved mid-epoch, while a callback holds pending state (the monitor's
uninspected steps, warm starts, the probe set's generator): the resumed run continues the series."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dyn import EdgeOfStability, HessianSettings, GradientExplosionMonitor, HessianSharpness
from lightning_dyn.data import digits_tensors
from tests.journeys.common import Classifier
from tests.contract.harness import seed_all


def _callbacks():
    return [GradientExplosionMonitor(every_n_steps=4),
            HessianSharpness(every_n_steps=4, hessian=HessianSettings(probe_size=80, cold_every=None)),
            EdgeOfStability(every_n_steps=4, hessian=HessianSettings(probe_size=80), density_at_fit_end=False)]


def _fit(callbacks, root, *, ckpt_path=None, extra=()):
    seed_all(0)
    x, y = digits_tensors(160, targets="index")
    loader = DataLoader(TensorDataset(x, y), batch_size=40, shuffle=False)  # 4 steps an epoch
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root), callbacks=[*callbacks, *extra])
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
    trainer.fit(Classifier(net, momentum=0.9), loader, ckpt_path=ckpt_path)
    return trainer


def test_a_mid_epoch_checkpoint_with_pending_steps_resumes_the_same_series(tmp_path):
    straight = _callbacks()
    _fit(straight, tmp_path / "a")
    first = _callbacks()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    _fit(first, tmp_path / "b", extra=[saver])
    ckpt = tmp_path / "ckpt" / "epoch=1-step=6.ckpt"  # mid-epoch: step 6 of steps 5–8
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    pending = next(v for k, v in state.items() if k.startswith("GradientExplosionMonitor"))["extra"]["pending"]
    assert [row[0] for row in pending] == [5, 6]  # steps recorded but not inspected yet
    resumed = _callbacks()
    _fit(resumed, tmp_path / "c", ckpt_path=str(ckpt))
    # Lightning restarts a plain loader's epoch on a mid-epoch resume, so training after step 6 is
    # not the straight run's; what the callbacks carry must be: the series' steps, what was measured
    # before the checkpoint, and the monitor's pending steps 5 and 6, inspected after the resume
    for a, b in zip(straight, resumed):
        assert [h["step"] for h in b.history] == [4, 8, 12], type(b).__name__
        assert b.history[0] == a.history[0], type(b).__name__
        if isinstance(b, HessianSharpness):  # EdgeOfStability too: the warm-start bookkeeping carried over
            assert b.measurements == 3 and b.previous is not None
    assert len(resumed[0].recent) == 12
    assert list(resumed[0].recent)[:6] == list(straight[0].recent)[:6]
