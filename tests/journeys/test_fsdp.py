"""Sharded training: FSDP2 under Lightning's ``ModelParallelStrategy`` on 2 CPU processes (gloo)
(``tests/journeys/fsdp_run.py``), compared with single-process float64 references on the same
global probe set at the same (gathered) parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_dyn.curvature.probe import draw_probe_set
from tests.journeys.common import reference_top_eigenvalue

pytest.importorskip("transformers")
from tests.journeys.fsdp_run import EVERY, PROBE, STEPS, problem  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _run(name: str, out: Path, *extra: str) -> tuple[list[dict], dict]:
    out.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "tests.journeys.fsdp_run", name, str(out), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], torch.load(out / "final.pt")


def _unsharded(name: str, final: dict):
    """The same module on one process, with the run's final parameters; the global probe set."""
    module, data, loss_fn = problem(name)
    missing, unexpected = module.load_state_dict(final["params"], strict=False)
    assert not unexpected and all(n in dict(module.named_parameters(remove_duplicate=False)) for n in missing)
    probe = draw_probe_set(DataLoader(data, batch_size=8), PROBE, device=torch.device("cpu")).batches
    return module, probe, loss_fn


def _adam_scale(module, final: dict, lr: float = 3e-3, betas=(0.9, 0.999), eps=1e-8) -> torch.Tensor:
    """``P^{-1/2}`` of AdamW at the final step, written out (coordinates Adam never moved: 0)."""
    pieces = []
    for name, p in module.named_parameters():
        state = final["state"][name]
        t, v = float(state["step"]), state["exp_avg_sq"].double().reshape(-1)
        P = (1 - betas[0] ** t) * ((v / (1 - betas[1] ** t)).sqrt() + eps)
        pieces.append(torch.where(v != 0, P.rsqrt(), torch.zeros_like(v)))
    return torch.cat(pieces)


def _same_decisions(ranks: list[dict]) -> None:
    for name in ranks[0]:
        if name != "norms":
            assert ranks[0][name] == ranks[1][name], name


@pytest.mark.slow
def test_sharded_gpt2_measures_the_global_hessian_like_one_process(tmp_path):
    ranks, final = _run("gpt", tmp_path)
    _same_decisions(ranks)
    module, probe, loss_fn = _unsharded("gpt", final)
    last = ranks[0]["sharpness"]["history"][-1]
    assert last["step"] == STEPS and len(ranks[0]["sharpness"]["history"]) == STEPS // EVERY
    want = reference_top_eigenvalue(module, loss_fn, probe)
    assert last["dyn/sharpness"] == pytest.approx(want, rel=1e-4)
    # AdamW: λ_max(P^{-1/2} H P^{-1/2}) in units of the learning rate
    eos = ranks[0]["eos"]["history"][-1]
    want_eos = reference_top_eigenvalue(module, loss_fn, probe, scale=_adam_scale(module, final))
    assert eos["dyn/preconditioned_sharpness"] == pytest.approx(want_eos, rel=1e-4)
    # the monitor's global gradient norm is the norm of the gathered gradient, on both ranks
    norms = {h["step"]: h["dyn/grad_norm_preclip"] for h in ranks[0]["monitor"]["history"]}
    assert len(norms) == STEPS
    for step, value in norms.items():
        assert value == pytest.approx(ranks[0]["norms"][str(step)], rel=1e-5)


@pytest.mark.slow
def test_sharded_mlp_every_monitor_including_the_input_jacobian(tmp_path):
    ranks, final = _run("mlp", tmp_path)
    _same_decisions(ranks)
    module, probe, loss_fn = _unsharded("mlp", final)
    want = reference_top_eigenvalue(module, loss_fn, probe)
    assert ranks[0]["sharpness"]["history"][-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-4)
    # SGD with momentum: the Hessian itself, against (2 + 2β)/η
    eos = ranks[0]["eos"]["history"][-1]
    assert eos["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-4)
    assert eos["dyn/stability_threshold"] == pytest.approx((2 + 2 * 0.9) / 0.05)
    norms = {h["step"]: h["dyn/grad_norm_preclip"] for h in ranks[0]["monitor"]["history"]}
    assert all(value == pytest.approx(ranks[0]["norms"][str(step)], rel=1e-5) for step, value in norms.items())
    # the exact input Jacobians of the gathered model at the 4 probe inputs
    inputs = torch.cat([b[0] for b in draw_probe_set(DataLoader(problem("mlp")[1], batch_size=8), 4,
                                                     device=torch.device("cpu")).batches])
    module.eval()
    with torch.no_grad():
        sigmas = torch.cat([torch.linalg.svdvals(torch.func.jacrev(module)(x)) for x in inputs])
    jacobian = ranks[0]["jacobian"]["history"][-1]
    assert jacobian["dyn/jacobian_sigma_max"] == pytest.approx(float(sigmas.max()), rel=1e-5)
    assert jacobian["dyn/jacobian_msv"] == pytest.approx(float(sigmas.square().mean()), rel=1e-5)
    # the observer did not disturb the observed: the same run without our callbacks ends bitwise alike
    _, bare = _run("mlp", tmp_path / "bare", "bare")
    for name, value in final["params"].items():
        assert torch.equal(value, bare["params"][name]), name


@pytest.mark.parametrize("strategy", ["FSDPStrategy", "DeepSpeedStrategy"])
def test_strategies_we_cannot_read_are_refused_at_setup_with_the_way_out(strategy):
    # both need a GPU (DeepSpeed also its package), so a real Trainer cannot run them here: the
    # refusal is taken by the strategy's class, and this is the object a Trainer would hold
    from types import SimpleNamespace

    import lightning.pytorch.strategies as strategies

    from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSharpness, JacobianSpectrum
    from lightning_dyn import ConfigurationError

    held = getattr(strategies, strategy).__new__(getattr(strategies, strategy))
    for callback in (HessianSharpness(), EdgeOfStability(), GradientExplosionMonitor(), JacobianSpectrum()):
        with pytest.raises(ConfigurationError, match="ModelParallelStrategy with fully_shard"):
            callback.on_train_start(SimpleNamespace(strategy=held), torch.nn.Linear(2, 2))
