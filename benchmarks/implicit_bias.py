"""Where λ_max and SGD's batch sharpness settle against 2/η, over learning rates and batch sizes.

    python benchmarks/implicit_bias.py [--steps 6000 --seeds 2 --out benchmarks/results_implicit_bias_cpu.json]

Tanh MLP 64-64-64-10 with squared loss on 1000 sklearn digits, trained by real Lightning Trainers
with ``EdgeOfStability(batch_sharpness=32)``: full-batch GD over η ∈ {0.2, 0.4, 0.8, 1.2}, and SGD
at η = 0.8 over batch sizes {16, 32, 64, 128, 1000}. For each run it prints λ_max and the batch
sharpness averaged over the last quarter of training, as fractions of 2/η, and checks the
callback's last values against an independent computation at the final parameters: λ_max by scipy
``eigsh`` on float64 Hessian-vector products, the batch sharpness by ``torch.func`` over 400 fresh
mini-batches. Writes the numbers (``--out``) and the implicit-bias figure (``--figure``): final
sharpness against η for GD and against the batch size for SGD, with the thresholds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call, grad, jvp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn import EdgeOfStability, HessianSettings  # noqa: E402
from lightning_dyn.data import DigitsDataModule, digits_tensors  # noqa: E402
from lightning_dyn.models import SquaredLossMLP  # noqa: E402

WIDTHS = (64, 64, 64, 10)
N = 1000
GD_RATES = (0.2, 0.4, 0.8, 1.2)
SGD_RATE = 0.8
BATCH_SIZES = (16, 32, 64, 128, N)


def independent(model: SquaredLossMLP, batch_size: int, draws: int, seed: int) -> tuple[float, float]:
    """λ_max (scipy eigsh, float64) and the batch sharpness (torch.func, ``draws`` batches)."""
    net = model.net.double()
    x, y = (t.double() for t in digits_tensors(N))
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(w, xb, yb):
        params = {n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes)}
        return 0.5 * ((functional_call(net, params, (xb,)) - yb) ** 2).sum(1).mean()

    g = grad(loss)

    def hvp(v, xb, yb):
        return jvp(lambda u: g(u, xb, yb), (w,), (v,))[1]

    op = LinearOperator((w.numel(),) * 2, dtype=np.float64,
                        matvec=lambda v: hvp(torch.from_numpy(np.asarray(v).ravel()), x, y).numpy())
    lam = float(eigsh(op, k=1, which="LA", tol=1e-10)[0][0])
    generator = torch.Generator().manual_seed(10_000 + seed)
    ratios = []
    for _ in range(1 if batch_size >= N else draws):
        idx = torch.randperm(N, generator=generator)[:batch_size]
        gb = g(w, x[idx], y[idx])
        ratios.append(float(gb @ hvp(gb, x[idx], y[idx]) / (gb @ gb)))
    model.net.float()
    return lam, float(np.mean(ratios))


def run(lr: float, batch_size: int, steps: int, seed: int) -> dict:
    full = batch_size >= N
    model = SquaredLossMLP(widths=WIDTHS, lr=lr, seed=seed)
    data = DigitsDataModule(n=N, batch_size=None if full else batch_size, shuffle=not full)
    eos = EdgeOfStability(every_n_steps=max(steps // 24, 1), batch_sharpness=32, seed=seed,
                          hessian=HessianSettings(probe_size=N, tol=1e-4))
    torch.manual_seed(seed)
    trainer = pl.Trainer(max_steps=steps, callbacks=[eos], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    threshold = 2.0 / lr
    history = [h for h in eos.history if "dyn/batch_sharpness" in h]
    diverged = not history or not all(math.isfinite(h["dyn/eos_sharpness"]) for h in history) or \
        not math.isfinite(float(trainer.callback_metrics.get("train_loss", float("nan"))))
    row = {"lr": lr, "batch_size": batch_size, "seed": seed, "threshold": threshold, "seconds": seconds,
           "diverged": diverged}
    if diverged:
        return row
    tail = [h for h in history if h["step"] >= 0.75 * steps]
    lam, bs = (statistics.mean(h[t] for h in tail) for t in ("dyn/eos_sharpness", "dyn/batch_sharpness"))
    last = history[-1]
    lam_ref, bs_ref = independent(model, batch_size, 400, seed)
    row.update({"sharpness": lam, "batch_sharpness": bs, "sharpness_fraction": lam / threshold,
                "batch_sharpness_fraction": bs / threshold, "regime": eos.regime_changes[-1]["regime"],
                "last_sharpness": last["dyn/eos_sharpness"], "reference_sharpness": lam_ref,
                "last_batch_sharpness": last["dyn/batch_sharpness"],
                "last_batch_sharpness_stderr": last["dyn/batch_sharpness_stderr"], "reference_batch_sharpness": bs_ref})
    return row


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ok = [r for r in rows if not r["diverged"]]
    gd = sorted({r["lr"] for r in ok if r["batch_size"] >= N})
    mean = lambda rs, key: float(np.mean([r[key] for r in rs]))  # noqa: E731
    left.plot(gd, [mean([r for r in ok if r["lr"] == lr and r["batch_size"] >= N], "sharpness") for lr in gd],
              "o-", label="λ_max at the end (GD)")
    grid = np.linspace(min(gd) * 0.9, max(gd) * 1.1, 100)
    left.plot(grid, 2 / grid, "k--", label="2/η")
    left.set(xlabel="learning rate η", ylabel="curvature", title="full-batch GD: larger steps end flatter",
             yscale="log")
    left.legend()
    sizes = sorted({r["batch_size"] for r in ok if r["lr"] == SGD_RATE})
    for key, label in (("sharpness", "λ_max"), ("batch_sharpness", "batch sharpness")):
        right.plot(sizes, [mean([r for r in ok if r["lr"] == SGD_RATE and r["batch_size"] == b], key) for b in sizes],
                   "o-", label=f"{label} at the end")
    right.axhline(2 / SGD_RATE, color="k", ls="--", label="2/η")
    right.set(xscale="log", xlabel="batch size", ylabel="curvature",
              title=f"SGD at η = {SGD_RATE}: smaller batches end flatter")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    runs = [(lr, N) for lr in GD_RATES] + [(SGD_RATE, b) for b in BATCH_SIZES if b < N]
    rows = []
    print(f"{'η':>5} {'B':>5} {'seed':>4} {'2/η':>6} {'λ_max':>7} {'λ/(2/η)':>8} {'BS':>7} {'BS/(2/η)':>9} "
          f"{'regime':>22}  check: λ last/ref, BS last ± se / ref")
    for lr, b in runs:
        for seed in range(args.seeds):
            r = run(lr, b, args.steps, seed)
            rows.append(r)
            if r["diverged"]:
                print(f"{lr:5.2f} {b:5d} {seed:4d} {r['threshold']:6.2f}  diverged")
                continue
            print(f"{lr:5.2f} {b:5d} {seed:4d} {r['threshold']:6.2f} {r['sharpness']:7.3f} "
                  f"{r['sharpness_fraction']:8.3f} {r['batch_sharpness']:7.3f} {r['batch_sharpness_fraction']:9.3f} "
                  f"{r['regime']:>22}  {r['last_sharpness']:.4f}/{r['reference_sharpness']:.4f}, "
                  f"{r['last_batch_sharpness']:.3f} ± {r['last_batch_sharpness_stderr']:.3f} / "
                  f"{r['reference_batch_sharpness']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    if args.figure:
        figure(rows, args.figure)


if __name__ == "__main__":
    main()
