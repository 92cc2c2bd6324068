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
import warnings
from pathlib import Path
from typing import Optional, Sequence

from .report import read_scalars, summarize, write_figures


def demo(argv: Sequence[str]) -> str:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from .callbacks import EdgeOfStability
    from .data import DigitsDataModule
    from .models import SquaredLossMLP
    from .progress import StepProgressBar

    parser = argparse.ArgumentParser(prog="lightning-dyn demo", description="The edge of stability on sklearn digits.")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=50, help="measure every this many steps")
    parser.add_argument("--out", default="runs/demo", help="TensorBoard log directory")
    args = parser.parse_args(argv)
    eos = EdgeOfStability(every_n_steps=args.every)
    logger = TensorBoardLogger(args.out, name="edge_of_stability", default_hp_metric=False)
    # full-batch GD: an epoch is one step, so the bar counts steps (Lightning's restarts every epoch)
    trainer = pl.Trainer(max_steps=args.steps, callbacks=[eos, StepProgressBar(refresh_rate=10)], logger=logger,
                         log_every_n_steps=1,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=True,
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
    print(f"TensorBoard logs: {logger.log_dir}\n  open them with: {tensorboard_command(args.out)}")
    for p in paths:
        print(f"figure: {p}")
    return text


USAGE = """usage: lightning-dyn COMMAND [ARGS]

commands:
  demo      the edge of stability, live: full-batch GD on sklearn digits with EdgeOfStability (~1 min on 2 CPU cores)
  fit       train from a LightningCLI config: lightning-dyn fit --config configs/edge_of_stability.yaml
  report    PNG figures and a plain-language summary of a run: lightning-dyn report RUN_DIR
  validate, test, predict
            LightningCLI's other subcommands, as `lightning-dyn fit`

`lightning-dyn COMMAND --help` describes a command's options.
"""


def tensorboard_command(log_dir: str | Path) -> str:
    """A command that opens TensorBoard on ``log_dir`` from the interpreter running us (works from a
    virtual environment that is not on the PATH)."""
    return f"{Path(sys.executable).as_posix()} -m tensorboard.main --logdir {Path(log_dir).as_posix()}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    # Lightning's own deprecation notice about torch's pytree API: nothing a user of this CLI can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] == "demo":
        demo(argv[1:])
        return
    if argv[0] == "report":
        parser = argparse.ArgumentParser(prog="lightning-dyn report", description="Figures and a summary of a run.")
        parser.add_argument("run_dir")
        parser.add_argument("--out", default=None, help="where to write the PNGs (default: RUN_DIR)")
        args = parser.parse_args(argv[1:])
        from .report import report

        report(args.run_dir, args.out)
        return
    if argv[0] not in ("fit", "validate", "test", "predict") and not argv[0].startswith("-"):
        print(f"lightning-dyn: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    cli = _lightning_cli(argv)
    if argv[0] == "fit" and cli is not None:
        _after_fit(cli.trainer)


def _lightning_cli(argv: list[str]):
    from lightning.pytorch.cli import LightningCLI

    from .data import DigitsDataModule
    from .models import SquaredLossMLP

    # LightningCLI parses sys.argv itself (passing args= makes it warn that it is meant for Python use)
    saved, sys.argv = sys.argv, ["lightning-dyn", *argv]
    try:
        if _names_its_classes(argv):  # e.g. configs/ode_embedding.yaml: any LightningModule / DataModule
            return LightningCLI(subclass_mode_model=True, subclass_mode_data=True,
                                save_config_kwargs={"overwrite": True})
        # the digits configs: SquaredLossMLP on DigitsDataModule, arguments given directly
        return LightningCLI(SquaredLossMLP, DigitsDataModule, save_config_kwargs={"overwrite": True})
    finally:
        sys.argv = saved


def _after_fit(trainer) -> None:
    """What ``demo`` ends with: the summary of every callback's story, and where the logs are."""
    from .report import run_summary

    log_dir = getattr(trainer, "log_dir", None)
    if trainer.global_rank != 0 or not log_dir or not list(Path(log_dir).rglob("events.out.tfevents.*")):
        return
    print(f"\n{run_summary(read_scalars(log_dir))}")
    print(f"\nTensorBoard logs: {log_dir}\n  open them with: {tensorboard_command(Path(log_dir).parent)}")
    print(f"  figures and this summary again: lightning-dyn report {log_dir}")


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
