"""CriticalPoints on real Trainers: counts by Morse index, the function-class text, the figure, the report."""

from __future__ import annotations

import math
import re

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_dyn import CriticalPoints
from lightning_dyn.data import SurfaceDataModule
from lightning_dyn.models import SurfaceRegressor
from tests.callbacks.test_edge_of_stability import _layout


def _saddle_model() -> SurfaceRegressor:
    """f(x) = [tanh(x₁+1) − tanh(x₁−1)] − [tanh(x₂+1) − tanh(x₂−1)], frozen (lr 0): one saddle at the
    origin with input-Hessian eigenvalues ±4 sech²(1) tanh(1)."""
    model = SurfaceRegressor("wide_mlp", width=4, lr=0.0)
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
        model.net[0].bias.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0]))
        model.net[2].weight.copy_(torch.tensor([[1.0, -1.0, -1.0, 1.0]]))
        model.net[2].bias.zero_()
    return model


def _fit(model, callbacks, logger, steps=6):
    trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, SurfaceDataModule("saddle", n=11))
    return trainer


def test_a_known_saddle_is_counted_with_its_index_and_shown(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    callback = CriticalPoints(every_n_steps=3)  # the box: the training inputs' bounding box, [−1, 1]²
    _fit(_saddle_model(), [callback], logger)
    assert callback.box == [(-1.0, 1.0), (-1.0, 1.0)]
    assert callback.function_class.case == "morse"
    assert [h["step"] for h in callback.history] == [3, 6]
    for h in callback.history:
        assert (h["dyn/critical_points"], h["dyn/critical_points_index_1"], h["dyn/critical_points_index_0"],
                h["dyn/critical_points_index_2"], h["dyn/critical_points_degenerate"]) == (1, 1, 0, 0, 0)
        assert h["dyn/critical_points_min_abs_eigenvalue"] == pytest.approx(
            4 * math.tanh(1.0) / math.cosh(1.0) ** 2, rel=1e-9)
        assert h["dyn/critical_points_min_grad_norm"] < 1e-12 and h["dyn/critical_points_estimated"] == 1
    assert callback.last_search.points.abs().max() < 1e-12
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "dyn/critical_points_map" in tags["images"] and "dyn/function_class/text_summary" in tags["tensors"]
    text = acc.Tensors("dyn/function_class/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "morse" in text and "MLP 2–4–1" in text
    scalars = set(tags["scalars"])
    layout = _layout(acc)[callback.layout_category]
    for title, patterns in layout.items():
        for pattern in patterns:
            matched = [t for t in scalars if re.search(pattern, t)]
            assert len(matched) == 1 and pattern == f"^{re.escape(matched[0])}$", (title, pattern, matched)
    from lightning_dyn.report import report

    summary = report(logger.log_dir, tmp_path / "png")
    # the map with its saddle, and the loss under its own name (no edge of stability was measured)
    assert {p.name for p in (tmp_path / "png").glob("*.png")} == {"dyn_critical_points_map.png", "training_loss.png"}
    assert "CriticalPoints: critical points of the map at step 3: 1 saddle of index 1; at step 6: 1 saddle " \
           "of index 1 (2 measurements)" in summary


def test_an_architecture_without_critical_points_says_so_and_logs_the_evidence(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    callback = CriticalPoints(every_n_steps=4, box=[(-1.0, 1.0), (-1.0, 1.0)], starts=32, max_iter=20)
    _fit(SurfaceRegressor("narrow_mlp"), [callback], logger, steps=8)
    assert callback.function_class.case == "no_critical_points"
    assert all(h["dyn/critical_points"] == 0 and h["dyn/critical_points_min_grad_norm"] > 0 for h in callback.history)
    acc = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    text = acc.Tensors("dyn/function_class/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "no critical points" in text and "MLP 2–2–2–1" in text


def test_a_box_of_the_wrong_dimension_fails_before_training(tmp_path):
    from lightning_dyn import ConfigurationError

    callback = CriticalPoints(every_n_steps=2, box=[(-1.0, 1.0)] * 3)
    with pytest.raises(ConfigurationError, match="3-dimensional inputs"):
        _fit(_saddle_model(), [callback], False, steps=2)
    with pytest.raises(ConfigurationError, match="not a submodule"):
        _fit(_saddle_model(), [CriticalPoints(network="body")], False, steps=2)


def test_a_weight_that_becomes_rank_deficient_changes_the_case_and_says_so(tmp_path):
    """Training can collapse a weight (the README's narrow MLP on the saddle drives W₁ to rank 1 at
    float32 precision); here the collapse is made by hand between two measurements."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class Collapse(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 5:
                with torch.no_grad():
                    pl_module.net[0].weight[1] = 2 * pl_module.net[0].weight[0]

    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    callback = CriticalPoints(every_n_steps=4, box=[(-1.0, 1.0), (-1.0, 1.0)], starts=16, max_iter=10, figure=False)
    _fit(SurfaceRegressor("narrow_mlp", lr=0.0), [Collapse(), callback], logger, steps=12)
    acc = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    texts = [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors("dyn/function_class/text_summary")]
    assert [step for step, _ in texts] == [4, 8]  # written when the case changes, not at every measurement
    assert "no critical points" in texts[0][1]
    assert "degenerate" in texts[1][1] and "bottleneck at the weight of layer 0 (Linear 2→2), of rank 1" in texts[1][1]
