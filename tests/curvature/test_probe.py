"""The probe set: drawn by a private generator, the same on every rank, a default that never fails."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_dyn.curvature.probe import ProbeSetError, draw_probe_set

CPU = torch.device("cpu")


def _data(n: int = 50) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n))


def test_no_generator_of_the_run_moves():
    loader_generator = torch.Generator().manual_seed(1)
    loader = DataLoader(_data(), batch_size=8, shuffle=True, generator=loader_generator)
    before, torch_state = loader_generator.get_state(), torch.get_rng_state()
    probe = draw_probe_set(loader, 20, device=CPU, seed=3)
    assert torch.equal(loader_generator.get_state(), before) and torch.equal(torch.get_rng_state(), torch_state)
    # 20 distinct samples, in batches of the loader's size, by the seed alone
    ids = torch.cat([b[1] for b in probe.batches])
    assert len(set(ids.tolist())) == 20 and [len(b[1]) for b in probe.batches] == [8, 8, 4]
    again = draw_probe_set(DataLoader(_data(), batch_size=8), 20, device=CPU, seed=3)
    assert torch.equal(torch.cat([b[1] for b in again.batches]), ids)
    other = draw_probe_set(loader, 20, device=CPU, seed=4)
    assert not torch.equal(torch.cat([b[1] for b in other.batches]), ids)


def test_ranks_hold_a_partition_and_all_batches_is_the_whole_set():
    loader = DataLoader(_data(), batch_size=8)
    whole = torch.cat([b[1] for b in draw_probe_set(loader, 21, device=CPU).batches])
    shares = [draw_probe_set(loader, 21, device=CPU, rank=r, world_size=2) for r in range(2)]
    ids = [torch.cat([b[1] for b in s.batches]) for s in shares]
    assert sorted(torch.cat(ids).tolist()) == sorted(whole.tolist()) and len(ids[0]) == 11 and len(ids[1]) == 10
    for share in shares:
        assert share.num_samples == 21
        assert torch.equal(torch.cat([b[1] for b in share.all_batches()]), whole)


def test_the_default_size_never_fails_an_explicit_oversize_does():
    loader = DataLoader(_data(30), batch_size=8)
    probe = draw_probe_set(loader, None, device=CPU, default_size=1000)
    assert probe.num_samples == 30 and "whole training set" in probe.description
    with pytest.raises(ProbeSetError, match=r"`probe_size` \(31\) is larger than the training set \(30 samples\)"):
        draw_probe_set(loader, 31, device=CPU)


class _Stream(IterableDataset):
    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __iter__(self):
        for _ in range(100):
            yield torch.randn(2, generator=self.generator), torch.randint(0, 3, (), generator=self.generator)


def test_an_iterable_dataset_is_read_through_the_loader_with_its_generators_put_back():
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(_Stream(g), batch_size=4, generator=torch.Generator().manual_seed(2))
    state, loader_state = g.get_state(), loader.generator.get_state()
    probe = draw_probe_set(loader, 10, device=CPU)
    assert probe.num_samples == 10 and [len(b[1]) for b in probe.batches] == [4, 4, 2]
    assert torch.equal(loader.generator.get_state(), loader_state)
    # the dataset's own generator (an attribute) is put back too: the stream training reads is unchanged
    assert torch.equal(g.get_state(), state)


class _NumpyStream(IterableDataset):
    def __init__(self) -> None:
        self.rng, self.legacy, self.python = np.random.default_rng(0), np.random.RandomState(1), random.Random(2)

    def __iter__(self):
        for _ in range(100):
            yield torch.tensor([self.rng.normal(), self.legacy.normal(), self.python.random()])


def test_numpy_and_python_generators_of_a_stream_are_put_back():
    stream = _NumpyStream()
    before = (stream.rng.bit_generator.state, stream.legacy.get_state()[1].copy(), stream.python.getstate())
    draw_probe_set(DataLoader(stream, batch_size=4), 10, device=CPU)
    assert stream.rng.bit_generator.state == before[0]
    assert (stream.legacy.get_state()[1] == before[1]).all() and stream.python.getstate() == before[2]
