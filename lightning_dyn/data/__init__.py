"""Small datasets that need no download."""

from .digits import DigitsDataModule, digits_tensors
from .maps import MapDataModule, map_tensors, monotone_floor

__all__ = ["DigitsDataModule", "MapDataModule", "digits_tensors", "map_tensors", "monotone_floor"]
