"""The central-flow example, shortened to 250 steps: the flow reaches 2/η where the README says and
holds it within 1%; its predicted time-averaged loss is nearer GD's windowed mean than its own loss;
GD's iterates do oscillate in the flow's held eigenvectors; TensorBoard gets the series."""

from __future__ import annotations

import statistics

import pytest

from lightning_dyn.report import read_scalars
from tests.examples import load_example
from tests.readme import readme_numbers


@pytest.mark.slow
def test_central_flow_example_holds_the_edge_and_predicts_the_mean_loss(tmp_path):
    out = load_example("central_flow").main(steps=250, logdir=str(tmp_path / "run"), figure=None)
    s = out["summary"]
    (reached,) = readme_numbers("flow at 2/η from step {n}")
    assert s["edge_reached_at"] == reached
    assert s["phase_steps"] >= 100
    assert s["sharpness_error_max"] < 0.01
    # once GD oscillates, the oscillation's share L̄ − L is what brings the flow to GD's mean loss
    start = s["gd_oscillating_from"]
    assert start is not None
    late = [r for r in out["rows"] if start <= r["t"] <= 240]
    predicted = statistics.median(abs(r["predicted"] / r["gd_windowed"] - 1) for r in late)
    own = statistics.median(abs(r["flow_loss"] / r["gd_windowed"] - 1) for r in late)
    assert len(late) >= 50 and predicted < 0.1 and predicted < own / 1.5
    assert 0.1 < statistics.median(r["gd_variance"] / r["sigma2"] for r in late) < 10
    held = [r for r in out["rows"] if r["held"]]
    assert held and all(r["sigma2"] > 0 and r["predicted"] > r["flow_loss"] for r in held[5:])
    series = read_scalars(tmp_path / "run")
    for tag in ("central_flow/gd_loss", "central_flow/flow_time_averaged_loss", "central_flow/flow_sharpness",
                "central_flow/flow_sigma2", "central_flow/gd_variance_along_u", "central_flow/threshold"):
        assert len(series[tag]) == 251, tag
