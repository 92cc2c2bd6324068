"""Is a callback's logged cost what it costs? The slowdown of a fit against the totals it logs.

    python benchmarks/cost_accounting.py [--repeats 2]

Two runs, each trained without callbacks and with them (the same seeds, a TensorBoard logger in
both, no progress bar), the faster of ``--repeats`` timings of each kept:

1. the demo — full-batch GD on 1000 digits, 3000 steps — with ``EdgeOfStability()`` defaults;
2. a 288-step mini-batch run (batch 100) with ``EdgeOfStability()`` and
   ``HessianSharpness(density_every_n_steps=300)`` (a density schedule the run never reaches).

Prints the measured slowdown (seconds with − without), the callbacks' logged
``dyn/cost/<callback>_total_seconds`` summed, their ratio (1 = the logged cost is the whole cost),
and the products spent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_dyn import EdgeOfStability, HessianSharpness  # noqa: E402
from lightning_dyn.data import DigitsDataModule  # noqa: E402
from lightning_dyn.models import SquaredLossMLP  # noqa: E402


def fit(make_callbacks, steps: int, batch_size: int | None) -> tuple[float, list]:
    torch.manual_seed(0)
    callbacks = make_callbacks()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(max_steps=steps, callbacks=callbacks, logger=TensorBoardLogger(tmp, default_hp_metric=False),
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             log_every_n_steps=1)
        data = DigitsDataModule(n=1000) if batch_size is None else DigitsDataModule(n=1000, batch_size=batch_size)
        start = time.perf_counter()
        trainer.fit(SquaredLossMLP(lr=0.1), data)
        return time.perf_counter() - start, callbacks


def compare(name: str, make_callbacks, steps: int, batch_size: int | None, repeats: int) -> None:
    plain = min(fit(list, steps, batch_size)[0] for _ in range(repeats))
    runs = [fit(make_callbacks, steps, batch_size) for _ in range(repeats)]
    seconds, callbacks = min(runs, key=lambda r: r[0])
    logged = sum(c.total_seconds for c in callbacks)
    slowdown = seconds - plain
    print(f"\n## {name}: {steps} steps, {torch.get_num_threads()} CPU threads, best of {repeats}")
    print(f"without callbacks {plain:7.1f} s; with {seconds:7.1f} s: slowdown {slowdown:6.2f} s "
          f"({slowdown / plain:.1%} of training)")
    for c in callbacks:
        print(f"  {type(c).__name__:<18} logged {c.total_seconds:6.2f} s, {c.total_hvps} products, "
              f"{len(c.history)} measurements")
    print(f"logged / measured slowdown: {logged / slowdown:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    compare("the demo with EdgeOfStability()", lambda: [EdgeOfStability()], 3000, None, args.repeats)
    compare("mini-batch run with EdgeOfStability() and HessianSharpness(density_every_n_steps=300)",
            lambda: [EdgeOfStability(), HessianSharpness(density_every_n_steps=300)], 288, 100, args.repeats)


if __name__ == "__main__":
    main()
