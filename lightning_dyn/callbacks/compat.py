"""One callback class for both Lightning imports (``lightning.pytorch`` and ``pytorch_lightning``).

The two packages ship distinct ``Callback`` classes and each ``Trainer`` checks ``isinstance``
against its own; a class inheriting from both bases (where both are installed) is accepted by
either. Loggers and exceptions are matched against both packages' classes likewise.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger

try:  # the standalone package, when installed
    import pytorch_lightning as _pl_standalone
    from pytorch_lightning.loggers import TensorBoardLogger as _StandaloneTensorBoardLogger
except ImportError:  # pragma: no cover - depends on the environment
    _pl_standalone = None
    _StandaloneTensorBoardLogger = None

CALLBACK_BASES: tuple[type, ...] = (pl.Callback,) + ((_pl_standalone.Callback,) if _pl_standalone else ())
TENSORBOARD_LOGGERS: tuple[type, ...] = (TensorBoardLogger,) + (
    (_StandaloneTensorBoardLogger,) if _StandaloneTensorBoardLogger else ()
)


class ConfigurationError(MisconfigurationException, ValueError):
    """A bad argument or a setup a callback cannot serve (both a Lightning
    ``MisconfigurationException`` and a ``ValueError``)."""


def tensorboard_writer(trainer: Any) -> Optional[Any]:
    """The ``SummaryWriter`` of the trainer's first TensorBoard logger, on global rank 0 only."""
    if trainer.global_rank != 0:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TENSORBOARD_LOGGERS):
            return logger.experiment
    return None
