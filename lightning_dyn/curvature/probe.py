"""The probe set: the fixed samples a measurement sees, drawn once, the same on every rank.

A curvature measurement is of a fixed function — the loss on a fixed set of samples — so that
successive measurements are comparable and a warm start is meaningful. :func:`draw_probe_set`
draws that set once, with these guarantees:

* **No generator the user owns moves.** From a map-style dataset (``len`` and ``[i]``) the
  samples are ``probe_size`` indices drawn uniformly without replacement by a *private*
  ``torch.Generator`` (seeded by ``seed``), collated by the loader's own ``collate_fn`` in
  batches of the loader's ``batch_size``: the loader, its sampler, its ``generator=`` and the
  global RNG streams are never touched, so training sees the data order it would see without
  us, and two callbacks with the same seed draw the same set whatever else is attached. Only an
  iterable dataset is read through the loader; then the loader's and its sampler's generators,
  and every random generator the dataset holds as an attribute (``torch.Generator``, numpy's
  ``Generator``/``RandomState``, ``random.Random`` — a stream that shuffles itself), are saved
  and restored around the draw, like the global streams. (A generator hidden deeper — inside an
  object the dataset holds — is beyond reach: give it a map-style dataset, or ``probe_batches``.)
* **One meaning of ``probe_size`` under DDP: global samples.** Every rank draws the same global
  indices from the (replicated) dataset; rank ``r`` of ``W`` keeps every ``W``-th sample from the
  ``r``-th on as its share for products that are all-reduced (:class:`HessianOperator`), and
  :meth:`ProbeSet.all_batches` gives every rank the whole set (no communication) for quantities
  each rank computes in full (SGD's linearisation, the Jacobian's spectrum). One process and
  ``W`` ranks therefore measure the same function.
* **A default size never fails.** ``probe_size=None`` takes ``default_size`` samples, or the
  whole training set when it is smaller (and says so); an explicit size larger than the set is
  an error.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .batches import batch_size, tree_map_tensors


class ProbeSetError(ValueError):
    """A probe set cannot be drawn as asked (an explicit size larger than the data, no data)."""


@dataclass
class ProbeSet:
    """The samples a measurement is of.

    Attributes:
        batches: this rank's share, on the device, in batches of the loader's batch size (the
            samples for products that are summed over ranks).
        num_samples: the number of samples in the whole set (all ranks together).
        description: how it was drawn, in words (for a log line).
        rank, world_size: the rank this share belongs to, among how many.
    """

    batches: list[Any]
    num_samples: int
    description: str
    rank: int = 0
    world_size: int = 1
    _everything: Optional[Callable[[], list[Any]]] = field(default=None, repr=False)

    def all_batches(self) -> list[Any]:
        """The whole probe set (every rank's share), on the device, the same list on every rank."""
        return self._everything() if self._everything is not None else list(self.batches)


def _is_map_style(dataset: Any) -> bool:
    return dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__getitem__") \
        and hasattr(dataset, "__len__")


def _size(requested: Optional[int], available: Optional[int], default_size: int) -> tuple[int, str]:
    if requested is None:
        if available is not None and available < default_size:
            return available, f"the whole training set ({available} samples; the default is {default_size})"
        return default_size, f"{default_size} samples (the default)"
    if available is not None and requested > available:
        raise ProbeSetError(f"`probe_size` ({requested}) is larger than the training set ({available} samples): "
                            "lower it, or leave it unset to use the whole set")
    return requested, f"{requested} samples"


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _saved(rng: Any) -> Optional[Callable[[], None]]:
    """A function putting ``rng``'s current state back, or ``None`` for what is not a generator."""
    if isinstance(rng, torch.Generator):
        state = rng.get_state()
        return lambda: rng.set_state(state)
    if isinstance(rng, np.random.Generator):
        state = rng.bit_generator.state
        return lambda: setattr(rng.bit_generator, "state", state)
    if isinstance(rng, np.random.RandomState):
        state = rng.get_state()
        return lambda: rng.set_state(state)
    if isinstance(rng, random.Random):
        state = rng.getstate()
        return lambda: rng.setstate(state)
    return None


@contextlib.contextmanager
def _loader_generators_preserved(loader: Any) -> Iterator[None]:
    """Save and restore every RNG a loader may draw from while iterated: its own, its samplers',
    the dataset's attributes that are generators, and the global streams."""
    dataset = getattr(loader, "dataset", None)
    candidates = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None),
                  getattr(getattr(loader, "batch_sampler", None), "generator", None),
                  *(vars(dataset).values() if hasattr(dataset, "__dict__") else ())]
    unique = {id(g): g for g in candidates}
    restores = [r for r in map(_saved, unique.values()) if r is not None]
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            for restore in restores:
                restore()
            random.setstate(py_state)
            np.random.set_state(np_state)


def _source(loader: Any, device: torch.device) -> tuple[Any, Optional[int], Callable[[Any], Any], Optional[int]]:
    """The loader's dataset, its batch size, a copier of batches to ``device``, and the dataset's
    size when it is map-style (``None`` for an iterable one; an empty one is refused)."""
    dataset = getattr(loader, "dataset", None)
    to_device = lambda b: tree_map_tensors(lambda t: t.detach().to(device), b)  # noqa: E731
    available = None
    if _is_map_style(dataset):
        available = len(dataset)
        if available == 0:
            raise ProbeSetError("the training set is empty")
    return dataset, getattr(loader, "batch_size", None), to_device, available


def draw_probe_set(loader: Any, probe_size: Optional[int], *, device: torch.device, seed: int = 0,
                   default_size: int = 1000, rank: int = 0, world_size: int = 1,
                   all_gather: Optional[Callable[[list[Any]], list[Any]]] = None) -> ProbeSet:
    """Draw the probe set from a train ``DataLoader`` (module docstring).

    Args:
        loader: the train dataloader (its dataset, ``collate_fn`` and ``batch_size`` are used).
        probe_size: samples in the whole set (all ranks); ``None``: ``default_size`` or the whole set.
        device: where the batches live.
        seed: seed of the private generator that picks the samples.
        default_size: the size ``probe_size=None`` stands for.
        rank, world_size: this process's rank and the number of ranks.
        all_gather: for an iterable dataset under DDP, a function gathering every rank's batches
            (a list of batches per rank) into one list in the same order on every rank.
    """
    dataset, per_batch, to_device, available = _source(loader, device)
    if available is not None:
        n, said = _size(probe_size, available, default_size)
        generator = torch.Generator().manual_seed(seed)
        indices = sorted(torch.randperm(available, generator=generator)[:n].tolist())
        collate = loader.collate_fn
        per_batch = per_batch or n

        def collated(chosen: list[int]) -> list[Any]:
            return [to_device(collate([dataset[i] for i in chunk])) for chunk in _chunks(chosen, per_batch)]

        drawn = "uniformly without replacement" if n < available else "all of them"
        return ProbeSet(collated(indices[rank::world_size]), n,
                        f"{said} of the {available}-sample training set, {drawn} (seed {seed})", rank, world_size,
                        lambda: collated(indices))
    # an iterable dataset: read the loader's first samples, every generator it uses put back after
    n, said = _size(probe_size, None, default_size)
    share = -(-n // world_size)
    batches, count = [], 0
    with _loader_generators_preserved(loader):
        torch.manual_seed(seed)
        for batch in loader:
            take = min(batch_size(batch), share - count)
            batches.append(to_device(tree_map_tensors(lambda t: t[:take] if t.dim() > 0 else t, batch)))
            count += take
            if count >= share:
                break
    if count == 0:
        raise ProbeSetError("the train dataloader yielded no samples")
    everything = None
    if world_size > 1:
        if all_gather is None:
            raise ProbeSetError("an iterable dataset under DDP needs `all_gather` to share the probe set")
        everything = lambda: all_gather(batches)  # noqa: E731
    return ProbeSet(batches, count * world_size if world_size > 1 else count,
                    f"{said}: the first ones each rank's loader yields (an iterable dataset)", rank, world_size,
                    everything)


def trainable_signature(module: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """Which parameters train now (each shared parameter once): changes when fine-tuning unfreezes
    a layer, and every measurement that depends on the space of trainable parameters (warm starts,
    parameter lists, blocks) is re-derived then."""
    return tuple((id(p), p.numel()) for p in module.parameters() if p.requires_grad)


def draw_minibatches(loader: Any, count: int, *, generator: torch.Generator, device: torch.device,
                     size: Optional[int] = None) -> list[Any]:
    """``count`` mini-batches of ``size`` samples (default: the loader's batch size — under DDP pass
    the global batch, every rank's together), as the training distribution draws them:
    from a map-style dataset each is ``batch_size`` indices drawn uniformly without replacement by
    ``generator`` (private: nothing the user owns moves), collated by the loader's ``collate_fn``; the
    whole training set, once, when a batch is as large as the set (full-batch training). From an
    iterable dataset, the loader's first ``count`` batches (its generators put back afterwards, as
    for the probe set) — the same ones at every call.
    """
    dataset, per_batch, to_device, available = _source(loader, device)
    if available is not None:
        size = min(size or per_batch or available, available)
        if size >= available:
            return [to_device(loader.collate_fn([dataset[i] for i in range(available)]))]
        draws = [torch.randperm(available, generator=generator)[:size].tolist() for _ in range(count)]
        return [to_device(loader.collate_fn([dataset[i] for i in chosen])) for chosen in draws]
    batches = []
    with _loader_generators_preserved(loader):
        for batch in loader:
            batches.append(to_device(batch))
            if len(batches) >= count:
                break
    if not batches:
        raise ProbeSetError("the train dataloader yielded no samples")
    return batches
