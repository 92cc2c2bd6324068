"""The SGD-stability example: interpolation reached, the verdict, and SGD restarted from the
minimum stays below the predicted critical learning rate and is thrown off above it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sgd_stability_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path(__file__).parents[2] / "examples" / "sgd_stability.py"
    spec = importlib.util.spec_from_file_location("sgd_stability", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main()
    r = out["result"]
    assert r.near_interpolation and r.loss < 1e-10
    assert r.stable and r.exponent < -3 * r.stderr
    assert r.lr < r.critical_lr < 2 * r.lr
    (below_moved, below_worst), (above_moved, above_worst) = out["restarts"][0.8], out["restarts"][1.25]
    assert below_moved < 1e-3 and below_worst < 1e-8
    assert above_moved > 0.1 and above_worst > 1e-3
