"""Binarizing images: none, a threshold, one fixed random draw, or a fresh draw every epoch."""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import Dataset

from vaelik.data.source import DataKind

Binarize = Literal["none", "threshold", "static", "dynamic"]
BINARIZE_MODES: tuple[str, ...] = ("none", "threshold", "static", "dynamic")


def check_binarize(mode: str) -> Binarize:
    """Return ``mode`` if known, else raise a ValueError listing the modes."""
    if mode not in BINARIZE_MODES:
        raise ValueError(
            f"unknown binarize mode {mode!r}: choose one of {', '.join(BINARIZE_MODES)}"
        )
    return mode  # type: ignore[return-value]


def intensities(images: torch.Tensor, kind: DataKind) -> torch.Tensor:
    """Pixel intensities in [0, 1]: ``images / 255`` for 8-bit data, the values for binary data."""
    return images.float() / (255.0 if kind == "8bit" else 1.0)


class ImageTensorDataset(Dataset):
    """Images held in memory, returned as ``(x, index)`` with ``x`` a float tensor ``[C, H, W]``.

    ``x`` holds 0/1 values when binarized (or when the data is binary) and 0..255 otherwise.
    ``"threshold"`` keeps pixels with intensity >= 0.5; ``"static"`` draws each pixel once from a
    Bernoulli with its intensity as probability (generator seeded with ``seed``); ``"dynamic"``
    draws afresh each time an example is read (Salakhutdinov & Murray's dynamic binarization) -
    for evaluation splits, pass ``"static"`` so that a model is scored on fixed data.
    """

    def __init__(self, images: torch.Tensor, kind: DataKind, binarize: Binarize, seed: int = 0):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        self.binarize = check_binarize(binarize)
        if binarize == "none":
            self.data = images.float()
        elif binarize == "dynamic":
            self.data = intensities(images, kind)
        elif binarize == "threshold":
            self.data = (intensities(images, kind) >= 0.5).float()
        else:
            probs = intensities(images, kind)
            self.data = torch.bernoulli(probs, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.data[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x)
        return x, index
