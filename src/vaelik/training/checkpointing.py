"""Lightning's ``ModelCheckpoint``, with a ``last.ckpt`` that always holds the latest epoch and a
resume that takes no path from the checkpoint it resumes.

**The latest epoch.** Lightning 2.5-2.6 writes ``last.ckpt`` only in validation epochs that also
save a top-k checkpoint, and at the end of fit only if no ``last.ckpt`` was ever written: a run
whose last epochs do not improve the monitored metric would end with ``last.ckpt`` several epochs
old, and resuming it would train those epochs again. This subclass also writes ``last.ckpt`` at
the end of every training epoch (after that epoch's validation and after Lightning's own saving,
which it must not pre-empt: Lightning skips a step it has already saved) and at the end of fit (a
time limit, early stopping, the last epoch), whenever the step has moved since it was last
written.

**Paths in a checkpoint.** A checkpoint stores the callback's state: its folder (``dirpath``)
and the files it tracks (``best_model_path``, ``kth_best_model_path``, ``last_model_path`` and
the keys of ``best_k_models``). Lightning restores them on resume and later *deletes* the
"old" files they name (recursively, through fsspec), checking only that a plain local path lies
under its folder: ``local:///home``, ``file:///home``, ``simplecache::file:///home`` or
``<folder>/../../home`` would pass. A checkpoint is data, so :func:`resumable_state` decides what
of it a resumed run may take:

- every path field must be a plain path (no ``scheme://``, no ``a::b`` chain: vaelik never
  writes one) that, with ``~`` expanded, ``..`` resolved and symbolic links followed, names a
  file inside the checkpoint's own folder; anything else is refused in one line, before the
  resumed run writes anything (:func:`check_resumable_states`);
- the state is then rebuilt from the new run's folder: a tracked file is kept where a file of
  the same name exists there (the same file when the run resumes in its own folder, its copy
  when the run folder was copied or moved), so top-k keeping and ``last.ckpt`` go on; a run
  resumed into a new folder tracks none of the old folder's files and never touches them.

And whatever the state says, this class deletes only regular files inside its own folder
(:meth:`ModelCheckpoint._remove_checkpoint`).

The class keeps the name ``ModelCheckpoint`` so that its state in a checkpoint (best score and
path, stored under a key built from the class name) is found again when runs written with
Lightning's own class are resumed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from vaelik.errors import CheckpointError

log = logging.getLogger(__name__)

#: the fields of Lightning's ModelCheckpoint state that hold one file path each
PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")
#: the fields that hold one score each (so do the values of ``best_k_models``)
SCORE_FIELDS = ("best_model_score", "current_score", "kth_value")
#: each path field with the score that belongs to its file
PATH_AND_SCORE = (
    ("best_model_path", "best_model_score"),
    ("kth_best_model_path", "kth_value"),
    ("last_model_path", None),
)


class ModelCheckpoint(LightningModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` (with ``save_last``) is the latest epoch and the
    end of fit, which restores only the paths :func:`resumable_state` allows, and which deletes
    nothing but files inside its own folder."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_in_last: int | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.save_latest(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.save_latest(trainer)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self.step_in_last = trainer.global_step

    def save_latest(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this step (or this is a sanity check)."""
        if not self.save_last or trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        if self.step_in_last == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state that :func:`resumable_state` keeps (none, for another folder's)."""
        kept = resumable_state(state_dict, self.dirpath, "the checkpoint resumed")
        if kept is not None:
            super().load_state_dict(kept)

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Delete ``filepath`` only if it is a file (or nothing) inside this callback's folder;
        anything else is kept and named in a warning."""
        if self.dirpath is None or not os.path.isdir(self.dirpath):
            inside = False
        else:
            inside = plain_path_inside(filepath, str(self.dirpath)) is not None
        if not inside or os.path.isdir(filepath):
            log.warning(
                "kept %r: ModelCheckpoint deletes only its own checkpoint files in %s",
                filepath,
                self.dirpath,
            )
            return
        super()._remove_checkpoint(trainer, filepath)


def is_plain_path(value: str) -> bool:
    """False for a URL (``scheme://...``) or an fsspec chain (``a::b``), which vaelik never
    writes into a checkpoint and which fsspec may map onto any folder of the disk."""
    return "://" not in value and "::" not in value


def resolved(path: str) -> Path:
    """``path`` with ``~`` expanded, made absolute, ``..`` resolved and links followed."""
    return Path(os.path.realpath(os.path.expanduser(path)))


def plain_path_inside(value: str, folder: str) -> Path | None:
    """The resolved ``value`` if it is a plain path naming something strictly inside the
    resolved ``folder``, else None."""
    if not is_plain_path(value) or not is_plain_path(folder):
        return None
    path, root = resolved(value), resolved(folder)
    return path if root in path.parents else None


def stored_paths(state: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """``(field, value)`` for every path a ModelCheckpoint state names (empty ones left out)."""
    for field in PATH_FIELDS:
        value = state.get(field)
        if not (value is None or (isinstance(value, str) and not value)):
            yield field, value
    for value in tracked(state):
        yield "best_k_models", value


def tracked(state: Mapping[str, Any]) -> Mapping[Any, Any]:
    """``best_k_models`` of a ModelCheckpoint state (checked to be a mapping: :func:`check_state`),
    empty where it is missing."""
    best = state.get("best_k_models")
    return {} if best is None else best


def resumable_state(
    state: Any, dirpath: str | os.PathLike | None, source: str
) -> dict[str, Any] | None:
    """What a run whose checkpoints go to ``dirpath`` may restore of ``state``, the
    ModelCheckpoint state stored in checkpoint ``source``; None for nothing.

    Every path in ``state`` must be a plain path inside the state's own folder (its stored
    ``dirpath``; ``dirpath`` where none is stored), and every score a number: otherwise
    ``CheckpointError`` (:func:`check_state`). The state is then rebuilt from the run folder:
    each tracked file is looked up under ``dirpath`` by its name relative to the state's folder
    (the same file when that folder is ``dirpath``; its copy when the run folder was copied or
    moved) and kept only where that file exists, with its score; the rest is dropped, so a run
    resumed into a new folder tracks no file of the old one. With ``dirpath`` None (not known
    yet) the state is only checked."""
    own_folder = check_state(state, dirpath, source)
    if dirpath is None or own_folder is None:
        return None
    origin, here = resolved(own_folder), resolved(str(dirpath))

    def rebuilt(path: str) -> str | None:
        candidate = here / resolved(path).relative_to(origin)
        return str(candidate) if candidate.is_file() else None

    best = {}
    for path, score in tracked(state).items():
        if (found := rebuilt(path)) is not None:
            best[found] = score
    kept = {"best_model_score": None, **state, "dirpath": str(dirpath), "best_k_models": best}
    for field, score_field in PATH_AND_SCORE:
        path = rebuilt(state[field]) if state.get(field) else None
        kept[field] = path or ""
        if path is None and score_field is not None:
            kept[score_field] = None
    if kept.get("kth_value") is None:  # Lightning's own start value for its mode
        kept.pop("kth_value", None)
    if origin != here:
        log.info(
            "resuming into %s from a checkpoint of %s: %d of its checkpoint files found here "
            "and tracked; the other folder is never touched",
            here,
            origin,
            len(best) + bool(kept["last_model_path"]),
        )
    return kept


def check_state(state: Any, dirpath: str | os.PathLike | None, source: str) -> str | None:
    """The folder of ModelCheckpoint state ``state`` (its stored ``dirpath``, else ``dirpath``),
    after checking that every path it names is a plain path inside that folder and every score
    a number; ``CheckpointError`` naming the field otherwise."""
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"checkpoint {source} holds a ModelCheckpoint state of type {type(state).__name__}, "
            "not a mapping: it was not written by vaelik-train. Resume from another checkpoint "
            "of the run, or start a new run."
        )
    stored = state.get("dirpath")
    if stored is not None and (not isinstance(stored, str) or not is_plain_path(stored)):
        raise refused(source, "dirpath", stored, "a plain folder path")
    best = state.get("best_k_models")
    if best is not None and not isinstance(best, Mapping):
        raise refused(source, "best_k_models", best, "a mapping of checkpoint files to scores")
    own_folder = stored if stored is not None else (None if dirpath is None else str(dirpath))
    for field, value in stored_paths(state):
        if not isinstance(value, str) or own_folder is None:
            raise refused(source, field, value, "a file path inside the checkpoint's folder")
        if plain_path_inside(value, own_folder) is None:
            raise refused(source, field, value, f"a file path inside {own_folder}")
    scores = [(field, state.get(field)) for field in SCORE_FIELDS]
    scores += [("best_k_models", score) for score in tracked(state).values()]
    for field, score in scores:
        if not is_score(score):
            raise refused(source, field, score, "a score (a number or a one-value tensor)")
    return own_folder


def is_score(value: Any) -> bool:
    """None, a real number or a one-value floating tensor: what Lightning compares scores as."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return True
    return isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()


def refused(source: str, field: str, value: Any, wanted: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {source} names {value!r} as its ModelCheckpoint {field}, where only "
        f"{wanted} may stand: a resumed run never writes or deletes files outside its run "
        "folder. Resume from a checkpoint written by vaelik-train, or start a new run."
    )


def check_resumable_states(states: Any, callbacks: Iterable[Callback], source: str) -> None:
    """Raise ``CheckpointError`` before anything is written if ``states`` (the ``callbacks``
    entry of checkpoint ``source``) holds a ModelCheckpoint state that one of ``callbacks``
    would load and that :func:`resumable_state` refuses."""
    if states is None:
        return
    if not isinstance(states, Mapping):
        raise CheckpointError(
            f"checkpoint {source} holds callback states of type {type(states).__name__}, not a "
            "mapping: it was not written by vaelik-train. Resume from another checkpoint of the "
            "run, or start a new run."
        )
    for callback in callbacks:
        if not isinstance(callback, LightningModelCheckpoint):
            continue
        if callback.state_key in states and not isinstance(callback, ModelCheckpoint):
            raise CheckpointError(
                f"resuming {source} with {type(callback).__module__}.{type(callback).__name__} "
                "is refused: that class restores the paths a checkpoint names and later deletes "
                "them. Use vaelik.training.checkpointing.ModelCheckpoint as "
                "callbacks.model_checkpoint._target_ (the default), which takes no path from a "
                "checkpoint."
            )
        if callback.state_key in states:
            resumable_state(states[callback.state_key], callback.dirpath, source)
