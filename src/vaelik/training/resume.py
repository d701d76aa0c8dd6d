"""What makes a resumed run the same run: its checkpoint, its settings and its random streams.

Lightning restores weights, optimiser, epoch and step. Two more things decide what the resumed
run computes:

- **Random states.** The ELBO's draws and each epoch's shuffling come from the global torch
  generator (and numpy's and Python's, for anything that uses them). Their states are written
  into every checkpoint (``RANDOM_STATES_KEY``) and restored when the checkpoint is loaded and
  again after Lightning's sanity-check validation (which draws too), before the training
  iterator draws its seed, so a killed-and-resumed run continues the uninterrupted run's
  streams.
- **Settings.** Lightning restores the optimiser's learning rate from the checkpoint, so a new
  ``optim.optimizer.lr`` on resume would be silently ignored. Every setting outside
  ``RESUMABLE_CHANGES`` (how long to train, what to log, where files are) must equal the
  checkpoint's; a difference is refused, naming each key with both values.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelik.errors import CheckpointError

RANDOM_STATES_KEY = "vaelik_random_states"

# settings that may differ on resume: the training length and schedule, what is logged and
# measured along the way, and where the files are; everything else is the run itself
RESUMABLE_CHANGES = (
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "hydra",
    "ckpt_path",
    "run_name",
    "run_group",
    "task_name",
    "optimized_metric",
    "estimator",
    "proposal",
    "data.source.data_dir",
    "data.source.download",
    "data.num_workers",
    "data.eval_batch_size",
)


def resume_checkpoint(ckpt_path: str | None, output_dir: Path) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` itself, or for ``last`` the run
    directory's ``checkpoints/last.ckpt`` (resume a run with ``hydra.run.dir=<its directory>
    ckpt_path=last``). A ``last`` that does not exist is an error, not a fresh start."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise CheckpointError(
                f"ckpt_path=last but {path} does not exist: resume a run with "
                "hydra.run.dir=<that run's directory> ckpt_path=last, or give ckpt_path=PATH"
            )
        return str(path)
    return str(ckpt_path)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` for a nested mapping (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resumable(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE_CHANGES)


#: ``model=hvae`` as configs stored it before ``model.num_layers``: the VAE class around a
#: two-layer guide and prior, now written as one HierarchicalVAE with the same parameters
TWO_LAYER_GUIDE = "vaelik.models.hierarchical.TwoLayerGuide"


def current_layout(config: dict) -> dict:
    """``config`` with a two-layer model stored in the earlier layout (``model.guide`` a
    TwoLayerGuide of ``top``, ``lower_encoder``, ``lower``; ``model.prior`` a TwoLayerPrior of
    ``top``, ``conditional``) rewritten as today's ``HierarchicalVAE`` node, which builds the
    same modules, so that resuming such a run compares like with like."""
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("guide"), dict):
        return config
    guide, prior = model["guide"], model.get("prior", {})
    if guide.get("_target_") != TWO_LAYER_GUIDE:
        return config
    rest = {k: v for k, v in model.items() if k not in ("_target_", "guide", "prior", "decoder")}
    hierarchical = {
        "_target_": "vaelik.models.hierarchical.HierarchicalVAE",
        "guide": guide.get("top"),
        "lower_encoder": guide.get("lower_encoder"),
        "lower": guide.get("lower"),
        "prior": prior.get("top"),
        "conditional": prior.get("conditional"),
        "decoder": model.get("decoder"),
        "num_layers": 2,
        **rest,
    }
    return {**config, "model": hierarchical}


def check_same_run(saved: Any, config: Any, path: str) -> None:
    """Raise ``CheckpointError`` if ``config`` (the resumed run's, resolved) changes a setting of
    ``saved`` (the checkpoint's) that is not in ``RESUMABLE_CHANGES``. Settings that only one
    of them has (added or removed by another vaelik version) are not compared; a model stored
    in an earlier layout is compared in today's (:func:`current_layout`)."""
    before, after = flatten(current_layout(saved)), flatten(config)
    changed = sorted(
        key
        for key in before.keys() & after.keys()
        if not resumable(key) and before[key] != after[key]
    )
    if changed:
        listed = "; ".join(f"{key}: {before[key]!r} -> {after[key]!r}" for key in changed[:8])
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise CheckpointError(
            f"resuming {path} would change the run it continues: {listed}{more}. A resumed run "
            "keeps its model, objective, optimiser and data (Lightning restores the optimiser's "
            "state, so a new learning rate would be ignored); only how long it trains and what it "
            "logs may change (trainer, callbacks, logger, paths, the per-epoch estimator and "
            "proposal, the data folder). Resume with the run's own settings, or start a new "
            "run in a new folder."
        )


def random_states() -> dict[str, Any]:
    """The global random states (torch CPU and CUDA, numpy, Python), in types that load with
    ``torch.load(weights_only=True)``."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    keys = np.asarray(keys)
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Set the global random states to ``states`` (from :func:`random_states`)."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
