"""Leave every global random stream as it was: torch (CPU and CUDA), numpy and Python's."""

from __future__ import annotations

import contextlib
import random
from typing import Iterator, Optional

import numpy as np
import torch


@contextlib.contextmanager
def preserved_rng(seed: Optional[int] = None) -> Iterator[None]:
    """Fork the global RNG streams; optionally seed torch's inside; restore all on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
