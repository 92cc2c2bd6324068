"""``lightning-dyn``: the command line.

    lightning-dyn demo [--steps 3000 --lr 0.1 --every 50 --out runs/demo]
    lightning-dyn fit --config configs/edge_of_stability.yaml     (any LightningCLI subcommand)
    lightning-dyn report RUN_DIR

``demo`` trains a tanh MLP 64-200-200-10 on the first 1000 sklearn digits with full-batch gradient
descent (η = 0.1, squared loss) and ``EdgeOfStability`` every 50 steps, writes TensorBoard logs and
ends with a plain-language summary: the edge of stability (Cohen et al. 2021) on a laptop CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .report import read_scalars, summarize, write_figures


def demo(argv: Sequence[str]) -> str:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from .callbacks import EdgeOfStability
    from .data import DigitsDataModule
    from .models import SquaredLossMLP

    parser = argparse.ArgumentParser(prog="lightning-dyn demo", description="The edge of stability on sklearn digits.")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=50, help="measure every this many steps")
    parser.add_argument("--out", default="runs/demo", help="TensorBoard log directory")
    args = parser.parse_args(argv)
    eos = EdgeOfStability(every_n_steps=args.every)
    logger = TensorBoardLogger(args.out, name="edge_of_stability")
    trainer = pl.Trainer(max_steps=args.steps, callbacks=[eos], logger=logger, log_every_n_steps=1,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                         accelerator="auto", devices=1)
    print(f"training a tanh MLP 64-200-200-10 on 1000 sklearn digits, full-batch GD at eta={args.lr} "
          f"for {args.steps} steps; stability threshold 2/eta = {2 / args.lr:g}")
    start = time.perf_counter()
    trainer.fit(SquaredLossMLP(lr=args.lr), DigitsDataModule(n=1000))
    seconds = time.perf_counter() - start
    series = read_scalars(logger.log_dir)
    text = summarize(series)
    paths = write_figures(series, logger.log_dir)
    print(f"\n{text}")
    print(f"\n{len(eos.history)} measurements, {eos.total_hvps} Hessian-vector products, "
          f"{eos.total_seconds:.1f} s of {seconds:.1f} s")
    print(f"TensorBoard logs: {logger.log_dir}\n  open them with: tensorboard --logdir {args.out}")
    for p in paths:
        print(f"figure: {p}")
    return text


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        demo(argv[1:])
        return
    if argv and argv[0] == "report":
        parser = argparse.ArgumentParser(prog="lightning-dyn report", description="Figures and a summary of a run.")
        parser.add_argument("run_dir")
        parser.add_argument("--out", default=None, help="where to write the PNGs (default: RUN_DIR)")
        args = parser.parse_args(argv[1:])
        from .report import report

        report(args.run_dir, args.out)
        return
    from lightning.pytorch.cli import LightningCLI

    from .data import DigitsDataModule
    from .models import SquaredLossMLP

    if _names_its_classes(argv):  # e.g. configs/ode_embedding.yaml: any LightningModule / DataModule
        LightningCLI(args=argv, subclass_mode_model=True, subclass_mode_data=True,
                     save_config_kwargs={"overwrite": True})
    else:  # the digits configs: SquaredLossMLP on DigitsDataModule, arguments given directly
        LightningCLI(SquaredLossMLP, DigitsDataModule, args=argv, save_config_kwargs={"overwrite": True})


def _names_its_classes(argv: Sequence[str]) -> bool:
    """Whether a ``--config`` file gives the model as ``class_path`` (subclass mode)."""
    import yaml

    for flag, value in zip(argv, argv[1:]):
        if flag == "--config" and Path(value).is_file():
            model = (yaml.safe_load(Path(value).read_text()) or {}).get("model")
            if isinstance(model, dict) and "class_path" in model:
                return True
    return False


if __name__ == "__main__":
    main()
