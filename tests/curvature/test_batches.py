"""Probe batches of any collection Lightning moves: the traversal, the sample count, joining."""

from __future__ import annotations

from collections import UserDict, namedtuple
from dataclasses import dataclass

import pytest
import torch
from torch.nn import functional as F

from lightning_dyn.curvature import HessianOperator
from lightning_dyn.curvature.batches import batch_size, concatenate, select_samples, tree_map_tensors

Pair = namedtuple("Pair", ["x", "y"])


@dataclass
class Example:
    x: torch.Tensor
    y: torch.Tensor


class Encoding(UserDict):
    """Like transformers' BatchEncoding: a Mapping that is not a dict."""


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


@pytest.mark.parametrize("make", [lambda x, y: (x, y), lambda x, y: {"x": x, "y": y}, lambda x, y: Pair(x, y),
                                  lambda x, y: Example(x, y), lambda x, y: Encoding(x=x, y=y),
                                  lambda x, y: {"inputs": [x], "meta": {"y": y, "name": "batch"}}],
                         ids=["tuple", "dict", "namedtuple", "dataclass", "UserDict", "nested"])
def test_every_collection_is_a_probe_batch(make):
    x, y = torch.randn(10, 3, generator=torch.Generator().manual_seed(1)), torch.randn(10, 1)

    def unpack(batch):
        if isinstance(batch, dict) and "inputs" in batch:
            return batch["inputs"][0], batch["meta"]["y"]
        if isinstance(batch, Example):
            return batch.x, batch.y
        return (batch["x"], batch["y"]) if not isinstance(batch, tuple) else (batch[0], batch[1])

    batch = make(x, y)
    moved = tree_map_tensors(lambda t: t.double(), batch)
    assert type(moved) is type(batch) and unpack(moved)[0].dtype == torch.float64
    assert batch_size(batch) == 10
    assert torch.equal(unpack(select_samples(batch, torch.tensor([2, 5])))[0], x[[2, 5]])
    joined = concatenate([make(x[:4], y[:4]), make(x[4:], y[4:])])
    assert type(joined) is type(batch) and torch.equal(unpack(joined)[0], x)

    def loss(model, b):
        inputs, targets = unpack(b)
        return F.mse_loss(model(inputs), targets)

    v = torch.randn(sum(p.numel() for p in _net().parameters()), generator=torch.Generator().manual_seed(2))
    got = HessianOperator(_net(), loss, [batch]).matvec(v)
    reference = HessianOperator(_net(), lambda m, b: F.mse_loss(m(b[0]), b[1]), [(x, y)]).matvec(v)
    torch.testing.assert_close(got, reference)


def test_batches_that_cannot_be_joined_say_why():
    with pytest.raises(ValueError, match="pad to a fixed length"):
        concatenate([{"ids": torch.zeros(2, 5)}, {"ids": torch.zeros(2, 7)}])
    with pytest.raises(ValueError, match="cannot find a tensor with a batch dimension"):
        batch_size({"name": "no tensors"})
