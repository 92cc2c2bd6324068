"""Tests of the shipped examples and configs, each against the README's numbers."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(name: str, function: str, args: tuple, cwd: str) -> Any:
    os.chdir(cwd)
    torch.set_num_threads(1)  # two workers on two cores
    return getattr(load_example(name), function)(*args)


def run_in_parallel(name: str, function: str, calls: list[tuple], cwd: Path, processes: int = 2) -> list[Any]:
    """``examples/<name>.py``'s ``function(*args)`` for each ``args`` of ``calls``, in ``processes``
    fresh processes (the independent fits of an example's sweep; pytest itself runs on one core),
    results in the order of ``calls``."""
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_call, [name] * len(calls), [function] * len(calls), calls, [str(cwd)] * len(calls)))
