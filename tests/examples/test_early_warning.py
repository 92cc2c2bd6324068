"""The early-warning example runs as documented and tells the README's story: on the main job the
alarms come tens of steps before each loss spike, and ``action="reduce_lr"`` prevents them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.readme import readme_numbers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


@pytest.mark.slow
def test_example_warns_before_each_spike_and_reduce_lr_prevents_them(tmp_path, monkeypatch):
    import early_warning

    # the example seeds with pl.seed_everything, which exports PL_GLOBAL_SEED: undone after the test,
    # so later tests' DDP workers are not re-seeded by it
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")

    out = early_warning.main(["--root", str(tmp_path)])  # as the README runs it
    none, reduced = out["none"], out["reduce_lr"]
    spikes = readme_numbers("the loss jumps at steps {n} and {n}")
    alarms = readme_numbers("The alarms come at steps {n} (gradient-norm z-score) and {n} (update sharpness / 2/η)")
    leads = readme_numbers("**{n} and {n} steps ahead**")
    assert none["spikes"] == spikes and none["alarms"] == alarms
    assert [none["leads"][s] for s in none["spikes"]] == leads
    assert none["raised_by"] == [["grad_norm_zscore"], ["update_sharpness_ratio"]]
    # the reduction at the first alarm: no spike after it
    (at,) = readme_numbers('With `action="reduce_lr"` the rate is halved at step {n}')
    assert reduced["alarms"][0] == at and reduced["spikes"] == [] and reduced["lr_factor"] == 0.5
    final = readme_numbers("(final loss at step 2400: {n}, against {n} for the run")
    assert [reduced["final_loss"], none["final_loss"]] == pytest.approx(final, abs=5e-5)
