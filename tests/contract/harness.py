"""Running real Trainers for the contract checks, and reading back what they left."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch
import numpy as np
import torch

from tests.contract.models import make_loader, make_module


def seed_all(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trainer_class(package: str):
    if package == "lightning":
        from lightning.pytorch import Trainer
    else:
        from pytorch_lightning import Trainer
    return Trainer


def fit(callbacks: list, root: Path, *, package: str = "lightning", max_steps: int = 12, logger: Any = False,
        module_kwargs: Optional[dict] = None, loader_kwargs: Optional[dict] = None, ckpt_path: Optional[str] = None,
        module: Any = None, **trainer_kwargs):
    """Seed everything, then fit the contract module with these callbacks on a real Trainer."""
    seed_all(0)
    module = module or make_module(package, **(module_kwargs or {}))
    loader = make_loader(**(loader_kwargs or {}))
    kwargs = dict(max_steps=max_steps, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
    kwargs.update(trainer_kwargs)
    trainer = trainer_class(package)(callbacks=callbacks, **kwargs)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer, module


def training_state(trainer, module) -> dict[str, Any]:
    """Everything a run leaves that an observer must not change."""
    return {
        "params": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizer": trainer.optimizers[0].state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "training": [m.training for m in module.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in module.parameters()],
        "train_loss": trainer.logged_metrics.get("train_loss"),
    }


def assert_bitwise_equal(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path} keys differ"
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path} lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{path} differs"
    else:
        assert a == b, f"{path} differs: {a!r} != {b!r}"


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series in the TensorBoard event files under ``log_dir``, read back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return series


class HistoryRecorder(lightning.pytorch.Callback):
    """Writes a callback's history to ``<out>/rank<r>.json`` at fit end (to read DDP ranks back)."""

    def __init__(self, watched: Any, out: str) -> None:
        self.watched, self.out = watched, out

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.watched.history))
