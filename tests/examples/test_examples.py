"""The shipped examples run as documented (shortened where they take a config)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd):
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_kuramoto_transition_example_writes_figure_and_events(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(f"num_nodes: 400\ngraph_nodes: 200\ncouplings: [0.5, 3.0]\nt_end: 40.0\nout_dir: {tmp_path / 'run'}\n")
    out = _run([str(ROOT / "examples/kuramoto_transition.py"), "--config", str(config)], tmp_path)
    assert (tmp_path / "run" / "transition.png").stat().st_size > 10_000
    assert list((tmp_path / "run").glob("**/events.out.tfevents.*"))
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0.50", "3.00"))]
    assert float(rows[1][1]) > 0.7 and float(rows[0][1]) < 0.1  # synchronised above K_c = 1, not below


def test_kuramoto_example_rejects_unknown_config_keys(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("nodes: 10\n")
    done = subprocess.run([sys.executable, str(ROOT / "examples/kuramoto_transition.py"), "--config", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown keys" in done.stderr


@pytest.mark.slow
def test_firing_rate_example_follows_the_pitchfork(tmp_path):
    out = _run([str(ROOT / "examples/firing_rate_graph.py")], tmp_path)
    rows = {float(r[0]): (float(r[1]), float(r[2])) for r in (line.split() for line in out.splitlines())
            if len(r) == 3 and r[0].replace(".", "").isdigit()}
    assert rows[1.5] == (0.0, 0.0)
    assert abs(rows[4.0][0] - rows[4.0][1]) < 0.02


@pytest.mark.slow
def test_curvature_example_prints_top_eigenvalues(tmp_path):
    out = _run([str(ROOT / "examples/digits_curvature.py"), "--steps", "100"], tmp_path)
    assert "top eigenvalues" in out and "step  100" in out
