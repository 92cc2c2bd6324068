"""Small datasets that need no download."""

from .digits import DigitsDataModule, digits_tensors

__all__ = ["DigitsDataModule", "digits_tensors"]
