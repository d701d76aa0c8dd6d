"""Dataset loaders on files in the real formats, binarization, and the missing-data errors."""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from conftest import write_amat
from vaelik.data import MNIST, BinarizedMNIST, DataNotFoundError, EmbeddedMNIST, ImageDataModule
from vaelik.data import binarized_mnist as bm
from vaelik.data.binarize import ImageTensorDataset
from vaelik.subsets import evenly_spaced, example_indices


def test_mnist_reads_idx_files_and_holds_out_validation(mnist_dir):
    source = MNIST(str(mnist_dir), download=False, val_size=20)
    train, val, test = (source.load(s) for s in ("train", "val", "test"))
    assert (train.shape, val.shape, test.shape) == (
        (100, 1, 28, 28),
        (20, 1, 28, 28),
        (30, 1, 28, 28),
    )
    assert train.dtype == torch.uint8 and int(train.max()) > 1
    raw = (mnist_dir / "MNIST/raw/t10k-images-idx3-ubyte").read_bytes()[16:]
    assert torch.equal(test.flatten(), torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    # train and val are disjoint and together are the training file
    everything = torch.cat([train, val]).flatten(1)
    assert len({tuple(r.tolist()) for r in everything}) == 120


@pytest.mark.parametrize("damage", ["truncated", "bad type byte"])
def test_a_damaged_idx_file_is_named_as_unreadable_not_missing(mnist_dir, damage):
    images = mnist_dir / "MNIST/raw/t10k-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]  # as by an interrupted copy
    else:
        data[2] = 0x07  # the IDX type byte: 0x08 is unsigned bytes, 0x07 is no type
    images.write_bytes(bytes(data))
    with pytest.raises(DataNotFoundError, match="cannot be read.*truncated or not in the"):
        MNIST(str(mnist_dir), download=False).load("test")


def test_mnist_missing_offline_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="MNIST/raw.*downloading is off") as off:
        MNIST(str(tmp_path), download=False).load("test")
    assert "allow the download" in str(off.value)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="downloading it failed.*no network") as failed:
        MNIST(str(tmp_path / "fresh"), download=True).load("test")
    # it tried: no advice to allow what was allowed
    assert "allow the download" not in str(failed.value) and "Copy the files" in str(failed.value)


def test_amat_fast_and_general_parsers_agree(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2, (7, 784))
    write_amat(tmp_path / "a.amat", values)
    (tmp_path / "b.amat").write_text("".join("\t".join(map(str, r)) + "\r\n" for r in values))
    assert np.array_equal(bm.parse_amat(tmp_path / "a.amat"), values)
    assert np.array_equal(bm.parse_amat(tmp_path / "b.amat"), values)


def test_amat_rejects_other_values_and_lengths(tmp_path):
    (tmp_path / "bad.amat").write_text(" ".join(["0"] * 783) + "\n")
    with pytest.raises(ValueError, match="784"):
        bm.parse_amat(tmp_path / "bad.amat")
    (tmp_path / "two.amat").write_text(" ".join(["2"] * 784) + "\n")
    with pytest.raises(ValueError, match="0 and 1"):
        bm.parse_amat(tmp_path / "two.amat")


def test_binarized_mnist_reads_the_source_and_writes_nothing(binarized_mnist_dir):
    folder = binarized_mnist_dir / "BinarizedMNIST"
    before = sorted(folder.iterdir())
    # a cache left by vaelik 0.2 is not read: the source file is the only truth
    np.save(folder / "binarized_mnist_valid.npy", np.zeros((40, 784), dtype=np.uint8))
    source = BinarizedMNIST(str(binarized_mnist_dir), download=False)
    val = source.load("val")
    assert val.shape == (40, 1, 28, 28) and set(val.unique().tolist()) == {0, 1}
    (folder / "binarized_mnist_valid.npy").unlink()
    assert sorted(folder.iterdir()) == before  # the data folder may be shared or read-only
    # a corrected source file is read at once, whatever its modification time
    corrected = 1 - val.reshape(40, 784).numpy()
    write_amat(folder / "binarized_mnist_valid.amat", corrected)
    os.utime(folder / "binarized_mnist_valid.amat", (0, 0))
    assert torch.equal(source.load("val"), torch.from_numpy(corrected).reshape(40, 1, 28, 28))


def test_binarized_mnist_missing_without_download(tmp_path):
    with pytest.raises(DataNotFoundError, match="binarized_mnist_test.amat.*paths.data_dir"):
        BinarizedMNIST(str(tmp_path), download=False).load("test")


def test_binarized_mnist_download_failure_is_clear(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(bm.urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="downloading .* failed.*no network"):
        BinarizedMNIST(str(tmp_path)).load("train")
    assert not list((tmp_path / "BinarizedMNIST").glob("*"))  # no partial file left


def test_binarized_mnist_downloads_and_checks_sha256(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    write_amat(tmp_path / "served.amat", rng.integers(0, 2, (3, 784)))
    payload = (tmp_path / "served.amat").read_bytes()
    urls = []

    def serve(url, timeout):
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(bm.urllib.request, "urlopen", serve)
    data_dir = tmp_path / "data"
    # a payload that is not the published file fails its checksum and is not kept
    with pytest.raises(DataNotFoundError, match="sha256"):
        BinarizedMNIST(str(data_dir)).load("test")
    assert urls == [f"{bm.BASE_URL}/binarized_mnist_test.amat"]
    assert not (data_dir / "BinarizedMNIST/binarized_mnist_test.amat").exists()
    monkeypatch.setitem(
        bm.SHA256, "binarized_mnist_test.amat", __import__("hashlib").sha256(payload).hexdigest()
    )
    assert BinarizedMNIST(str(data_dir)).load("test").shape == (3, 1, 28, 28)


def test_embedded_mnist_splits_are_disjoint_real_digits():
    source = EmbeddedMNIST(val_size=500, test_size=500)
    splits = [source.load(s) for s in ("train", "val", "test")]
    assert [len(s) for s in splits] == [4000, 500, 500]
    assert all(s.dtype == torch.uint8 and s.shape[1:] == (1, 28, 28) for s in splits)
    mean = torch.cat(splits).float().mean().item()
    assert 25 < mean < 45  # MNIST's mean pixel is about 33


def test_binarization_modes():
    images = torch.tensor([0, 100, 128, 255], dtype=torch.uint8).reshape(4, 1, 1, 1)
    none = ImageTensorDataset(images, "8bit", "none")
    assert none[3][0].item() == 255.0 and none[3][1] == 3
    threshold = ImageTensorDataset(images, "8bit", "threshold")
    assert [threshold[i][0].item() for i in range(4)] == [0, 0, 1, 1]
    static = [
        ImageTensorDataset(images.repeat(500, 1, 1, 1), "8bit", "static", seed=s) for s in (0, 0, 1)
    ]
    assert torch.equal(static[0].data, static[1].data) and not torch.equal(
        static[0].data, static[2].data
    )
    dynamic = ImageTensorDataset(images.repeat(2000, 1, 1, 1), "8bit", "dynamic")
    draws = torch.stack([dynamic[i][0] for i in range(1, 8000, 4)])  # all the 100/255 pixels
    assert abs(draws.mean().item() - 100 / 255) < 0.04
    with pytest.raises(ValueError, match="binarize"):
        ImageTensorDataset(images, "8bit", "sometimes")


def test_datamodule_kind_and_shape_check(binarized_mnist_dir):
    good = ImageDataModule(
        BinarizedMNIST(str(binarized_mnist_dir), download=False), shape=[1, 28, 28]
    )
    assert good.kind == "binary" and good.num_dims == 784
    x, index = next(iter(good.loader("val")))
    assert x.shape == (40, 1, 28, 28) and index.tolist() == list(range(40))
    bad = ImageDataModule(
        BinarizedMNIST(str(binarized_mnist_dir), download=False), shape=[3, 32, 32]
    )
    with pytest.raises(ValueError, match="data.shape"):
        bad.dataset("train")


@pytest.mark.parametrize(
    ("total", "limit", "expected"),
    [
        (10, None, list(range(10))),
        (10, 20, list(range(10))),
        (10, 5, [0, 2, 4, 6, 8]),
        (10, 3, [0, 3, 6]),
        (10_000, 4, [0, 2_500, 5_000, 7_500]),
    ],
)
def test_a_limited_number_of_examples_is_spread_over_the_split(total, limit, expected):
    dataset = torch.utils.data.TensorDataset(torch.zeros(total))
    assert example_indices(dataset, limit) == expected
    assert evenly_spaced([5, 7, 9, 11], 2) == [5, 9]  # a subset of a subset


def test_a_known_file_from_a_mirror_must_hold_the_published_bytes(tmp_path):
    """A file:// copy with the right name but other bytes fails the sha256 check, whose message
    names both digests, and leaves nothing behind; the same bytes as published pass."""
    rng = np.random.default_rng(3)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_amat(mirror / "binarized_mnist_test.amat", rng.integers(0, 2, (3, 784)))
    tampered = (mirror / "binarized_mnist_test.amat").read_bytes()
    digest = __import__("hashlib").sha256(tampered).hexdigest()
    source = BinarizedMNIST(str(tmp_path / "data"), base_url=mirror.as_uri())
    with pytest.raises(
        DataNotFoundError,
        match=f"sha256 {digest}, expected {bm.SHA256['binarized_mnist_test.amat']}",
    ):
        source.load("test")
    assert not list((tmp_path / "data" / "BinarizedMNIST").glob("*"))
    with pytest.MonkeyPatch.context() as patch:  # a mirror of the (here: tampered) published file
        patch.setitem(bm.SHA256, "binarized_mnist_test.amat", digest)
        assert source.load("test").shape == (3, 1, 28, 28)
