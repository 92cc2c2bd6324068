"""The gradient-explosion example and config run as documented and tell the documented story."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from tests.helpers import fit_config_and_report
from tests.readme import readme_numbers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


@pytest.mark.slow
def test_example_matches_mean_field_at_initialisation_and_the_guard_skips(tmp_path, monkeypatch):
    import gradient_explosion

    monkeypatch.chdir(tmp_path)  # its TensorBoard runs go under ./runs
    out = gradient_explosion.main(steps=100)  # as the README runs it
    rows = [out["rows"][s] for s in (1.2, 1.760955, 3.0)]
    for row in rows:
        # step 1 is the initialisation: width 256 and standardised digits (not yet at q*) leave the
        # 20-block fit within 0.02 of ½ log χ1 (measured: 0.011, 0.007, 0.008)
        assert row["measured"][1] == pytest.approx(row["predicted"], abs=0.02)
    # the README's numbers, to the digit they are printed to
    first = readme_numbers("at the first step: {n} / {n} / {n} against mean-field {n} / {n} / {n}")
    after = readme_numbers("pull all three to {n} / {n} / {n}.")
    assert [r["measured"][1] for r in rows] == pytest.approx(first[:3], abs=1e-3)
    assert [r["predicted"] for r in rows] == pytest.approx(first[3:], abs=1e-3)
    assert [r["measured"][100] for r in rows] == pytest.approx(after, abs=1e-3)
    (skipped,) = readme_numbers('`action="skip"` drops the {n} steps it reaches')
    skip, log = out["guards"]["skip"], out["guards"]["none"]
    assert skip["finite"] and skip["skips"] == skipped and skip["first_event"]["event"] == "nonfinite_loss"
    assert not log["finite"] and log["skips"] == 0 and log["first_event"]["step"] == skip["first_event"]["step"]
    assert all(math.isfinite(row["msv"]) and row["sigma_max"] > 0 for row in rows)


@pytest.mark.slow
def test_config_skips_the_nan_sample_and_reports(tmp_path):
    run_dir, report = fit_config_and_report("gradient_explosion", tmp_path, "--trainer.max_steps", "20",
                                            "--model.init_args.widths", "[64, 64, 64, 64, 10]")
    assert "step(s) skipped" in report and "backprop Lyapunov exponent" in report and "Jacobian" in report
    assert (run_dir / "dyn_backprop_depth_profile.png").stat().st_size > 5_000
    assert (run_dir / "dyn_jacobian_singular_values.png").stat().st_size > 5_000
