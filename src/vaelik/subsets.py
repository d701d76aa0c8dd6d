"""Which examples of a data set to use: all of them, or some spread evenly over it.

A module of its own, with nothing heavier than the standard library and vaelik's errors, so that
the evaluation library (``vaelik.estimate``) and the data modules share it without the library
loading Lightning or torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vaelik.errors import ConfigError


@dataclass(frozen=True)
class Spread:
    """``count`` examples spread evenly over a data set of N (positions ``floor(i * N / count)``,
    all of them when ``count >= N``): the choice for a file sorted by class, whose first
    examples are one class. ``vaelik.estimate(..., examples=vaelik.Spread(100))``; the first
    100 are ``examples=range(100)``."""

    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"Spread(count) needs an integer count >= 1, got {self.count!r}")

    def indices(self, size: int) -> list[int]:
        """The chosen positions in a data set of ``size`` examples, in order."""
        return evenly_spaced(range(size), self.count)


def example_indices(dataset: Any, limit: int | None) -> list[int]:
    """The examples of ``dataset`` to use: all when ``limit`` is None, else ``limit`` of them
    spread evenly over it (see :func:`evenly_spaced`), never just the first ones: some files
    are sorted by class (the binarized MNIST test file holds its 0s first, then its 1s, ...),
    and their first examples would be one digit."""
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"num_examples must be >= 1 or null (all), got {limit}")
    return evenly_spaced(range(len(dataset)), limit)  # type: ignore[arg-type]


def evenly_spaced(indices: Sequence[int], limit: int | None) -> list[int]:
    """``limit`` of ``indices`` at even steps from the first (all of them when ``limit`` is None
    or not smaller): positions ``floor(i * n / limit)`` for i = 0 .. limit - 1."""
    items = list(indices)
    if limit is None or int(limit) >= len(items):
        return items
    count = int(limit)
    return [items[i * len(items) // count] for i in range(count)]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` as ``(I, N)`` with ``0 <= I < N`` (None for no sharding)."""
    if text is None:
        return None
    part, _, count = str(text).partition("/")
    try:
        shard, shards = int(part), int(count)
    except ValueError:
        shard, shards = -1, 0
    if not 0 <= shard < shards:
        raise ConfigError(
            f"shard={text} is not I/N with 0 <= I < N: shard=0/4 ... shard=3/4 are the four "
            "disjoint parts of the examples"
        )
    return shard, shards


def shard_of(indices: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    """Part ``I`` of ``N`` of ``indices``: every N-th one from the I-th. The N parts are
    disjoint and cover every index once, whatever N."""
    if shard is None:
        return list(indices)
    part, parts = shard
    return list(indices)[part::parts]
