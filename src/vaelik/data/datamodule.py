"""One LightningDataModule for every image dataset: a source, a binarization, loaders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from vaelik.data.binarize import Binarize, ImageTensorDataset, check_binarize
from vaelik.data.source import DataKind, ImageSource, Split, check_split
from vaelik.errors import ConfigError


class ImageDataModule(pl.LightningDataModule):
    """Serves ``(x, index)`` batches of a source's train/val/test splits.

    Args:
        source: where the uint8 images come from (embedded, torchvision, .amat files...).
        shape: ``[C, H, W]`` the config promises; checked against the loaded images.
        binarize: ``none`` keeps the source's values; ``threshold``/``static``/``dynamic`` give
            binary pixels (``dynamic`` redraws the training set every epoch and uses a fixed
            draw, seeded by ``binarize_seed``, for validation and test).
        batch_size / eval_batch_size: examples per training / evaluation batch.
    """

    def __init__(
        self,
        source: ImageSource,
        shape: Sequence[int],
        binarize: Binarize = "none",
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        binarize_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.shape = tuple(int(s) for s in shape)
        self.binarize = check_binarize(binarize)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.binarize_seed = binarize_seed
        self._datasets: dict[Split, ImageTensorDataset] = {}

    @property
    def kind(self) -> DataKind:
        """``"binary"`` when pixels are 0/1 (binarized or natively binary), else ``"8bit"``."""
        return self.source.native_kind if self.binarize == "none" else "binary"

    @property
    def num_dims(self) -> int:
        """D = C * H * W, the number of dimensions that bits/dim divides by."""
        return math.prod(self.shape)

    def dataset(self, split: str) -> ImageTensorDataset:
        """The split's dataset, loaded on first use."""
        split = check_split(split)
        if split not in self._datasets:
            images = self.source.load(split)
            if tuple(images.shape[1:]) != self.shape:
                raise ConfigError(
                    f"the {split} images have shape {tuple(images.shape[1:])} but data.shape is "
                    f"{list(self.shape)}: fix data.shape in the data config"
                )
            mode = "static" if (self.binarize == "dynamic" and split != "train") else self.binarize
            seed = self.binarize_seed + {"train": 0, "val": 1, "test": 2}[split]
            self._datasets[split] = ImageTensorDataset(images, self.source.native_kind, mode, seed)
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")
        if stage in (None, "validate"):
            self.dataset("val")
        if stage in (None, "test"):
            self.dataset("test")

    def loader(
        self, split: str, shuffle: bool = False, batch_size: int | None = None
    ) -> DataLoader:
        """A DataLoader over one split (evaluation batch size unless given)."""
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size or self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
