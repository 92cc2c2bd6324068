"""Curvature engine against PyHessian, hessian-eigenthings and scipy's eigsh, in one run.

    python benchmarks/curvature.py --model mlp                      # CPU: 85k-parameter tanh MLP, digits
    python benchmarks/curvature.py --model resnet18 --device cuda    # GPU: ResNet-18, batch 512, eval mode

Peers come from the ``bench`` extra (``pip install -e .[bench]``); nothing is installed here.
Sections (each prints a table; ``--out`` also writes JSON):

1. cost of one product: gradient vs HVP (double backward, fresh and with the cached first-order
   graph; forward-over-reverse; ``torch.compile`` where it works);
2. cold top eigenvalue: products, relative error against a float64 reference, wall time — ours
   (tol 1e-4) vs PyHessian ``eigenvalues()`` at its defaults, hessian-eigenthings ``lanczos(k=1)``
   at its default and with ``max_iter=10``, scipy ``eigsh`` through host copies (the
   edge-of-stability reference code's way);
3. warm re-measurement along a full-batch GD run at η = 0.1 (the edge-of-stability run), every
   ``--every`` steps, against a float64 reference each time (MLP only);
4. peak memory of one product and of ``top_eigenpairs(k=1)`` (CUDA only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn.curvature import HessianOperator, top_eigenpairs  # noqa: E402

RESULTS: dict = {}


# -- problems -------------------------------------------------------------------------------------
def squared_loss_of_output(out, y):
    return 0.5 * ((out - y) ** 2).sum(dim=1).mean()


def mlp_problem(device):
    from lightning_dyn.data import digits_tensors

    torch.manual_seed(0)
    x, y = digits_tensors(1000)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    return model.to(device), (x.to(device), y.to(device)), squared_loss_of_output


def resnet_problem(device):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (512,), generator=g).to(device)
    return model, (x, y), F.cross_entropy


def pretrain(model, batch, criterion, steps, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        criterion(model(batch[0]), batch[1]).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None


# -- timing -----------------------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    """Median wall time of ``fn`` (after one warm-up call) and its last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def table(title, header, rows):
    print(f"\n## {title}")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


# -- 1. product cost ------------------------------------------------------------------------------
def product_cost(model, batch, criterion, device, repeats):
    loss_fn = lambda m, b: criterion(m(b[0]), b[1])  # noqa: E731
    params = [p for p in model.parameters()]

    def gradient():
        return torch.autograd.grad(loss_fn(model, batch), params)

    v = torch.randn(sum(p.numel() for p in params), device=device)
    fresh = lambda: HessianOperator(model, loss_fn, [batch], cache_graph=False) @ v  # noqa: E731
    cached_op = HessianOperator(model, loss_fn, [batch], cache_graph=True)
    cached = lambda: cached_op @ v  # noqa: E731

    def manual_loss(m, b):  # forward-over-reverse needs losses with a forward-AD rule
        out = m(b[0])
        if b[1].dtype == torch.long:
            return F.cross_entropy(out, b[1])
        return squared_loss_of_output(out, b[1])

    for_rev = lambda: HessianOperator(model, manual_loss, [batch], backend="forward_over_reverse") @ v  # noqa: E731
    t_grad, _ = timed(gradient, device, repeats)
    rows, res = [], {"gradient_s": t_grad}
    for name, fn in [("hvp double backward (fresh)", fresh), ("hvp double backward (cached graph)", cached),
                     ("hvp forward-over-reverse", for_rev)]:
        try:
            t, _ = timed(fn, device, repeats)
            rows.append([name, f"{t * 1e3:.2f}", f"{t / t_grad:.2f}x"])
            res[name] = t
        except Exception as err:  # noqa: BLE001 - report, don't die
            rows.append([name, "failed", type(err).__name__])
    try:
        compiled = torch.compile(model)
        t, _ = timed(lambda: HessianOperator(compiled, loss_fn, [batch], cache_graph=False) @ v, device, repeats)
        rows.append(["hvp double backward, torch.compile", f"{t * 1e3:.2f}", f"{t / t_grad:.2f}x"])
        res["compile"] = t
    except Exception as err:  # noqa: BLE001
        msg = str(err).strip().splitlines()[0][:80] if str(err).strip() else type(err).__name__
        rows.append(["hvp double backward, torch.compile", "failed", msg])
        res["compile"] = msg
    table("1. cost of one product (median ms; ratio to one gradient)",
          ["", "ms", "x gradient"], [["gradient (forward + backward)", f"{t_grad * 1e3:.2f}", "1.00x"]] + rows)
    RESULTS["product_cost"] = res


# -- 2. cold top eigenvalue -----------------------------------------------------------------------
def reference_top(model, batch, criterion):
    loss_fn = lambda m, b: criterion(m(b[0]), b[1])  # noqa: E731
    op = HessianOperator(model, loss_fn, [batch], dtype=torch.float64)
    res = top_eigenpairs(op, k=2, tol=1e-10, max_matvecs=300)
    return float(res.values[0]), float(res.values[1])


class Counter:
    def __init__(self):
        self.n = 0


def ours_cold(model, batch, criterion, tol):
    loss_fn = lambda m, b: criterion(m(b[0]), b[1])  # noqa: E731
    res = top_eigenpairs(HessianOperator(model, loss_fn, [batch]), tol=tol)
    return float(res.values[0]), res.num_matvecs


def pyhessian_default(model, batch, criterion, device, tol=1e-3):
    import pyhessian  # noqa: F401  (its __init__ shadows the module name with the class)

    ph = sys.modules["pyhessian.hessian"]

    counter = Counter()
    original = ph.hessian_vector_product

    def counting(*a, **k):
        counter.n += 1
        return original(*a, **k)

    ph.hessian_vector_product = counting
    try:
        was_training = model.training
        h = ph.hessian(model, criterion, data=batch, cuda=device.type == "cuda")
        values, _ = h.eigenvalues() if tol == 1e-3 else h.eigenvalues(maxIter=1000, tol=tol)
        model.train(was_training)
    finally:
        ph.hessian_vector_product = original
        for p in model.parameters():
            p.grad = None
    return float(values[0]), counter.n


def eigenthings(model, batch, criterion, max_iter):
    import hessian_eigenthings as he

    op = he.HessianOperator(model, [batch], lambda m, b: criterion(m(b[0]), b[1]))
    counter = Counter()
    matvec = op.matvec

    def counting(v):
        counter.n += 1
        return matvec(v)

    op.matvec = counting
    res = he.lanczos(op, k=1, max_iter=max_iter, which="LA", seed=0) if max_iter else he.lanczos(op, k=1, seed=0)
    return float(res.eigenvalues[0]), counter.n


def scipy_eigsh(model, batch, criterion):
    from scipy.sparse.linalg import LinearOperator, eigsh

    loss_fn = lambda m, b: criterion(m(b[0]), b[1])  # noqa: E731
    op = HessianOperator(model, loss_fn, [batch])

    def matvec(v):  # host -> device -> host every product, as the EoS reference code does
        return (op @ torch.as_tensor(np.asarray(v, dtype=np.float32).ravel(), device=op.device)).cpu().numpy()

    values = eigsh(LinearOperator((op.size, op.size), matvec=matvec, dtype=np.float32), k=1, which="LA")[0]
    return float(values[0]), op.num_matvecs


def cold_eigen(model, batch, criterion, device, repeats):
    ref, second = reference_top(model, batch, criterion)
    print(f"\nreference top eigenvalues (float64, tol 1e-10): {ref:.8g}, {second:.8g}")
    methods = [
        ("lightning_dyn top_eigenpairs(tol=1e-4)", lambda: ours_cold(model, batch, criterion, 1e-4)),
        ("lightning_dyn top_eigenpairs(tol=1e-3)", lambda: ours_cold(model, batch, criterion, 1e-3)),
        ("PyHessian eigenvalues() defaults", lambda: pyhessian_default(model, batch, criterion, device)),
        ("PyHessian eigenvalues(tol=1e-6), equal accuracy", lambda: pyhessian_default(model, batch, criterion, device, 1e-6)),
        ("hessian-eigenthings lanczos(k=1) default", lambda: eigenthings(model, batch, criterion, None)),
        ("hessian-eigenthings lanczos(k=1, max_iter=10)", lambda: eigenthings(model, batch, criterion, 10)),
        ("scipy eigsh via host copies", lambda: scipy_eigsh(model, batch, criterion)),
    ]
    rows, res = [], {"reference": ref}
    for name, fn in methods:
        try:
            t, (value, hvps) = timed(fn, device, repeats)
        except Exception as err:  # noqa: BLE001 - a missing peer is reported, not fatal
            rows.append([name, "-", "-", "-", f"{type(err).__name__}: {str(err)[:60]}"])
            continue
        res[name] = {"seconds": t, "hvps": hvps, "rel_error": abs(value - ref) / abs(ref), "value": value}
        rows.append([name, hvps, f"{abs(value - ref) / abs(ref):.1e}", f"{t:.3f}", ""])
    base = res.get("PyHessian eigenvalues() defaults", {}).get("seconds")
    for row in rows:
        entry = res.get(row[0])
        row[4] = row[4] or (f"{entry['seconds'] / base:.2f}x PyHessian" if base and entry else "")
    table("2. cold top eigenvalue", ["method", "HVPs", "rel. error", "seconds", "time ratio"], rows)
    RESULTS["cold"] = res


# -- 3. warm re-measurement along the edge-of-stability run ----------------------------------------
def warm_along_eos(model, batch, criterion, steps, every, lr):
    loss_fn = lambda m, b: criterion(m(b[0]), b[1])  # noqa: E731
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    previous, warm_hvps, cold_hvps, errors, log = None, [], [], [], []
    for step in range(steps + 1):
        if step % every == 0:
            ref, second = reference_top(model, batch, criterion)
            op = HessianOperator(model, loss_fn, [batch])
            warm = top_eigenpairs(op, tol=1e-3, init=previous)
            cold = top_eigenpairs(HessianOperator(model, loss_fn, [batch]), tol=1e-3)
            if previous is not None:
                warm_hvps.append(warm.num_matvecs)
                cold_hvps.append(cold.num_matvecs)
                errors.append(abs(float(warm.values[0]) - ref) / ref)
            log.append({"step": step, "ref": ref, "second": second, "warm": float(warm.values[0]),
                        "warm_hvps": warm.num_matvecs, "cold_hvps": cold.num_matvecs})
            previous = warm
        if step < steps:
            opt.zero_grad()
            criterion(model(batch[0]), batch[1]).backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    crossings = sum(1 for a, b in zip(log, log[1:]) if abs(a["ref"] - a["second"]) < 0.05 * a["ref"])
    misses = sum(e > 1e-3 for e in errors)
    table(f"3. warm re-measurement every {every} steps along GD at eta={lr} ({steps} steps, tol 1e-3)",
          ["", "value"],
          [["sharpness at start / end (2/eta = %g)" % (2 / lr), f"{log[0]['ref']:.3f} / {log[-1]['ref']:.3f}"],
           ["measurements", len(warm_hvps)],
           ["median HVPs warm", statistics.median(warm_hvps)],
           ["median HVPs cold", statistics.median(cold_hvps)],
           ["max rel. error warm vs float64 reference", f"{max(errors):.1e}"],
           ["measurements off by > 1e-3 (missed top eigenvalue)", misses],
           ["measurements with top two within 5%", crossings]])
    RESULTS["warm"] = {"median_warm_hvps": statistics.median(warm_hvps), "median_cold_hvps": statistics.median(cold_hvps),
                       "max_rel_error": max(errors), "misses": misses, "series": log}


# -- 4. memory --------------------------------------------------------------------------------------
def memory(model, batch, criterion, device):
    if device.type != "cuda":
        return
    loss_fn = lambda m, b: criterion(m(b[0]), b[1])  # noqa: E731
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    op = HessianOperator(model, loss_fn, [batch])
    _ = op @ torch.randn(op.size, device=device)
    del _
    hvp_peak = torch.cuda.max_memory_allocated() - base
    del op
    torch.cuda.reset_peak_memory_stats()
    op = HessianOperator(model, loss_fn, [batch])
    res = top_eigenpairs(op, tol=1e-4)
    eig_peak = torch.cuda.max_memory_allocated() - base
    basis = (res.num_matvecs + 1) * op.size * 4
    table("4. peak GPU memory (MiB above the model and data)", ["", "MiB"],
          [["one HVP", f"{hvp_peak / 2**20:.0f}"], ["top_eigenpairs(k=1, tol=1e-4)", f"{eig_peak / 2**20:.0f}"],
           ["Lanczos basis (%d vectors)" % (res.num_matvecs + 1), f"{basis / 2**20:.0f}"],
           ["one HVP + basis", f"{(hvp_peak + basis) / 2**20:.0f}"]])
    RESULTS["memory"] = {"hvp_peak": hvp_peak, "eig_peak": eig_peak, "basis": basis}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "resnet18"], default="mlp")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain", type=int, default=300, help="GD steps before the cold comparison (MLP)")
    parser.add_argument("--eos-steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cost", "cold", "warm", "memory"])
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 convolutions/matmuls (off: float32 means float32, so errors are the solvers')")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.set_num_threads(torch.get_num_threads())
    make = mlp_problem if args.model == "mlp" else resnet_problem
    model, batch, criterion = make(device)
    print(f"{args.model}: {sum(p.numel() for p in model.parameters())} parameters on {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"torch {torch.__version__}, TF32 {'on' if args.tf32 else 'off'}")
    if args.model == "mlp" and args.pretrain:
        pretrain(model, batch, criterion, args.pretrain)
    if "cost" not in args.skip:
        product_cost(model, batch, criterion, device, args.repeats)
    if "cold" not in args.skip:
        cold_eigen(model, batch, criterion, device, args.repeats)
    if "memory" not in args.skip:
        memory(model, batch, criterion, device)
    if "warm" not in args.skip and args.model == "mlp":
        fresh, batch, criterion = make(device)
        warm_along_eos(fresh, batch, criterion, args.eos_steps, args.every, lr=0.1)
    if args.out:
        args.out.write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
