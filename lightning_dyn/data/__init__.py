"""Small datasets that need no download."""

from .digits import DigitsDataModule, digits_tensors
from .maps import MapDataModule, map_tensors, monotone_floor
from .surfaces import SurfaceDataModule, surface_tensors

__all__ = ["DigitsDataModule", "MapDataModule", "SurfaceDataModule", "digits_tensors", "map_tensors",
           "monotone_floor", "surface_tensors"]
