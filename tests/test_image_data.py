"""8-bit image datasets: torchvision loaders on files in the real formats, the embedded RGB
patches, and the heads x networks x datasets that compose (and those that must not)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets
from hydra.utils import instantiate

from conftest import compose_config, write_idx_images, write_idx_labels
from vaelik.data import CIFAR10, SVHN, DataNotFoundError, EmbeddedRGBPatches, FashionMNIST
from vaelik.inference.objectives import Elbo
from vaelik.models.factory import build_model
from vaelik.models.likelihoods import IncompatibleDataError


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """cifar-10-batches-py with pickled batches of 20 images each (torchvision's checksums of
    the real files are skipped: these are fixtures in the same format)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        images[name] = data
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": list(rng.integers(0, 10, 20))}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    return tmp_path, images


def test_cifar10_reads_pickled_batches(cifar_dir):
    data_dir, images = cifar_dir
    source = CIFAR10(str(data_dir), download=False, val_size=10)
    train, val, test = (source.load(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (90, 10, 20)
    assert test.shape[1:] == (3, 32, 32) and test.dtype == torch.uint8
    # CIFAR's rows are 1024 red, 1024 green, 1024 blue values, row-major
    expected = torch.from_numpy(images["test_batch"]).view(20, 3, 32, 32)
    assert torch.equal(test, expected)


def test_svhn_reads_mat_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("test", 12)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        scipy.io.savemat(
            tmp_path / f"{split}_32x32.mat", {"X": x, "y": rng.integers(1, 11, (n, 1))}
        )
        if split == "test":
            expected = torch.from_numpy(np.transpose(x, (3, 2, 0, 1)).copy())
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    source = SVHN(str(tmp_path), download=False, val_size=5)
    assert len(source.load("train")) == 25 and len(source.load("val")) == 5
    assert torch.equal(source.load("test"), expected)


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(2)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 10)):
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    source = FashionMNIST(str(tmp_path), download=False, val_size=8)
    assert source.load("train").shape == (32, 1, 28, 28) and source.load("test").shape == (
        10,
        1,
        28,
        28,
    )


@pytest.mark.parametrize("source", [CIFAR10, SVHN, FashionMNIST])
def test_missing_torchvision_data_offline_says_where_to_put_it(source, tmp_path):
    with pytest.raises(DataNotFoundError, match="paths.data_dir"):
        source(str(tmp_path), download=False).load("test")


def test_embedded_rgb_patches():
    source = EmbeddedRGBPatches()
    splits = [source.load(s) for s in ("train", "val", "test")]
    assert [len(s) for s in splits] == [1550, 200, 200]
    assert all(s.shape[1:] == (3, 32, 32) and s.dtype == torch.uint8 for s in splits)
    assert int(splits[0].min()) >= 0 and int(splits[0].max()) == 255
    assert splits[0].float().std() > 30  # real photographs, not a constant


LIKELIHOODS = [
    "bernoulli",
    "discretized_logistic",
    "discretized_logistic_mixture",
    "categorical",
    "gaussian",
]
NETWORKS = ["mlp", "conv", "resnet"]
DATA = [
    "embedded_mnist",
    "binarized_mnist",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "svhn",
    "embedded_rgb",
]


def random_batch(kind: str, shape, n: int = 2) -> torch.Tensor:
    if kind == "binary":
        return torch.randint(0, 2, (n, *shape)).float()
    return torch.randint(0, 256, (n, *shape)).float()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("network", NETWORKS)
def test_heads_networks_and_datasets_compose_or_fail_clearly(likelihood, network, tmp_path):
    for data in DATA:
        cfg = compose_config(
            "train",
            [
                f"data={data}",
                f"likelihood={likelihood}",
                f"encoder={network}",
                f"decoder={network}",
                "latent_dim=4",
            ]
            + (["decoder.hidden=[16]", "encoder.hidden=[16]"] if network == "mlp" else []),
            output_dir=str(tmp_path),
        )
        datamodule = instantiate(cfg.data)  # loads nothing until a split is used
        head = instantiate(cfg.likelihood)
        if datamodule.kind not in head.accepts:
            with pytest.raises(IncompatibleDataError, match=f"likelihood={likelihood}"):
                build_model(cfg, datamodule.kind)
            continue
        model = build_model(cfg, datamodule.kind)
        x = random_batch(datamodule.kind, datamodule.shape)
        terms = Elbo()(model, x)
        assert terms.elbo.shape == (2,) and torch.isfinite(terms.elbo).all(), (
            data,
            likelihood,
            network,
        )
        assert model.sample(2).shape == (2, *datamodule.shape)


def test_every_8bit_head_has_a_dataset_and_network_that_compose(tmp_path):
    """data=cifar10 likelihood=discretized_logistic_mixture encoder=resnet decoder=resnet, as
    the issue names it, builds and trains one step without editing any file."""
    cfg = compose_config(
        "train",
        [
            "data=cifar10",
            "likelihood=discretized_logistic_mixture",
            "encoder=resnet",
            "decoder=resnet",
        ],
        output_dir=str(tmp_path),
    )
    model = build_model(cfg, "8bit")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = Elbo()(model, random_batch("8bit", (3, 32, 32), n=4)).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and cfg.decoder.out_shape[0] == 50
