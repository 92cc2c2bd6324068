"""DDP with 2 CPU processes (gloo), ``ddp`` and ``ddp_spawn``: a real learning rate, BatchNorm,
different data per rank, a NaN loss on one rank only — every callback attached
(``tests/journeys/ddp_run.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_dyn.curvature import BatchSharpnessSampler, batch_sharpness
from lightning_dyn.curvature.probe import draw_minibatches, draw_probe_set
from tests.journeys.common import reference_top_eigenvalue
from tests.journeys.ddp_run import NAN_STEP, BatchNormClassifier, cross_entropy, dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_ranks_agree_skip_together_and_measure_the_global_probe_set(strategy, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.journeys.ddp_run", strategy, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # the same measurements and decisions on both ranks, the same parameters after the skip
    for name in ("sharpness", "eos", "jacobian", "lyapunov"):
        assert ranks[0][name] == ranks[1][name], name
    assert ranks[0]["params"] == ranks[1]["params"]
    # the monitor's events are what each rank saw (rank 1 its NaN loss, both the NaN global gradient);
    # the decision is one: both skip step 5, and both log the same global gradient norms
    for rank in ranks:
        assert [e["step"] for e in rank["monitor"]["events"] if e["event"] == "skipped"] == [NAN_STEP]
    assert [e["event"] for e in ranks[1]["monitor"]["events"]][0] == "nonfinite_loss"
    norms = [[(h["step"], h["dyn/grad_norm_preclip"]) for h in rank["monitor"]["history"]] for rank in ranks]
    assert norms[0] == norms[1] and len(norms[0]) == 4
    # each rank held half of the global probe set (64 samples); together, the set one process draws
    assert ranks[0]["probe"] != ranks[1]["probe"]
    model = BatchNormClassifier()
    model.load_state_dict(torch.load(tmp_path / "final.pt"))
    whole = draw_probe_set(_Loader(), 64, device=torch.device("cpu")).batches
    assert sum(ranks[0]["probe"]) + sum(ranks[1]["probe"]) == pytest.approx(sum(float(b[0].sum()) for b in whole))
    want = reference_top_eigenvalue(model, cross_entropy, whole)
    assert ranks[0]["sharpness"]["history"][-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-5)
    # the batch sharpness is over mini-batches of the global batch (2 × 16), split over the ranks and
    # all-reduced: one process drawing the same batches from the same private generator gets it
    measured = [h for h in ranks[0]["eos"]["history"] if "dyn/batch_sharpness" in h]
    assert measured
    sampler = BatchSharpnessSampler(4, seed=0)
    for _ in measured:
        batches = draw_minibatches(_Loader(), 4, generator=sampler.generator, device=torch.device("cpu"), size=32)
    assert all(len(b[0]) == 32 for b in batches)
    alone = batch_sharpness(model, cross_entropy, batches, distributed=False)
    assert measured[-1]["dyn/batch_sharpness"] == pytest.approx(alone.value, rel=1e-5)


class _Loader:
    """The loader one process would have (a map-style dataset, the default collate, batch 16)."""

    def __init__(self) -> None:
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset(), batch_size=16)
        self.dataset, self.collate_fn, self.batch_size = loader.dataset, loader.collate_fn, 16
