"""The continuous-depth examples and configs: the embedding and memory results, as run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_1d_flow_cannot_negate_and_an_augmented_one_can(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _load("ode_embedding").main(steps=300)
    assert out["floor"] == pytest.approx(0.343915, abs=1e-6)  # mean(x²) on 64 points of [−1, 1]
    assert out["ode"] >= out["floor"] - 1e-6  # the flow is increasing: it cannot beat the floor
    assert out["augmented_ode"] < 1e-3
    events = list((tmp_path / "runs" / "ode_embedding").rglob("events.out.tfevents.*"))
    assert len(events) == 2


@pytest.mark.slow
def test_dde_memory_decides_whether_x_squared_fits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = _load("dde_memory").main(k_taus=(0.5, 3.0), steps=600, lr=1e-2)
    assert results[0.5][0] >= 0.5  # K·τ = 0.5: no better than an ODE's bound
    assert results[3.0][0] < 0.15  # K·τ = 3: it fits


@pytest.mark.parametrize("config", ["ode_embedding", "dde_memory"])
def test_shipped_configs_run_and_log_solver_statistics(config, tmp_path):
    cmd = [sys.executable, "-m", "lightning_dyn.cli", "fit", "--config", str(ROOT / "configs" / f"{config}.yaml"),
           "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1",
           "--trainer.logger.init_args.save_dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from lightning_dyn.report import read_scalars

    series = read_scalars(tmp_path)
    assert "train_loss" in series and "solver/nfe_forward" in series and "solver/steps_forward" in series
