"""``vaelik-results``: a results table for several checkpoints, measured the same way."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vaelik.cli import run_hydra_app
from vaelik.config import build
from vaelik.errors import ConfigError
from vaelik.evaluation.formatting import report_written
from vaelik.evaluation.table import TableSettings, add_row, checked_checkpoints, measure, read_rows
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.proposals import EncoderProposal

#: ``ais_start`` as AIS's ``prior_share`` (auto: the estimator's own choice)
AIS_STARTS = {"encoder": 0.0, "prior": 1.0}


def ais_with_start(ais_cfg: Any, choice: str) -> AnnealedImportanceSampling:
    """The AIS of ``ais_cfg`` with its chains started as ``choice`` says: ``encoder``
    (``prior_share=0``), ``prior`` (``prior_share=1``), or ``auto``: ``ais_cfg``'s own
    ``prior_share``, whose ``auto`` starts from the prior where the latent has at most 2
    dimensions or the guide cannot score latents it did not draw (IAF), else from the encoder."""
    if choice not in ("auto", *AIS_STARTS):
        raise ConfigError(f"ais_start must be auto, encoder or prior, got {choice!r}")
    if choice == "auto":
        return build(ais_cfg, "ais")
    return build(ais_cfg, "ais", prior_share=AIS_STARTS[choice])


def table_settings(cfg: DictConfig) -> TableSettings:
    """``conf/results.yaml`` as :class:`TableSettings`: bad estimator settings fail here, before
    any checkpoint is read."""
    chosen = cfg.get("ais_proposal")
    return TableSettings(
        importance=build(cfg.importance, "importance"),
        ais=ais_with_start(cfg.ais, cfg.get("ais_start", "auto")),
        ais_proposal=EncoderProposal() if chosen is None else build(chosen, "ais_proposal"),
        output_dir=Path(cfg.paths.output_dir),
        split=str(cfg.split),
        num_examples=cfg.num_examples,
        ais_examples=cfg.ais_examples,
        seed=int(cfg.seed),
        device=cfg.device,
        batch_size=int(cfg.batch_size),
        references=dict(cfg.get("references") or {}),
        reuse_importance=bool(cfg.get("reuse_importance", False)),
        store=cfg.get("store"),
        data_dir=cfg.get("data_dir"),
        trusted_packages=list(cfg.get("trusted_packages") or ()),
        download=bool(cfg.get("download", False)),
    )


def results_table(cfg: DictConfig) -> list[dict[str, Any]]:
    """Measure every checkpoint of ``cfg.checkpoints``; write, print and return the table's
    rows (each kept in the output folder as soon as it is measured)."""
    settings = table_settings(cfg)
    pairs = checked_checkpoints(cfg.checkpoints)
    rows = read_rows(settings.output_dir / "results.csv")
    for name, path in pairs:
        measured = measure(name, path, settings)
        for note in measured.notes:
            print(note, file=sys.stderr)
        rows = add_row(measured.row, settings.output_dir)
    print((settings.output_dir / "results.md").read_text())
    report_written(settings.output_dir)
    return rows


def main() -> None:
    """Console-script entry point (``vaelik-results checkpoints={name:PATH,...}``)."""
    run_hydra_app(results_table, "results")


if __name__ == "__main__":
    main()
