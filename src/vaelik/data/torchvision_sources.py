"""Image datasets through torchvision: downloaded for users, read offline from a data folder.

Each source reads torchvision's files under ``data_dir`` and returns uint8 ``[N, C, H, W]``; the
validation split is ``val_size`` images held out of the training set with a fixed ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelik.data.source import DataKind, Split, check_split, split_off
from vaelik.errors import DataNotFoundError


class TorchvisionSource:
    """Base: ``dataset_class`` (a torchvision dataset name), ``layout`` (where its files go,
    for the error message) and how its constructor names the training/test parts."""

    dataset_class: str
    layout: str
    native_kind: DataKind = "8bit"
    default_val_size = 10_000

    def __init__(
        self, data_dir: str, download: bool = True, val_size: int | None = None, seed: int = 0
    ) -> None:
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_size = self.default_val_size if val_size is None else val_size
        self.seed = seed

    def _part(self, train: bool) -> dict[str, object]:
        return {"train": train}

    def _read(self, train: bool) -> torch.Tensor:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset_class)
        try:
            dataset = cls(str(self.data_dir), download=self.download, **self._part(train))
        except (RuntimeError, OSError, AssertionError, ValueError) as error:
            message = str(error).lower()
            missing = "not found" in message or "download" in message
            if not missing and not isinstance(error, OSError):
                # the files are there but torchvision could not parse them
                raise DataNotFoundError(
                    f"{self.dataset_class} files under {self.data_dir.resolve()} (expected "
                    f"{self.layout}) cannot be read ({type(error).__name__}: {error}): one is "
                    "truncated or not in the dataset's format. Replace it with the original, "
                    "or delete it so that it is downloaded again."
                ) from error
            where = f"{self.data_dir.resolve()} (expected {self.layout})"
            if self.download:  # tried, and failed: most often, no network
                happened = (
                    f"{self.dataset_class} is not under {where} and downloading it failed "
                    f"({' '.join(str(error).split())}); this machine may have no network"
                )
                fix = "Copy the files there from a machine that has them"
            else:
                happened = (
                    f"{self.dataset_class} is not under {where} and downloading is off "
                    "(data.source.download=false)"
                )
                fix = "Copy the files there, or allow the download on a machine with network"
            raise DataNotFoundError(
                f"{happened}. {fix}, or set paths.data_dir to a folder that holds them."
            ) from error
        return to_nchw_uint8(dataset.data)

    def load(self, split: Split) -> torch.Tensor:
        if check_split(split) == "test":
            return self._read(train=False)
        train, val = split_off(self._read(train=True), self.val_size, self.seed)
        return train if split == "train" else val


def to_nchw_uint8(data) -> torch.Tensor:
    """torchvision's ``.data`` as uint8 ``[N, C, H, W]``: ``[N, H, W]`` (MNIST-like),
    ``[N, H, W, 3]`` numpy (CIFAR) or ``[N, 3, H, W]`` numpy (SVHN)."""
    tensor = torch.as_tensor(np.asarray(data)).to(torch.uint8)
    if tensor.dim() == 3:
        return tensor.unsqueeze(1)
    if tensor.shape[-1] in (1, 3):
        return tensor.permute(0, 3, 1, 2).contiguous()
    return tensor


class MNIST(TorchvisionSource):
    """MNIST: 60,000 + 10,000 grey digits, 28x28 (50,000 / 10,000 / 10,000 by default)."""

    dataset_class = "MNIST"
    layout = "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"


class FashionMNIST(TorchvisionSource):
    """Fashion-MNIST: 60,000 + 10,000 grey clothing images, 28x28."""

    dataset_class = "FashionMNIST"
    layout = "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"


class CIFAR10(TorchvisionSource):
    """CIFAR-10: 50,000 + 10,000 RGB images, 32x32 (45,000 / 5,000 / 10,000 by default)."""

    dataset_class = "CIFAR10"
    layout = "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"
    default_val_size = 5_000


class SVHN(TorchvisionSource):
    """SVHN (cropped digits): 73,257 + 26,032 RGB images, 32x32."""

    dataset_class = "SVHN"
    layout = "{train,test}_32x32.mat"
    default_val_size = 5_000

    def _part(self, train: bool) -> dict[str, object]:
        return {"split": "train" if train else "test"}
