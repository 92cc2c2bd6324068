"""Hessian-vector products without double backward, on a GPT-style model: ours against
hessian-eigenthings' finite-difference operator, in one run.

    python benchmarks/finite_difference.py [--layers 8 --width 320 --steps 200 --every 50]
    python benchmarks/finite_difference.py --preset gpt2 --device cuda --precision bf16-mixed   # GPU

A GPT-2 from a ``transformers`` config (default SDPA attention, tied embeddings; 8 layers, width
320, vocabulary 2048: ~10M parameters), 8 sequences of 64 tokens as the probe set, on the CPU.
The peer comes from the ``bench`` extra (``pip install -e .[bench]``); nothing is installed here.
``--preset gpt2`` is GPT-2 small's shape (124M parameters, vocabulary 50257, 12 layers of width
768), for a GPU machine (``benchmarks/gpu_finite_difference.sh``); ``--precision`` is the
``Trainer``'s in the overhead section (with ``bf16-mixed`` training attention runs the flash kernel).

1. cost of one product relative to one gradient: double backward (our engine, attention on the math
   kernel), central differences (ours, order 2 and 4), hessian-eigenthings' central differences;
2. the top eigenvalue, cold, tol 1e-4: products, relative error against float64 double backward,
   wall time — ours (double backward, differences) and hessian-eigenthings' ``lanczos(k=1)`` on its
   finite-difference operator;
3. the overhead of ``EdgeOfStability(every_n_steps=50)`` on a real ``Trainer.fit`` of the same model
   (AdamW) against the same fit without it: with its defaults (the probe set one training batch),
   with ``max_overhead=0.05``, and its per-step update sharpness alone; ``--backend auto`` leaves
   the backend to the setup check (default here: ``finite_difference``, as the rows in RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn import EdgeOfStability, HessianSettings  # noqa: E402
from lightning_dyn.curvature import HessianOperator, top_eigenpairs  # noqa: E402

VOCAB, LENGTH = 2048, 64


def gpt(layers: int, width: int, vocab: int = VOCAB, heads: int = 8):
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=LENGTH, n_embd=width, n_layer=layers, n_head=heads,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def lm_loss(model, batch):
    return model(input_ids=batch[0], labels=batch[0]).loss


def tokens(n: int, seed: int, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    start, stride = torch.randint(0, vocab, (n, 1), generator=g), torch.randint(1, 9, (n, 1), generator=g)
    return (start + stride * torch.arange(LENGTH)) % vocab


def timed(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def section_products(model, batch) -> None:
    params = [p for p in model.parameters()]
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0)).to(params[0].device)
    v /= v.norm()

    def gradient():
        torch.autograd.grad(lm_loss(model, batch), params)

    rows = [("one gradient", gradient)]
    for name, backend, order in (("double backward (ours, math attention)", "double_backward", 2),
                                 ("central differences, order 2 (ours)", "finite_difference", 2),
                                 ("central differences, order 4 (ours)", "finite_difference", 4)):
        op = HessianOperator(model, lm_loss, [batch], backend=backend, difference_order=order, cache_graph=False)
        rows.append((name, lambda op=op: op.matvec(v)))
    try:
        import hessian_eigenthings as he

        theirs = he.HessianOperator(model, [batch], lambda m, b: lm_loss(m, b), method="finite_difference")
        rows.append(("central differences (hessian-eigenthings)", lambda: theirs.matvec(v)))
    except ImportError:
        print("(hessian-eigenthings not installed: its row is left out)")
    base = None
    print("\n## cost of one product (median of 3, after one warm-up)")
    for name, fn in rows:
        seconds = timed(fn)
        base = base or seconds
        print(f"{name:45s} {seconds:7.3f} s   {seconds / base:5.2f}× a gradient")


def section_eigenvalue(model, batch) -> None:

    start = time.perf_counter()
    reference = float(top_eigenpairs(HessianOperator(model, lm_loss, [batch], dtype=torch.float64), tol=1e-9,
                                     max_matvecs=300).values[0])
    print(f"\n## top eigenvalue, cold (float64 double-backward reference {reference:.6f}, {time.perf_counter() - start:.0f} s)")
    budgets = []
    for tol in (1e-4, 1e-6):
        for name, backend in (("double backward", "double_backward"), ("central differences", "finite_difference")):
            op = HessianOperator(model, lm_loss, [batch], backend=backend)
            start = time.perf_counter()
            result = top_eigenpairs(op, tol=tol, max_matvecs=200)
            value = float(result.values[0])
            budgets.append(result.num_matvecs)
            print(f"{'ours, ' + name + f', tol {tol:g}':52s} {value:.6f}  rel.error "
                  f"{abs(value - reference) / reference:.1e}  {result.num_matvecs:3d} products  "
                  f"{time.perf_counter() - start:6.1f} s  (bound {float(result.error_bounds[0]) / value:.1e}, "
                  f"converged {result.converged})")
    # hessian-eigenthings' lanczos runs a fixed number of steps (default 2k = 2): the same budget as
    # ours, and a generous one
    try:
        import hessian_eigenthings as he
    except ImportError:
        return
    theirs = he.HessianOperator(model, [batch], lambda m, b: lm_loss(m, b), method="finite_difference")
    for steps in sorted({2, budgets[1], budgets[3]}):
        start = time.perf_counter()
        result = he.lanczos(theirs, k=1, max_iter=steps, which="LA", seed=0)
        value = float(result.eigenvalues[0])
        print(f"{'hessian-eigenthings, central differences, ' + str(steps) + ' steps':52s} {value:.6f}  rel.error "
              f"{abs(value - reference) / reference:.1e}  {result.iterations:3d} products  "
              f"{time.perf_counter() - start:6.1f} s")


class LanguageModel(pl.LightningModule):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        return lm_loss(self.model, batch)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-4)


def section_overhead(args) -> None:
    """EdgeOfStability(every_n_steps=50) as a user attaches it — defaults, so a probe set of one
    training batch — against the same fit without it; with ``max_overhead=0.05``; and the per-step
    update sharpness alone (no measurement in the loop). Also how close the per-step update sharpness
    runs to the measured (preconditioned) sharpness at the measured steps."""
    import tempfile

    from lightning.pytorch.loggers import CSVLogger

    def run(callbacks, logger=False):
        module = LanguageModel(gpt(args.layers, args.width, args.vocab, args.heads))
        loader = DataLoader(TensorDataset(tokens(512, 1, args.vocab)), batch_size=8, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        trainer = pl.Trainer(max_steps=args.steps, callbacks=callbacks, logger=logger, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10**9,
                             accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                             precision=args.precision)
        synchronize()
        start = time.perf_counter()
        trainer.fit(module, loader)
        synchronize()
        return time.perf_counter() - start

    backend = None if args.backend == "auto" else args.backend
    settings = HessianSettings() if backend is None else HessianSettings(backend=backend)
    plain = run([])
    print(f"\n## EdgeOfStability(every_n_steps={args.every}) on a {args.steps}-step fit ({args.precision}; AdamW; "
          f"batches of 8 × {LENGTH} tokens; backend {args.backend})")
    print(f"{'without callback':52s} {plain:7.1f} s")
    logs = tempfile.mkdtemp()
    for name, kwargs in (("defaults (probe: one training batch)", {}),
                         ("max_overhead=0.05", {"max_overhead": 0.05})):
        eos = EdgeOfStability(every_n_steps=args.every, hessian=settings, **kwargs)
        logger = CSVLogger(logs, name=name.split()[0].replace("=", "_"))
        seconds = run([eos], logger)
        print(f"{'with it, ' + name:52s} {seconds:7.1f} s   overhead {(seconds - plain) / plain:6.1%}   "
              f"{len(eos.history)} measurements at {[h['step'] for h in eos.history]}, products "
              f"{[h['hvps'] for h in eos.history]} ({eos.product_backend}), {eos.total_seconds:.1f} s in the callback")
        if not kwargs:
            import csv

            rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
            per_step = {int(r["step"]): float(r["dyn/update_sharpness"]) for r in rows if r.get("dyn/update_sharpness")}
            tag = eos.sharpness_tag
            pairs = [(per_step[h["step"]], h[tag]) for h in eos.history if h["step"] in per_step and tag in h]
            print(f"{'':52s} update sharpness / {tag} at the measured steps: "
                  f"{', '.join(f'{u / v:.3f}' for u, v in pairs)}")
    signal = EdgeOfStability(every_n_steps=10**9, hessian=settings, at_fit_end=False)
    seconds = run([signal])
    print(f"{'per-step update sharpness alone':52s} {seconds:7.1f} s   overhead {(seconds - plain) / plain:6.1%}   "
          f"({signal.total_seconds:.2f} s in the callback, setup's one product included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--sections", default="products,eigenvalue,overhead")
    parser.add_argument("--preset", choices=["small", "gpt2"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true", help="the Trainer's precision in the overhead section")
    parser.add_argument("--backend", default="finite_difference", help="EdgeOfStability's backend (overhead)")
    args = parser.parse_args()
    args.vocab, args.heads = VOCAB, 8
    if args.preset == "gpt2":
        args.layers, args.width, args.vocab, args.heads = 12, 768, 50257, 12
    model = gpt(args.layers, args.width, args.vocab, args.heads).to(args.device).eval()
    print(f"GPT-2 from a config: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"probe set 8 × {LENGTH} tokens, {args.device}, {torch.get_num_threads()} CPU threads")
    batch = (tokens(8, 0, args.vocab).to(args.device),)
    sections = args.sections.split(",")
    if "products" in sections:
        section_products(model, batch)
    if "eigenvalue" in sections:
        section_eigenvalue(model, batch)
    if "overhead" in sections:
        section_overhead(args)


if __name__ == "__main__":
    main()
