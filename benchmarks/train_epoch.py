"""Training throughput: a ``vaelik-train`` epoch against a plain PyTorch loop over the same model,
objective, optimiser and data, in the same run.

- plain loop: the model that ``experiment=binarized_mnist`` builds (MLP 784-500-500, 50 latents,
  tanh), its ELBO objective and Adam, over the training images held in one tensor (shuffled
  slices of 100), then the ELBO over the validation images; no logging, no checkpoints.
- pythae 0.1.2 (``pip install -e ".[bench]"``; skipped when it is not installed): its ``VAE``
  with the same encoder and decoder networks (tanh MLPs, Bernoulli "bce" reconstruction) and
  its ``BaseTrainer`` (Adam, batch 100, its evaluation pass over the validation images).
- ``vaelik-train`` with ``callbacks=none logger=none`` (Lightning, DataLoader, metric logging,
  the finite-loss check), then with the default callbacks and the per-epoch log p(x) estimate on
  (``callbacks.log_likelihood.every_n_epochs=1``, its K and examples as configured), whose
  cost is reported apart.

A ``vaelik-train`` epoch is timed by :class:`EpochClock`, a callback this script adds to the run
(``+callbacks.epoch_clock``), from the start of one training epoch to the start of the next
(validation included), over epochs 2..E so that start-up is not counted. Printed: seconds per
epoch for each and the ratios.

    python benchmarks/train_epoch.py --data-dir /path/to/data --epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXPERIMENT = "experiment=binarized_mnist"


def compose(data_dir: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from vaelik.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(
            "train", [EXPERIMENT, f"paths.data_dir={data_dir}", "paths.output_dir=unused"]
        )


def images(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation images of ``cfg.data``, each stacked into one tensor."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train, val = (datamodule.dataset(split) for split in ("train", "val"))
    return (
        torch.stack([train[i][0] for i in range(len(train))]),
        torch.stack([val[i][0] for i in range(len(val))]),
    )


def plain_epoch_seconds(data_dir: str, epochs: int) -> float:
    """Seconds per epoch (train + validation ELBO) of a plain loop, epochs 2..E."""
    from hydra.utils import instantiate

    from vaelik.models.factory import build_model

    cfg = compose(data_dir)
    train_x, val_x = images(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, "binary")
    objective = instantiate(cfg.objective)
    optimizer = instantiate(cfg.optim.optimizer)(model.parameters())
    batch = int(cfg.data.batch_size)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x))
        for first in range(0, len(order), batch):
            loss = objective(model, train_x[order[first : first + batch]], float(epoch)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for first in range(0, len(val_x), batch):
                objective(model, val_x[first : first + batch], float(epoch))
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / (epochs - 1)


class EpochClock(pl.Callback):
    """Writes the wall-clock time of every training epoch's start, and of the fit's end, one per
    line, to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _stamp(self) -> None:
        with self.path.open("a") as file:
            file.write(f"{time.perf_counter()}\n")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._stamp()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._stamp()


def pythae_epoch_seconds(data_dir: str, epochs: int) -> float | None:
    """Seconds per epoch (train + its evaluation pass) of pythae's trainer, epochs 2..E; None
    when pythae is not installed."""
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
        from pythae.trainers.training_callbacks import TrainingCallback
    except ImportError:
        return None
    cfg = compose(data_dir)
    train_x, val_x = images(cfg)
    latent, hidden = int(cfg.latent_dim), list(cfg.encoder.hidden)
    pixels = train_x[0].numel()

    def tanh_mlp(sizes: list[int]) -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.Tanh()]
        return torch.nn.Sequential(*layers[:-1])  # no tanh after the last layer

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = tanh_mlp([pixels, *hidden, 2 * latent])

        def forward(self, x):
            loc, log_var = self.net(x.flatten(1)).chunk(2, dim=-1)
            return ModelOutput(embedding=loc, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = tanh_mlp([latent, *reversed(hidden), pixels])

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, *shape))

    shape = tuple(train_x.shape[1:])
    stamps: list[float] = []

    class Clock(TrainingCallback):
        def on_epoch_begin(self, training_config, **kwargs):
            stamps.append(time.perf_counter())

        def on_train_end(self, training_config, **kwargs):
            stamps.append(time.perf_counter())

    config = VAEConfig(input_dim=shape, latent_dim=latent, reconstruction_loss="bce")
    model = VAE(config, encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as folder:
        training = BaseTrainerConfig(
            output_dir=folder,
            num_epochs=epochs,
            learning_rate=float(cfg.optim.optimizer.lr),
            per_device_train_batch_size=int(cfg.data.batch_size),
            per_device_eval_batch_size=int(cfg.data.batch_size),
            no_cuda=True,
        )
        train, val = (BaseDataset(x, torch.zeros(len(x))) for x in (train_x, val_x))
        trainer = BaseTrainer(model, train, val, training, callbacks=[Clock()])
        trainer.train()
    return (stamps[-1] - stamps[1]) / (epochs - 1)


def vaelik_epoch_seconds(data_dir: str, epochs: int, threads: int, extra: list[str]) -> float:
    """Seconds per epoch of ``vaelik-train`` (epochs 2..E), from :class:`EpochClock`."""
    with tempfile.TemporaryDirectory() as folder:
        stamps_file = Path(folder) / "epochs.txt"
        command = [
            sys.executable,
            "-m",
            "vaelik.cli.train",
            EXPERIMENT,
            f"paths.data_dir={Path(data_dir).resolve()}",  # the run starts in a scratch folder
            f"trainer.max_epochs={epochs}",
            "logger=none",
            f"hydra.run.dir={folder}/run",
            "+callbacks.epoch_clock._target_=train_epoch.EpochClock",
            f"+callbacks.epoch_clock.path={stamps_file}",
            *extra,
        ]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
        if done.returncode:
            raise SystemExit(f"vaelik-train failed:\n{done.stderr[-3000:]}")
        stamps = [float(line) for line in stamps_file.read_text().split()]
    return (stamps[-1] - stamps[1]) / (epochs - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder holding BinarizedMNIST/")
    parser.add_argument("--epochs", type=int, default=3, help="E >= 2; epoch 1 is not timed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch is not timed)")
    torch.set_num_threads(args.threads)
    plain = plain_epoch_seconds(args.data_dir, args.epochs)
    pythae = pythae_epoch_seconds(args.data_dir, args.epochs)
    bare = vaelik_epoch_seconds(args.data_dir, args.epochs, args.threads, ["callbacks=none"])
    full = vaelik_epoch_seconds(
        args.data_dir, args.epochs, args.threads, ["callbacks.log_likelihood.every_n_epochs=1"]
    )
    print(f"{EXPERIMENT}, {args.threads} threads, epochs 2..{args.epochs} timed")
    print(f"  plain PyTorch loop                      {plain:7.2f} s/epoch")
    if pythae is not None:
        print(f"  pythae 0.1.2 BaseTrainer                {pythae:7.2f} s/epoch")
    print(f"  vaelik-train, callbacks=none            {bare:7.2f} s/epoch")
    print(f"  vaelik-train, default callbacks, log p(x) every epoch {full:7.2f} s/epoch")
    print(f"vaelik (no callbacks) / plain loop: {bare / plain:.2f}x (target <= 1.10)")
    if pythae is None:
        print('pythae is not installed (pip install -e ".[bench]"): no comparison')
    else:
        print(f"vaelik (no callbacks) / pythae: {bare / pythae:.2f}x (target <= 1.00)")
    print(f"per-epoch callbacks' cost: {full - bare:.2f} s/epoch")


if __name__ == "__main__":
    main()
