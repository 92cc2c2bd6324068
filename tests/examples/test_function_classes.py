"""The function-classes example and config: the README's side-by-side table, as run."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from lightning_dyn.data.surfaces import CRITICAL_POINTS
from lightning_dyn.function_classes.critical_points import morse_kind
from tests.examples import ROOT, load_example, run_in_parallel
from tests.readme import readme_numbers
NAMES = {"narrow_mlp": "(a) MLP 2–2–2–1", "wide_mlp": "(b) MLP 2–32–1", "ode": "(c) NeuralODE on ℝ²",
         "augmented_ode": "(d) AugmentedNeuralODE on ℝ³"}



@pytest.mark.slow
def test_the_readme_table_row_by_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = load_example("function_classes")
    pairs = [(t, a) for t in CRITICAL_POINTS for a in example.ARCHITECTURES]
    # the example's main() fits these one after another; here two at a time
    results = dict(zip(pairs, run_in_parallel("function_classes", "fit", [(a, t) for t, a in pairs], tmp_path)))
    for (target, architecture), r in results.items():
        name, search = NAMES[architecture], r["search"]
        if architecture in ("narrow_mlp", "ode"):  # the theorem: none possible
            assert r["before"].case == "no_critical_points" and search.count == 0, (target, architecture)
            mse, sup = readme_numbers(f"| {target} | {name} | no critical points | {{n}} | {{n}} | none |")
        else:  # augmented: the target's critical point is learned, with its index, near the origin
            assert r["before"].case == "morse" and search.count == 1, (target, architecture, search.summary())
            (x0, y0), index = CRITICAL_POINTS[target]
            kind = morse_kind(index, 2)
            mse, sup, x, y = readme_numbers(f"| {target} | {name} | Morse | {{n}} | {{n}} | {kind} (index {index}) "
                                            "at ({n}, {n}) |")
            assert int(search.index[0]) == index and not bool(search.degenerate[0])
            assert search.points[0].tolist() == pytest.approx([x, y], abs=1.5e-3)  # printed to 1e-3
            assert math.dist((x, y), (x0, y0)) < 0.05  # the target's critical point, learned
            assert float(search.grad_norm[0]) < 1e-10
        assert r["mse"] == pytest.approx(mse, rel=0.02), (target, architecture)  # printed to 3 digits
        assert r["sup"] == pytest.approx(sup, abs=1.5e-3), (target, architecture)
    # the bound the README states: no critical points on the square ⇒ sup error ≥ ½ on the peak
    assert results[("peak", "narrow_mlp")]["sup"] >= 0.5 and results[("peak", "ode")]["sup"] >= 0.5
    assert results[("peak", "ode")]["mse"] < 2e-3  # while its grid MSE is small: the README's point
    assert len(list((tmp_path / "runs" / "function_classes").rglob("events.out.tfevents.*"))) == 8


def test_the_shipped_config_runs_and_logs_critical_points(tmp_path):
    cmd = [sys.executable, "-m", "lightning_dyn.cli", "fit", "--config", str(ROOT / "configs" / "function_classes.yaml"),
           "--trainer.max_steps", "2", "--trainer.callbacks.init_args.every_n_steps", "1",
           "--trainer.logger.init_args.save_dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CriticalPoints: critical points of the map at step 1" in done.stdout
    from lightning_dyn.report import read_scalars

    series = read_scalars(tmp_path)
    assert [s for s, _ in series["dyn/critical_points"]] == [1, 2] and "dyn/critical_points_index_1" in series
