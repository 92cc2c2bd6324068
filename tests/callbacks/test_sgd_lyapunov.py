"""SGDLyapunov on real Trainers: what it refuses at setup, what it warns about, what it draws."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.nn import functional as F

from lightning_dyn import SGDLyapunov
from lightning_dyn import ConfigurationError
from lightning_dyn.report import report
from tests.contract.harness import fit
from tests.helpers import fit_config_and_report
from tests.contract.models import ContractModule


class AdamModule(ContractModule):
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _small(**kw):
    return SGDLyapunov(**{"every_n_steps": 4, "criterion": F.cross_entropy, "probe_size": 64, "num_steps": 60,
                          "num_lrs": 6, **kw})


@pytest.mark.parametrize("kwargs, module, match", [
    ({}, AdamModule(), "Adam.*lr="),
    ({"probe_size": 32}, None, r"batch size \(64\) is larger than the probe set \(32"),
    ({"max_gram_outputs": 100}, None, "64×10 outputs.*method='hvp'"),
    ({"criterion": None}, None, "criterion"),
])
def test_setups_it_cannot_serve_fail_before_training(tmp_path, kwargs, module, match):
    callback = _small(**kwargs)
    with pytest.raises(ConfigurationError, match=match):
        fit([callback], tmp_path, module=module)
    assert callback.history == []


def test_with_an_explicit_lr_it_judges_sgd_for_an_adam_run(tmp_path):
    callback = _small(lr=0.05)
    fit([callback], tmp_path, module=AdamModule(), max_steps=4)
    assert callback.last is not None and callback.last.lr == 0.05


def test_far_from_interpolation_is_flagged_and_the_diagram_reaches_tensorboard_and_the_report(tmp_path):
    callback = _small(batch_sizes=[16, 32])
    with pytest.warns(UserWarning, match="probe loss .* above interpolation_tol"):
        fit([callback], tmp_path, max_steps=8, logger=TensorBoardLogger(tmp_path, name="tb"))
    assert all(h["dyn/near_interpolation"] == 0.0 for h in callback.history)
    assert callback.last.diagram.batch_sizes == [16, 32, 64]
    text = report(tmp_path / "tb", tmp_path / "out")
    assert "SGD at step 8" in text and "not at interpolation" in text
    png = tmp_path / "out" / "dyn_stability_diagram.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_shipped_config_runs_and_reports(tmp_path):
    run_dir, text = fit_config_and_report("sgd_lyapunov", tmp_path, "--trainer.max_epochs", "2",
                                          "--trainer.callbacks.init_args.num_steps", "100")
    assert "SGD at step 10" in text and (run_dir / "dyn_stability_diagram.png").exists()
