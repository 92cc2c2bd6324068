"""LightningCLI with several callbacks in YAML (nested ``hessian:`` settings, an optimizer index, an
action) and a learning-rate scheduler from the config: ``configs/several_callbacks.yaml`` as a user
runs it, through the real entry point, its event files read back."""

from __future__ import annotations

import pytest

from lightning_dyn.report import read_scalars
from tests.helpers import fit_config_and_report


@pytest.mark.slow
def test_several_callbacks_from_yaml_with_a_scheduler(tmp_path):
    run_dir, report = fit_config_and_report("several_callbacks", tmp_path, "--trainer.max_steps", "40",
                                            "--lr_scheduler.init_args.T_max", "4")
    scalars = read_scalars(run_dir)
    # every callback wrote its own tags, at its own cadence
    assert [s for s, _ in scalars["dyn/eos_sharpness"]] == [20, 40]
    assert [s for s, _ in scalars["dyn/lr_factor"]] == [20, 40]
    assert all(0 < v <= 1 for _, v in scalars["dyn/lr_factor"])
    assert [s for s, _ in scalars["dyn/sharpness"]] == [40]  # every 100 steps, and at fit end
    assert "dyn/eig_1" in scalars and "dyn/hessian_trace" in scalars
    assert [s for s, _ in scalars["dyn/grad_norm_preclip"]] == [20, 40]
    # the cosine schedule (stepped each epoch of 10 steps) reached 0 at step 40: no threshold there, and no failure reported
    assert [s for s, _ in scalars["dyn/stability_threshold"]] == [20]
    assert "not finite" not in report
    assert "EdgeOfStability" in report
