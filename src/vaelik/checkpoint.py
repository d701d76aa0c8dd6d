"""Reading vaelik checkpoints back: the run's config and the VAE's weights, with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaelik.errors import CheckpointError

CONFIG_KEY = "vaelik_config"
#: training wall-clock seconds so far (summed over resumed fits) and the training machine
TRAIN_SECONDS_KEY = "vaelik_train_seconds"
MACHINE_KEY = "vaelik_machine"
MODEL_PREFIX = "model."


@dataclass
class VAECheckpoint:
    """The resolved training config and the VAE's state dict (keys without ``model.``)."""

    path: Path
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    #: epochs completed (Lightning's 0-based ``epoch`` of the save, plus one) and optimiser
    #: steps, the training seconds and machine (None where a checkpoint did not record them)
    epochs: int | None = None
    steps: int | None = None
    train_seconds: float | None = None
    machine: str | None = None
    #: Lightning's callback states (``callbacks`` entry), as stored: not yet validated
    callback_states: Any = None


def read_checkpoint(path: str | Path) -> VAECheckpoint:
    """Load a checkpoint written by ``vaelik-train``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: pass ckpt_path=PATH to a .ckpt file, e.g. "
            "outputs/train/runs/<time>/checkpoints/last.ckpt"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a text file fails with KeyError, a truncated one with EOFError...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); it is corrupt or "
            "not a PyTorch checkpoint. Use another checkpoint of the run (last.ckpt or "
            "best-*.ckpt)."
        ) from error
    if not isinstance(raw, dict) or CONFIG_KEY not in raw or "state_dict" not in raw:
        raise CheckpointError(
            f"checkpoint {path} was not written by vaelik-train: it has no '{CONFIG_KEY}' entry "
            "with the run's config, so the model cannot be rebuilt from it"
        )
    if "model" not in raw[CONFIG_KEY]:
        raise CheckpointError(
            f"checkpoint {path} was written by vaelik 0.1, whose config has no 'model' group "
            "(one latent layer, before guides and priors were configurable); vaelik 0.2 cannot "
            "rebuild it: retrain it with this version, or evaluate it with vaelik 0.1"
        )
    state = {
        key[len(MODEL_PREFIX) :]: value
        for key, value in raw["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    broken = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if broken:
        raise CheckpointError(
            f"checkpoint {path} holds NaN or infinite weights ({', '.join(broken[:4])}"
            f"{', ...' if len(broken) > 4 else ''}): the run had diverged when it was saved. Use "
            "an earlier checkpoint of the run (best-*.ckpt), or retrain with a lower learning "
            "rate (optim.optimizer.lr) or gradient clipping (trainer.gradient_clip_val)."
        )
    return VAECheckpoint(
        path=path,
        config=raw[CONFIG_KEY],
        state_dict=state,
        epochs=raw["epoch"] + 1 if isinstance(raw.get("epoch"), int) else None,
        steps=raw.get("global_step"),
        train_seconds=raw.get(TRAIN_SECONDS_KEY),
        machine=raw.get(MACHINE_KEY),
        callback_states=raw.get("callbacks"),
    )


def describe_machine() -> str:
    """The machine running this process, in a line: CPU model and cores used by torch, and the
    GPU if one is used."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    threads = torch.get_num_threads()
    text = f"{cpu}, {threads} thread{'' if threads == 1 else 's'}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def load_weights(model: nn.Module, checkpoint: VAECheckpoint) -> None:
    """Copy the checkpoint's weights into ``model``; any missing, extra or misshapen key fails."""
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not match the model built from its config: {error}"
        ) from error
