"""The commands' checkpoint loading: a config's checkpoint settings adapted to
:func:`vaelik.models.restore.model_from_checkpoint`, and what it ignored said on standard error."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from vaelik.models.restore import Restored, model_from_checkpoint


def restore(cfg: DictConfig, path: str | Path | None = None) -> Restored:
    """The checkpoint at ``path`` (default ``cfg.ckpt_path``) rebuilt with the command line's
    ``data_dir``, ``trusted_packages`` and ``download``; ignored stored settings are reported."""
    restored = model_from_checkpoint(
        cfg.ckpt_path if path is None else path,
        cfg.get("data_dir"),
        list(cfg.get("trusted_packages") or ()),
        bool(cfg.get("download", False)),
    )
    note = restored.ignored_text()
    if note:
        print(note, file=sys.stderr)
    return restored
