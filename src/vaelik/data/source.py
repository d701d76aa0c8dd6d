"""What every dataset source provides: its splits as uint8 image tensors."""

from __future__ import annotations

from typing import Literal, Protocol

import torch

from vaelik.errors import ConfigError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
DataKind = Literal["binary", "8bit"]


class ImageSource(Protocol):
    """A dataset of images held in memory.

    ``native_kind`` says what the stored values are: ``"binary"`` (0/1) or ``"8bit"`` (0..255).
    ``load(split)`` returns a ``uint8`` tensor of shape ``[N, C, H, W]``.
    """

    native_kind: DataKind

    def load(self, split: Split) -> torch.Tensor: ...


def check_split(split: str) -> Split:
    """Return ``split`` if it is train, val or test, else raise a ValueError naming the choices."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


def split_off(images: torch.Tensor, held_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle ``images`` with a fixed ``seed``; split off the last ``held_out`` as a second set."""
    if not 0 < held_out < len(images):
        raise ConfigError(f"cannot hold out {held_out} of {len(images)} examples: choose 0 < n < N")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    images = images[order]
    return images[:-held_out], images[-held_out:]
