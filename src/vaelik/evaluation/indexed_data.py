"""The examples an estimate is made on, whatever form the data comes in, with their indices.

An example's index in its data set is the key of its random stream (:mod:`vaelik.inference.
streams`), so an example gets the same draws, and the same estimate, whatever the batching, the
subset evaluated or the number of processes. Every form of data becomes an
:class:`IndexedExamples` data set whose items are ``(x, index)``:

- a tensor (or array) ``[N, ...]``: example ``i`` is ``data[i]``;
- a torch ``Dataset`` whose items are ``x`` or tuples ``(x, label, ...)``: ``x`` is the first
  element, the index its position (vaelik's own data sets yield ``(x, index)``: the same thing);
- a ``DataLoader``: its data set (and its batch size where none is given); its order and
  shuffling do not matter, as results are kept by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vaelik.errors import ConfigError
from vaelik.subsets import Spread

#: what ``data`` may be, for error messages
ACCEPTED = "a tensor [N, ...], a torch Dataset yielding x or (x, label), or a DataLoader"

#: the data an estimate is made on: a tensor or array ``[N, ...]``, a ``Dataset`` yielding ``x``
#: or ``(x, label, ...)``, or a ``DataLoader`` (its data set and batch size)
EstimationData: TypeAlias = torch.Tensor | np.ndarray | Dataset | DataLoader

#: which of its examples: all (None), these indices (``range(100)``: the first 100), or
#: :class:`~vaelik.subsets.Spread` (that many spread evenly over it)
ExampleChoice: TypeAlias = Spread | Sequence[int] | None


class IndexedExamples(Dataset):
    """Items ``(x, index)`` of a data set given as a tensor or as a ``Dataset``."""

    def __init__(self, source: torch.Tensor | Dataset) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.source[index]
        if isinstance(item, tuple | list):
            if not item:
                raise ConfigError(f"data item {index} is empty: give {ACCEPTED}")
            item = item[0]
        return torch.as_tensor(item), index


def indexed_examples(data: EstimationData) -> tuple[IndexedExamples, int | None]:
    """``data`` as :class:`IndexedExamples`, and the batch size of a ``DataLoader`` (else None).
    Raises a ConfigError for anything else, or for an empty data set."""
    batch_size = None
    if isinstance(data, DataLoader):
        batch_size, data = data.batch_size, data.dataset
    if not isinstance(data, torch.Tensor | Dataset):
        if not hasattr(data, "__array__"):
            raise ConfigError(f"cannot estimate on a {type(data).__name__}: give {ACCEPTED}")
        data = torch.as_tensor(data)
    if isinstance(data, torch.Tensor) and data.dim() < 2:
        raise ConfigError(
            f"data of shape {tuple(data.shape)} has no example dimension: give a tensor [N, ...] "
            "(one example: data.unsqueeze(0))"
        )
    try:
        size = len(data)  # type: ignore[arg-type]
    except TypeError as error:
        raise ConfigError(f"the data set has no length: give {ACCEPTED}") from error
    if size == 0:
        raise ConfigError("the data set is empty: give at least one example")
    return IndexedExamples(data), batch_size


def chosen_indices(size: int, examples: ExampleChoice) -> list[int]:
    """The indices to estimate: all (None), those of a :class:`~vaelik.subsets.Spread`, or the
    given indices. A bare number is refused: it could mean the first N or N spread over the
    data, which differ on a data set sorted by class."""
    if examples is None:
        return list(range(size))
    if isinstance(examples, Spread):
        return examples.indices(size)
    if isinstance(examples, int | np.integer):
        raise ConfigError(
            f"examples={examples} is ambiguous: pass examples=range({examples}) for the first "
            f"{examples}, or examples=vaelik.Spread({examples}) for {examples} spread evenly "
            "over the data (a data set sorted by class needs the spread)"
        )
    if isinstance(examples, str) or not hasattr(examples, "__iter__"):
        raise ConfigError(
            "examples must be None, a sequence of indices or vaelik.Spread(N), got "
            f"{type(examples).__name__}"
        )
    indices = [int(i) for i in examples]
    outside = [i for i in indices if not 0 <= i < size]
    if outside:
        raise ConfigError(f"example index {outside[0]} is outside the data set of {size}")
    if not indices:
        raise ConfigError("no examples chosen: give at least one index")
    if len(set(indices)) != len(indices):
        repeated = next(i for i in indices if indices.count(i) > 1)
        raise ConfigError(f"example {repeated} is chosen twice: give each index once")
    return indices


def event_dims(dataset: Dataset) -> int:
    """D, the number of values in one example (C * H * W for an image): bits/dim divide by it."""
    return int(dataset[0][0].numel())
