"""Datasets as in-memory uint8 image tensors, binarization, and the Lightning datamodule."""

from vaelik.data.binarized_mnist import BinarizedMNIST
from vaelik.data.datamodule import ImageDataModule
from vaelik.data.embedded import EmbeddedMNIST
from vaelik.data.errors import DataNotFoundError
from vaelik.data.mnist import MNIST

__all__ = ["MNIST", "BinarizedMNIST", "DataNotFoundError", "EmbeddedMNIST", "ImageDataModule"]
