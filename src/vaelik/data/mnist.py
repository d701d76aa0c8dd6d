"""MNIST through torchvision (IDX files; downloaded for users, read offline from a data folder)."""

from __future__ import annotations

from pathlib import Path

import torch

from vaelik.data.errors import DataNotFoundError
from vaelik.data.source import DataKind, Split, check_split, split_off


class MNIST:
    """MNIST (60,000 + 10,000 images, 28x28, 0..255), torchvision's layout under ``data_dir``.

    torchvision reads ``{data_dir}/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``. The
    validation split is ``val_size`` images held out of the training set with a fixed ``seed``
    (the usual 50,000 / 10,000 / 10,000 by default).
    """

    native_kind: DataKind = "8bit"

    def __init__(
        self, data_dir: str, download: bool = True, val_size: int = 10_000, seed: int = 0
    ) -> None:
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_size = val_size
        self.seed = seed

    def _read(self, train: bool) -> torch.Tensor:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        try:
            dataset = TorchvisionMNIST(str(self.data_dir), train=train, download=self.download)
        except (RuntimeError, OSError) as error:
            raise DataNotFoundError(
                f"MNIST was not found under {self.data_dir.resolve()}/MNIST/raw and could not be "
                f"downloaded ({error}). Put the four IDX files (train-images-idx3-ubyte, ...) in "
                "that folder, or set paths.data_dir to a folder that holds MNIST/raw/, or allow "
                "the download with data.source.download=true on a machine with network."
            ) from error
        return dataset.data.unsqueeze(1).to(torch.uint8)

    def load(self, split: Split) -> torch.Tensor:
        if check_split(split) == "test":
            return self._read(train=False)
        train, val = split_off(self._read(train=True), self.val_size, self.seed)
        return train if split == "train" else val
