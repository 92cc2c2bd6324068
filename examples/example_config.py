"""What the configurable examples share: a YAML config over defaults, and the figure written both as a
PNG and into TensorBoard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def load_config(description: str, defaults: dict) -> dict:
    """``--config FILE``: a YAML mapping overriding ``defaults``; unknown keys stop with the allowed ones."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help="YAML file with any of: " + ", ".join(defaults))
    args = parser.parse_args()
    cfg = dict(defaults)
    if args.config:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        unknown = set(loaded) - set(defaults)
        if unknown:
            raise SystemExit(f"unknown keys in {args.config}: {sorted(unknown)}; allowed: {sorted(defaults)}")
        cfg.update(loaded)
    return cfg


def save_figure(fig, writer, out: Path, filename: str, tag: str) -> None:
    """Write ``fig`` to ``out/filename`` and to TensorBoard under ``tag``, close the writer, say where."""
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / filename, dpi=120)
    writer.add_figure(tag, fig)
    writer.close()
    print(f"\nfigure: {out / filename}\nTensorBoard: {sys.executable} -m tensorboard.main --logdir {out}")
