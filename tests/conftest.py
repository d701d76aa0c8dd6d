"""Shared fixtures: offline environment, config composition, data files in the real formats."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from vaelik.config import config_dir
from vaelik.inference.plan import resolve

DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


@pytest.fixture(autouse=True)
def offline_env(monkeypatch):
    """No network, no wandb account, no distributed leftovers between tests."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def own_results_store(tmp_path, monkeypatch):
    """Every test's commands keep their results store in the test's own folder (the default,
    outputs/store.sqlite, would be shared by every test and the checkout)."""
    monkeypatch.setenv("VAELIK_STORE", str(tmp_path / "store.sqlite"))


def compose_config(
    name: str = "train", overrides: list[str] | None = None, output_dir: str = "out"
):
    """Compose ``conf/{name}.yaml`` with overrides, outside a Hydra run (paths.output_dir set)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(name, overrides=[f"paths.output_dir={output_dir}", *(overrides or [])])


def run_cli(main, argv: list[str], monkeypatch) -> None:
    """Run a Hydra entry point in this process as if from the command line."""
    monkeypatch.setattr(sys, "argv", ["vaelik", *argv])
    GlobalHydra.instance().clear()
    main()


def run_cli_failing(main, argv: list[str], monkeypatch, capsys) -> str:
    """Run a Hydra entry point that must fail; return what it printed (Hydra exits with 1)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv, monkeypatch)
    assert exit_info.value.code != 0
    captured = capsys.readouterr()
    return captured.err + captured.out


def user_error(output: str) -> str:
    """The one line a command prints for a vaelik user error, with no traceback."""
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if ": error: " in line]
    assert len(lines) == 1, output
    return lines[0]


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 ubyte file: magic 0x00000803, count, rows, cols (big-endian), then pixels."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 0x803, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1 ubyte file: magic 0x00000801, count, then labels."""
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_amat(path: Path, binary: np.ndarray) -> None:
    """Binarized MNIST .amat: one image a line, 784 values separated by single spaces."""
    path.write_text("".join(" ".join(str(int(v)) for v in row) + "\n" for row in binary))


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A data folder with MNIST/raw/ in torchvision's layout: 120 train and 30 test images."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 120), ("t10k", 30)):
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return tmp_path


@pytest.fixture
def binarized_mnist_dir(tmp_path) -> Path:
    """A data folder with BinarizedMNIST/*.amat: 100 train, 40 valid, 30 test images."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "BinarizedMNIST"
    folder.mkdir()
    for split, n in (("train", 100), ("valid", 40), ("test", 30)):
        write_amat(folder / f"binarized_mnist_{split}.amat", rng.integers(0, 2, (n, 784)))
    return tmp_path


os.environ.setdefault("WANDB_MODE", "offline")


def plan_for(model, estimator, proposal):
    """``estimator`` resolved for ``model`` with ``proposal`` as the estimator's own rules have
    it: AIS's automatic start asked for by name where it is ``auto``, an estimator with draws of
    its own (``prior``, quadrature) given no proposal; a combination that cannot run is refused
    (a test's shorthand for :func:`vaelik.resolve`)."""
    if estimator.proposal is not None:
        return resolve(model, estimator)
    if getattr(estimator, "prior_share", None) == "auto":
        return resolve(model, estimator, proposal, prior_share="auto")
    return resolve(model, estimator, proposal)


def estimate_with(estimator, model, x, index, proposal):
    """Per-example estimates of ``x`` (dataset indices ``index``) by :func:`plan_for`."""
    return plan_for(model, estimator, proposal).estimate(x, index)
