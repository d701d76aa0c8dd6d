"""Figures printed for a person: a sensible number of digits, and words where there is no value.

Files written for programs (``summary.json``, CSV tables) keep full precision; only what a
command prints goes through here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vaelik.inference.diagnostics import KHAT_MIN_SAMPLES


def figure(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or ``n/a`` when it is missing or not a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def khat_text(value: float | None) -> str:
    """A k-hat for print: two decimals, or why there is none (fewer samples than it needs)."""
    if value is None or math.isnan(value):
        return f"n/a (K < {KHAT_MIN_SAMPLES})"
    return f"{value:.2f}"


def share_text(share: float | None) -> str:
    """A share as a percentage with one decimal, or ``n/a``."""
    return "n/a" if share is None or math.isnan(share) else f"{100 * share:.1f}%"


def grid_error_text(summary: dict[str, Any]) -> str | None:
    """A grid rule's error check for print (:mod:`vaelik.inference.quadrature`), or None for a
    sampling estimator."""
    if summary.get("grid_error_max") is None:
        return None
    return f"grid error at most {summary['grid_error_max']:.2g} nats"


def estimate_text(summary: dict[str, Any]) -> str:
    """One line for a summary of per-example estimates (:meth:`PerExampleResults.summary`):
    the sampling diagnostics, or a grid rule's largest error check."""
    text = (
        f"log p(x) = {figure(summary['log_px_mean'])} +- {figure(summary['log_px_stderr'])} nats"
        f" ({figure(summary['bpd'], 4)} bits/dim) over {summary['num_examples']} examples;"
    )
    grid_error = grid_error_text(summary)
    if grid_error:
        text += f" {grid_error};"
    else:
        text += (
            f" ESS/K mean {summary['ess_mean']:.3g};"
            f" k-hat median {khat_text(summary['khat_median'])};"
        )
    return text + f" {flagged_text(summary)}"


def flagged_text(summary: dict[str, Any]) -> str:
    """The share of examples whose estimate its own check flags, and the rule."""
    return f"flagged: {share_text(summary.get('flagged_share'))} ({summary.get('flag_rule')})"


def report_written(folder: Path) -> None:
    """The last line of every command: where its results are."""
    print(f"wrote results to {folder}")
