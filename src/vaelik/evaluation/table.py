"""A results table: several trained checkpoints measured the same way on one split.

For every checkpoint: importance sampling with the encoder as proposal over the split (the whole
test set by default, K = 5000), and annealed importance sampling on a subset spread evenly over
it (not its first examples: the binarized MNIST test file is sorted by digit), reported as the
mean gap AIS - IS on that subset (AIS is a tighter stochastic lower bound, so a positive
gap says how far IS is below the model's log p(x)) and the share of its examples on which the
two differ by more than a nat (``ais_disagree_share``: a per-example check that neither
estimator's own diagnostics make). Each row also carries the diagnostics
(share of PSIS k-hat above 0.7), what the training took (epochs, wall time, machine) and where
it was measured, the published figure it reproduces when ``references`` names one, and the
end of its learning curve (``val/log_px`` and ``val/elbo`` per 10 epochs over the last 20 epochs,
from the run's CSV logs, written whole as ``curves/<model>.csv``): the evidence for what more
epochs would give. Written as ``results.csv`` and ``results.md``; rows already in the output
folder's ``results.csv`` for other models are kept, so a table can grow one checkpoint at a time,
and several ``vaelik-results`` commands may write to one folder at once: each row is merged into
the table as it stands when the row is measured, under a lock.

Typed functions on a model's checkpoint path and :class:`TableSettings`; nothing here reads a
config or prints (``vaelik-results``, :mod:`vaelik.cli.results`, adapts its config and prints).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaelik.checkpoint import describe_machine, read_checkpoint
from vaelik.errors import ConfigError
from vaelik.evaluation.curves import last_value, read_curve, trend, write_curve
from vaelik.evaluation.estimate import estimate
from vaelik.evaluation.formatting import figure, share_text
from vaelik.evaluation.indexed_data import event_dims
from vaelik.evaluation.results import PerExampleResults
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.estimators import LogWeightEstimator
from vaelik.inference.plan import pick_device, resolve
from vaelik.inference.proposals import EncoderProposal, Proposal
from vaelik.metrics import mean_and_stderr
from vaelik.models.restore import model_from_checkpoint
from vaelik.subsets import evenly_spaced, example_indices

COLUMNS = (
    "model",
    "reference",
    "log_px",
    "log_px_stderr",
    "bpd",
    "khat_share_above_0.7",
    "ais_gap",
    "ais_gap_stderr",
    "ais_log_px",
    "ais_log_px_stderr",
    "ais_disagree_share",
    "ais_examples",
    "ais_start",
    "num_examples",
    "num_samples",
    "epochs",
    "val_log_px_last",
    "val_log_px_trend",
    "val_elbo_trend",
    "train_hours",
    "train_machine",
    "eval_seconds",
    "ais_seconds",
    "eval_machine",
    "split",
    "seed",
    "checkpoint",
)


@dataclass(frozen=True)
class TableSettings:
    """How every checkpoint of a table is measured (``conf/results.yaml`` documents each).

    Attributes:
        importance: the IS estimator (its K and seed), with the encoder as proposal.
        ais: the AIS estimator of the AIS column, started as its ``prior_share`` says.
        ais_proposal: where AIS chains start when they start from a proposal.
        output_dir: the folder of ``results.csv`` / ``results.md`` / ``curves/``.
        split: the data split measured.
        num_examples: IS on that many examples spread evenly over the split (None: all).
        ais_examples: AIS on that many of them, spread evenly (0: none, None: all).
        seed: recorded in each row (the estimators carry their own).
        device: where to compute (``auto``: CUDA when available).
        batch_size: examples per call (never changes the numbers).
        references: published log p(x) by model name, shown beside it.
        reuse_importance: keep an earlier row's IS figures (see :func:`measure`).
        store: the results store whose rows are reused and to which new ones are committed
            (:mod:`vaelik.evaluation.store`; None: none).
        data_dir, trusted_packages, download: how checkpoints are rebuilt
            (:func:`vaelik.models.restore.model_from_checkpoint`).
    """

    importance: LogWeightEstimator
    ais: AnnealedImportanceSampling
    output_dir: Path
    ais_proposal: Proposal = field(default_factory=EncoderProposal)
    split: str = "test"
    num_examples: int | None = None
    ais_examples: int | None = None
    seed: int = 0
    device: str | torch.device | None = "auto"
    batch_size: int = 100
    references: Mapping[str, float] = field(default_factory=dict)
    reuse_importance: bool = False
    store: str | Path | None = None
    data_dir: str | Path | None = None
    trusted_packages: Sequence[str] = ()
    download: bool = False


@dataclass(frozen=True)
class MeasuredRow:
    """One checkpoint measured: its table row, and what a person should be told about how it
    was measured (the automatic choices made, stored settings ignored), one line each."""

    row: dict[str, Any]
    notes: list[str]


def named_checkpoints(entries: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Path]]:
    """``{name: path, ...}`` in order, or ``[path, ...]`` named after their run folders."""
    if isinstance(entries, Mapping):
        pairs = [(str(name), Path(path)) for name, path in entries.items()]
    else:
        pairs = [(Path(path).parent.parent.name, Path(path)) for path in entries]
    if not pairs:
        raise ConfigError("no checkpoints to measure: pass checkpoints={name:PATH,...}")
    return pairs


#: |AIS - IS| on one example above this (nats) counts as a disagreement
DISAGREEMENT_NATS = 1.0

INTEGER_COLUMNS = ("ais_examples", "num_examples", "num_samples", "epochs", "seed")
TEXT_COLUMNS = ("model", "ais_start", "train_machine", "eval_machine", "split", "checkpoint")


def run_folder(path: Path) -> Path:
    """The run folder of a checkpoint: ``<run>/checkpoints/x.ckpt`` -> ``<run>``."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def recorded_path(path: Path) -> str:
    """How the table names a checkpoint: relative to the working directory when it lies under
    it (so a table committed beside its runs names no machine's folders), else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def measure(name: str, path: Path, settings: TableSettings) -> MeasuredRow:
    """One row of the table for the checkpoint at ``path``, measured as ``settings`` say.

    With ``settings.reuse_importance``, the IS figures of an earlier row of the same model (same
    checkpoint file and epochs, split, seed, K and number of examples, in the output folder's
    ``results.csv``) are kept and only the AIS gap is measured again: per-example IS estimates
    draw from per-example streams, so IS on the AIS subset alone gives the very values the whole
    run gave there. ``eval_seconds`` is then the earlier IS time plus the new AIS time.
    """
    restored = model_from_checkpoint(
        path, settings.data_dir, settings.trusted_packages, settings.download
    )
    model, datamodule, checkpoint = restored.model, restored.datamodule, restored.record
    notes = [restored.ignored_text()] if restored.ignored else []
    device = pick_device(settings.device)
    model.to(device)
    importance, proposal = settings.importance, EncoderProposal()
    # every combination resolved (and an impossible one refused) before any work
    importance_plan = resolve(model, importance, proposal, batch_size=settings.batch_size)
    # the automatic rules may choose where AIS starts (a refined proposal gives way to the
    # encoder where it cannot refine the guide): said here, and in the ais_start column
    ais_plan = resolve(
        model,
        settings.ais,
        settings.ais_proposal,
        batch_size=settings.batch_size,
        accept_rules=True,
        fallback_to_encoder=True,
    )
    notes += [f"{name}: AIS {choice.text()}" for choice in ais_plan.choices]
    ais_start = ais_plan.proposal
    dataset = datamodule.dataset(settings.split)
    indices = example_indices(dataset, settings.num_examples)
    ais_count = len(indices) if settings.ais_examples is None else int(settings.ais_examples)
    ais_indices = evenly_spaced(indices, min(ais_count, len(indices)))
    row: dict[str, Any] = {
        "model": name,
        "num_examples": len(indices),
        "num_samples": importance.num_samples,
        "ais_examples": len(ais_indices),
        "ais_start": ais_start.name,
        "checkpoint": recorded_path(path),
        "epochs": checkpoint.epochs,
        "split": str(settings.split),
        "seed": int(settings.seed),
    }
    earlier = reusable_row(row, settings.output_dir) if settings.reuse_importance else None
    start = time.perf_counter()
    results = estimate(
        model,
        dataset,
        plan=importance_plan,
        examples=ais_indices if earlier else indices,
        device=device,
        progress=True,
        store=settings.store,
        split=settings.split,
    ).results
    if earlier:
        row.update({column: earlier[column] for column in IMPORTANCE_COLUMNS})
    else:
        summary = results.summary(event_dims(dataset))
        row.update(
            {
                "log_px": summary["log_px_mean"],
                "log_px_stderr": summary["log_px_stderr"],
                "bpd": summary["bpd"],
                "khat_share_above_0.7": summary["khat_share_above_0.7"],
            }
        )
    importance_seconds = time.perf_counter() - start
    for column in ("ais_gap", "ais_gap_stderr", "ais_log_px", "ais_log_px_stderr"):
        row[column] = None
    row["ais_disagree_share"] = None
    if ais_indices:
        annealed = estimate(
            model,
            dataset,
            plan=ais_plan,
            examples=ais_indices,
            device=device,
            progress=True,
            store=settings.store,
            split=settings.split,
        ).results
        gaps = annealed.log_px - matching(results, annealed.index)
        row["ais_gap"], row["ais_gap_stderr"] = mean_and_stderr(gaps)
        row["ais_log_px"], row["ais_log_px_stderr"] = mean_and_stderr(annealed.log_px)
        # per example: IS and AIS apart by more than a nat (AIS above: IS misses posterior mass)
        row["ais_disagree_share"] = (gaps.abs() > DISAGREEMENT_NATS).double().mean().item()
    row["ais_seconds"] = time.perf_counter() - start - importance_seconds
    row["eval_seconds"] = row["ais_seconds"] + (
        earlier["eval_seconds"] - earlier["ais_seconds"] if earlier else importance_seconds
    )
    row["eval_machine"] = describe_machine() + f", {device}"
    row["train_hours"] = (
        checkpoint.train_seconds / 3600 if checkpoint.train_seconds is not None else None
    )
    row["train_machine"] = checkpoint.machine
    row["reference"] = settings.references.get(name)
    curve = read_curve(run_folder(path))
    if curve:
        write_curve(curve, settings.output_dir / "curves" / f"{name}.csv")
    row["val_log_px_last"] = last_value(curve, "val/log_px")
    row["val_log_px_trend"] = trend(curve, "val/log_px")
    row["val_elbo_trend"] = trend(curve, "val/elbo")
    return MeasuredRow(row, notes)


#: the columns that IS over the whole split measures (kept by ``reuse_importance``)
IMPORTANCE_COLUMNS = ("log_px", "log_px_stderr", "bpd", "khat_share_above_0.7")


#: what an earlier row must share with a new one for its IS figures to be kept
SAME_MEASUREMENT = ("model", "checkpoint", "epochs", "split", "seed", "num_samples", "num_examples")


def reusable_row(row: dict[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """The earlier row whose IS figures ``row`` may keep: the same measurement
    (:data:`SAME_MEASUREMENT`) with its IS and AIS times recorded; None if there is none (rows
    written before those columns existed are never reused)."""
    for earlier in read_rows(output_dir / "results.csv"):
        if all(earlier[column] == row[column] for column in SAME_MEASUREMENT):
            complete = earlier["log_px"] is not None and earlier["ais_seconds"] is not None
            return earlier if complete and earlier["eval_seconds"] is not None else None
    return None


def matching(results: PerExampleResults, index: torch.Tensor) -> torch.Tensor:
    """``results.log_px`` of the examples ``index``, in that order."""
    position = {int(i): p for p, i in enumerate(results.index.tolist())}
    return results.log_px[[position[int(i)] for i in index.tolist()]]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier ``results.csv`` (empty if there is none), typed as written."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [
            {column: typed(column, row.get(column, "")) for column in COLUMNS}
            for row in csv.DictReader(handle)
        ]


def typed(column: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    if column in TEXT_COLUMNS:
        return text
    return int(text) if column in INTEGER_COLUMNS else float(text)


def merged(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier rows in their order, a new row replacing the earlier row of the same model, and
    the new models after them."""
    by_model = {row["model"]: row for row in new}
    rows = [by_model.pop(row["model"], row) for row in earlier]
    return rows + list(by_model.values())


def write_table(rows: list[dict[str, Any]], output_dir: Path) -> None:
    """``results.csv`` (every column) and ``results.md`` (the columns a reader compares)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    replace_text(output_dir / "results.csv", table.getvalue())
    replace_text(output_dir / "results.md", markdown_table(rows) + "\n")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as ``results.md`` shows them: the columns a reader compares, then a line per
    distinct (K, examples, machine) saying how the IS column was measured."""
    lines = [
        "| model | test log p(x) | AIS log p(x) (n) | published | bits/dim | k-hat > 0.7 "
        "| AIS - IS | epochs | val log p(x), per 10 epochs at the end | training |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        annealed = (
            f"{row['ais_log_px']:.2f} +- {row['ais_log_px_stderr']:.2f} ({row['ais_examples']})"
            if row["ais_log_px"] is not None
            else "n/a"
        )
        gap = (
            f"{row['ais_gap']:+.2f} +- {row['ais_gap_stderr']:.2f} ({row['ais_examples']}"
            + (", from the prior)" if row["ais_start"] == "prior" else ")")
            if row["ais_gap"] is not None
            else "n/a"
        )
        hours = f"{row['train_hours']:.2f} h" if row["train_hours"] is not None else "n/a"
        curve_end = (
            f"{row['val_log_px_last']:.2f}, {row['val_log_px_trend']:+.2f}"
            if row["val_log_px_trend"] is not None
            else "n/a"
        )
        lines.append(
            f"| {row['model']} | {row['log_px']:.2f} +- {row['log_px_stderr']:.2f} | {annealed} "
            f"| {figure(row['reference'])} | {row['bpd']:.4f} "
            f"| {share_text(row['khat_share_above_0.7'])} | {gap} | {row['epochs']} | {curve_end} "
            f"| {hours}, {row['train_machine'] or 'n/a'} |"
        )
    lines.append("")
    for samples, examples, machine in dict.fromkeys(
        (row["num_samples"], row["num_examples"], row["eval_machine"]) for row in rows
    ):
        lines.append(f"IS with K = {samples} on {examples} examples, measured on {machine}.")
    for start in dict.fromkeys(row["ais_start"] for row in rows if row["ais_log_px"] is not None):
        lines.append(f"AIS from {start}, on the examples (n) spread over the split.")
    if not rows:
        lines.append("No checkpoints.")
    return "\n".join(lines)


def replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: an interrupted write leaves the earlier table."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def checked_checkpoints(entries: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Path]]:
    """The named checkpoints of ``entries`` (:func:`named_checkpoints`), every file read and
    checked first: a typo in the fifth path fails now, not after four evaluations."""
    pairs = named_checkpoints(entries)
    for _, path in pairs:
        read_checkpoint(path)
    return pairs


def add_row(row: dict[str, Any], output_dir: Path) -> list[dict[str, Any]]:
    """Merge ``row`` into the table in ``output_dir`` as it is now and rewrite it; return the
    rows. Another command's rows written since this one started are kept."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(output_dir / ".results.lock"):
        rows = merged(read_rows(output_dir / "results.csv"), [row])
        write_table(rows, output_dir)
    return rows


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (POSIX ``flock``; no lock elsewhere)."""
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no concurrent writers are supported there
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
