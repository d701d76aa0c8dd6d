"""The fixed binarization of MNIST (Larochelle & Murray, 2011) from its standard ``.amat`` files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from vaelik.data.source import DataKind, Split, check_split
from vaelik.errors import ConfigError, DataNotFoundError

BASE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
FILE_NAMES: dict[Split, str] = {
    "train": "binarized_mnist_train.amat",
    "val": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
SHA256: dict[str, str] = {  # the published checksums
    "binarized_mnist_train.amat": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",  # noqa: E501
    "binarized_mnist_valid.amat": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",  # noqa: E501
    "binarized_mnist_test.amat": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
NUM_PIXELS = 28 * 28


def parse_amat(path: Path) -> np.ndarray:
    """Parse an ``.amat`` file (one image a line, 784 whitespace-separated 0/1 values).

    Returns a ``uint8`` array ``[N, 784]``. The standard files are single-character values
    separated by single spaces, read here straight from the bytes; anything else falls back to a
    general whitespace split. Values other than 0 and 1, or rows of another length, raise.
    """
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    row_bytes = 2 * NUM_PIXELS
    if raw.size and raw.size % row_bytes == 0:
        rows = raw.reshape(-1, row_bytes)
        separators = rows[:, 1::2]
        if (separators[:, :-1] == ord(" ")).all() and (separators[:, -1] == ord("\n")).all():
            values = rows[:, 0::2] - ord("0")
            if (values <= 1).all():
                return np.ascontiguousarray(values)
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = [i for i, line in enumerate(lines) if len(line) != NUM_PIXELS]
    if not lines or bad:
        raise ConfigError(
            f"{path} is not a binarized MNIST .amat file: expected lines of {NUM_PIXELS} values, "
            f"line {bad[0] + 1 if bad else 1} differs. Delete it so that it is downloaded again."
        )
    values = np.asarray(lines, dtype=np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ConfigError(f"{path} holds values other than 0 and 1: it is not binarized MNIST")
    return values.astype(np.uint8)


def download_verified(url: str, destination: Path, sha256: str | None, timeout: float = 60) -> None:
    """Download ``url`` to ``destination`` via a temporary file, checking its sha256 if given; a
    mismatch deletes the temporary file and names both digests."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp)
            tmp.close()
            digest = hashlib.sha256(Path(tmp.name).read_bytes()).hexdigest()
            if sha256 is not None and digest != sha256:
                raise OSError(f"{url} has sha256 {digest}, expected {sha256}")
            os.replace(tmp.name, destination)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)


class BinarizedMNIST:
    """Statically binarized MNIST: 50,000 / 10,000 / 10,000 images of 28x28 binary pixels.

    Files are looked up as ``{data_dir}/BinarizedMNIST/binarized_mnist_{train,valid,test}.amat``
    and downloaded there from the standard location when missing and ``download`` is true. Each
    load parses the ``.amat`` file itself (well under a second for the 50,000 training images):
    there is no cache to go stale, half-written or corrupt, and nothing is written into a data
    folder that may be shared or read-only.
    """

    native_kind: DataKind = "binary"

    def __init__(self, data_dir: str, download: bool = True, base_url: str = BASE_URL) -> None:
        self.folder = Path(data_dir) / "BinarizedMNIST"
        self.download = download
        self.base_url = base_url

    def _ensure_file(self, name: str) -> Path:
        path = self.folder / name
        if path.is_file():
            return path
        url = f"{self.base_url}/{name}"
        if not self.download:
            raise DataNotFoundError(
                f"{path.resolve()} does not exist and downloading is off. Download {url} into "
                f"{self.folder.resolve()}, or set paths.data_dir to a folder holding "
                "BinarizedMNIST/, or allow the download with data.source.download=true."
            )
        try:
            # a known file is checked whatever the URL: a mirror or a file:// copy must hold the
            # published bytes
            download_verified(url, path, SHA256.get(name))
        except OSError as error:
            raise DataNotFoundError(
                f"{path.resolve()} does not exist and downloading {url} failed ({error}). On a "
                f"machine without network, copy the three .amat files into {self.folder.resolve()} "
                "or set paths.data_dir to a folder holding BinarizedMNIST/."
            ) from error
        return path

    def load(self, split: Split) -> torch.Tensor:
        values = parse_amat(self._ensure_file(FILE_NAMES[check_split(split)]))
        return torch.from_numpy(values).reshape(-1, 1, 28, 28)
