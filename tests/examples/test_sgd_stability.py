"""The SGD-stability example: interpolation reached, the verdict, and SGD restarted from the
minimum stays below the predicted critical learning rate and is thrown off above it."""

from __future__ import annotations

import pytest

from tests.examples import load_example
from tests.readme import readme_numbers


@pytest.mark.slow
def test_sgd_stability_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = load_example("sgd_stability").main()
    r = out["result"]
    (below_moved, below_worst), (above_moved, above_worst) = out["restarts"][0.8], out["restarts"][1.25]
    # the README's numbers, each within one unit of the digit it is printed to
    (loss,) = readme_numbers("to interpolation (loss {n})")
    exponent, stderr = readme_numbers("finds λ = {n} ± {n} (stable)")
    (critical,) = readme_numbers("stable, with η_c = {n};")
    moved, below_bound = readme_numbers("stays (moves {n}, loss ≤ {n})")
    (above_loss,) = readme_numbers("thrown off (loss {n})")
    assert r.near_interpolation and loss / 10 < r.loss < loss * 10
    assert r.exponent == pytest.approx(exponent, abs=1e-4) and r.stderr == pytest.approx(stderr, abs=1e-4)
    assert r.stable and r.exponent < -3 * r.stderr and not r.mean_square_stable
    assert r.critical_lr == pytest.approx(critical, abs=1e-4)
    assert below_moved == pytest.approx(moved, abs=0.1e-4) and below_worst <= below_bound
    assert above_worst == pytest.approx(above_loss, abs=0.01) and above_moved > 0.1
