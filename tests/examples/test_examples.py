"""The shipped examples run as documented (shortened where they take a config)."""

import math
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
    rows = {float(r[0]): [float(v) for v in r[1:]] for r in (line.split() for line in out.splitlines())
            if r and r[0] in ("0.50", "3.00")}
    # columns: r all-to-all, its theory √(1 − K_c/K) with K_c = 2γ = 1, r on Erdős–Rényi(½), its theory
    assert rows[3.0][1] == pytest.approx(math.sqrt(1 - 1 / 3.0), abs=1e-4)  # 0.8165
    assert rows[3.0][0] == pytest.approx(rows[3.0][1], abs=0.005)  # N = 400 quantile frequencies: O(1/N)
    assert rows[3.0][3] == pytest.approx(math.sqrt(1 - 1 / 1.5), abs=1e-4)  # K·p = 1.5 against K_c = 1
    assert rows[3.0][2] == pytest.approx(rows[3.0][3], abs=0.03)  # one 200-node graph
    assert rows[0.5][0] < 0.05 and rows[0.5][2] < 0.05  # incoherent below K_c: r = O(N^-½)


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


@pytest.mark.slow
def test_digraph_measures_example_compares_networks_with_their_vlasov_limit(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text("num_nodes: 500\ncouplings_over_kc: [0.5, 2.0]\nt_end: 20.0\nvlasov_points: 32\n"
                      f"vlasov_modes: 16\nring_width: 20\nconvergence_nodes: [200, 800]\nout_dir: {tmp_path / 'run'}\n")
    out = _run([str(ROOT / "examples/digraph_measures.py"), "--config", str(config)], tmp_path)
    assert (tmp_path / "run" / "digraph_measures.png").stat().st_size > 20_000
    assert list((tmp_path / "run").glob("**/events.out.tfevents.*"))
    tables, name = {}, None
    for line in out.splitlines():
        if "K_c = 2D/μ_max" in line:
            name = line.split(":")[0]
            tables[name] = {}
        elif name and line.split() and line.split()[0][0].isdigit():
            values = [float(v) for v in line.split()]
            tables[name][values[1]] = values[2:]
    assert set(tables) == {"all-to-all", "Erdős–Rényi", "power law", "directed ring"}
    assert "K_c = 2D/μ_max = 1.0000" in out  # all-to-all, D = 0.5
    for name, rows in tables.items():
        simulated, limit = rows[2.0][:2]
        assert limit > 0.5 and abs(simulated - limit) < 0.1, name  # synchronised, as its limit says
        assert rows[0.5][0] < 0.15 and rows[0.5][1] < 0.05, name  # incoherent below K_c: r = O(N^-½); the limit decays as e^{σt}
    assert tables["directed ring"][2.0][2] < 0.15  # the same ring under the graphon's 1/N stays incoherent
