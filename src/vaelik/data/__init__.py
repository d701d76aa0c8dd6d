"""Datasets as in-memory uint8 image tensors, binarization, and the Lightning datamodule."""

from vaelik.data.binarized_mnist import BinarizedMNIST
from vaelik.data.datamodule import ImageDataModule
from vaelik.data.embedded import EmbeddedMNIST, EmbeddedRGBPatches
from vaelik.data.torchvision_sources import CIFAR10, MNIST, SVHN, FashionMNIST
from vaelik.errors import DataNotFoundError

__all__ = [
    "CIFAR10",
    "MNIST",
    "SVHN",
    "BinarizedMNIST",
    "DataNotFoundError",
    "EmbeddedMNIST",
    "EmbeddedRGBPatches",
    "FashionMNIST",
    "ImageDataModule",
]
