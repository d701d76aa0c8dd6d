"""``vaelik-compare``: paired differences between stored evaluations on the same examples."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vaelik.cli import run_hydra_app
from vaelik.evaluation.comparison import (
    FIGURES,
    compare,
    comparison_text,
    read_evaluation,
    write_comparison,
)
from vaelik.evaluation.formatting import report_written


def compare_runs(cfg: DictConfig) -> list[dict[str, Any]]:
    """Compare every pair of ``cfg.runs`` (``[DIR, ...]`` or ``{name: DIR, ...}``); write the
    comparison and print a line per pair."""
    runs = cfg.runs
    named = (
        [(str(name), folder) for name, folder in runs.items()]
        if isinstance(runs, Mapping)
        else [(None, folder) for folder in runs]
    )
    pairs = compare([read_evaluation(folder, name) for name, folder in named])
    output = write_comparison(pairs, Path(cfg.paths.output_dir))
    for pair in pairs:
        print(comparison_text(pair))
    report_written(output)
    return [{key: pair[key] for key in FIGURES} for pair in pairs]


def main() -> None:
    """Console-script entry point (``vaelik-compare runs=[DIR_A,DIR_B]``)."""
    run_hydra_app(compare_runs, "compare")


if __name__ == "__main__":
    main()
