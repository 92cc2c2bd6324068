"""The continuous-depth examples and configs: the embedding and memory results, as run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.examples import ROOT, load_example, run_in_parallel
from tests.readme import readme_numbers



@pytest.mark.slow
def test_a_1d_flow_cannot_negate_and_an_augmented_one_can(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = load_example("ode_embedding").main(steps=300)
    (floor,) = readme_numbers("A 1-D `NeuralODE` stalls at MSE {n}")
    (augmented,) = readme_numbers("one extra dimension reaches {n}")
    assert out["floor"] == pytest.approx(0.343915, abs=1e-6)  # mean(x²) on 64 points of [−1, 1]
    assert out["floor"] == pytest.approx(floor, abs=1e-4)
    # the flow is increasing, so it cannot beat the floor; trained, it stalls on it (the README's "exactly")
    assert out["floor"] - 1e-6 <= out["ode"] <= out["floor"] + 1e-4
    assert out["augmented_ode"] == pytest.approx(augmented, rel=0.1)
    events = list((tmp_path / "runs" / "ode_embedding").rglob("events.out.tfevents.*"))
    assert len(events) == 2


@pytest.mark.slow
def test_dde_memory_table_as_in_the_readme(tmp_path, monkeypatch):
    """The README's table, column by column, from the example as it runs by default."""
    monkeypatch.chdir(tmp_path)
    header = readme_numbers("| K·τ | {n} | {n} | {n} | {n} | {n} |")
    sup = readme_numbers("| sup-error | {n} | {n} | {n} | {n} | {n} |")
    mse = readme_numbers("| MSE | {n} | {n} | {n} | {n} | {n} |")
    # the example's main() runs these fits one after another; here two at a time
    results = dict(zip(header, run_in_parallel("dde_memory", "fit", [(kt,) for kt in header], tmp_path)))
    for k_tau, want_sup, want_mse in zip(header, sup, mse):
        got_sup, got_mse = results[k_tau]
        assert got_sup == pytest.approx(want_sup, abs=2e-3), k_tau  # printed to 1e-3
        assert got_mse == pytest.approx(want_mse, rel=0.02), k_tau  # printed to 2 digits
    assert results[0.5][0] >= 0.5 and results[1.0][0] >= 0.5  # no better than any 1-D ODE
    assert results[3.0][0] < 0.1  # it fits


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
