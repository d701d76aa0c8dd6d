"""``vaelik.estimate``: per-example log p(x) of any model on any data, with its diagnostics.

This is the one place where a data set is estimated. The commands (``vaelik-eval``,
``-convergence``, ``-results``, ``-bdmc``) and the training callback call it; a user calls it on
their own model::

    estimates = vaelik.estimate(model, x_test, estimator="ais", num_samples=16)
    print(estimates.summary["log_px_mean"], estimates.summary["bpd"])
    estimates.write("results/")  # per_example.csv and summary.json, as vaelik-eval writes

Examples keep their index in the data set as the key of their random stream, and a plan
computes in blocks of fixed shape (:mod:`vaelik.inference.blocks`), so the numbers do not depend
on the batch size or on which examples are estimated with them, bit for bit. Under a process
group (torchrun, Lightning's DDP) each process estimates a disjoint share and every process gets
all the results.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from vaelik.errors import ConfigError
from vaelik.evaluation.distributed import gather_results, shard, synchronize, world
from vaelik.evaluation.indexed_data import (
    EstimationData,
    ExampleChoice,
    chosen_indices,
    event_dims,
    indexed_examples,
)
from vaelik.evaluation.results import PerExampleResults
from vaelik.evaluation.store import ResultStore, StoredRows, opened
from vaelik.inference.estimators import Estimate, LogWeightEstimator
from vaelik.inference.plan import Plan, pick_device, resolve, with_execution
from vaelik.inference.proposals import Proposal
from vaelik.models.contract import MeasurableModel
from vaelik.progress import example_progress

log = logging.getLogger(__name__)

#: examples per call when neither the call nor a DataLoader says
DEFAULT_BATCH = 100

EstimatorChoice = str | LogWeightEstimator
ProposalChoice = str | Proposal


@dataclass
class Estimates:
    """Per-example estimates over a data set and their summary.

    Attributes:
        results: per example ``[N]``, in index order: ``index``, ``log_px`` (nats),
            ``mc_stderr`` (its Monte Carlo standard error, delta method; NaN for K = 1 or a
            grid rule), ``ess`` (normalised), ``log_weight_var``, ``khat`` (PSIS; NaN for
            K < 25 or a grid rule), ``grid_error`` (a grid rule's check; NaN otherwise),
            ``flagged`` (1 where the estimate's own check says not to trust it).
        summary: mean log p(x) +- its standard error over examples, bits/dim, the diagnostics'
            summaries, the estimator, the proposal or AIS start really used, K, the plan
            (``plan``: :meth:`~vaelik.inference.plan.Plan.to_dict`; ``plan_digest``), seconds.
        plan: the :class:`~vaelik.inference.plan.Plan` the values were computed by.
    """

    results: PerExampleResults
    summary: dict[str, Any]
    #: the plan the values were computed by (its ``digest``, ``describe()``, ``choices``)
    plan: Plan | None = None

    @property
    def log_px(self) -> torch.Tensor:
        """Per-example log p(x) estimates ``[N]`` (float64, nats)."""
        return self.results.log_px

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per example, the columns of ``per_example.csv``."""
        return self.results.rows()

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Every per-example column as a numpy array ``[N]``."""
        return self.results.to_numpy()

    def write(self, folder: str | Path) -> Path:
        """Write ``per_example.csv`` and ``summary.json`` into ``folder`` (made if needed)."""
        return write_results(Path(folder), self.results, self.summary)


def write_results(output_dir: Path, results: PerExampleResults, summary: dict[str, Any]) -> Path:
    """``per_example.csv`` (index, log_px, mc_stderr, ess, log_weight_var, khat, a grid rule's
    grid_error, flagged) and ``summary.json`` in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = results.rows()
    with open(output_dir / "per_example.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["index"])
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return output_dir


def share_note(size: int) -> str:
    """What a progress bar on the first of ``size`` processes counts: its own share."""
    return f" (this process's share of {size})" if size > 1 else ""


@dataclass(frozen=True)
class Examples:
    """The examples to estimate, resolved from a public call's arguments: items ``(x,
    index)``, the indices chosen, the batch size and the device."""

    dataset: Dataset
    indices: list[int]
    batch_size: int
    device: torch.device

    @classmethod
    def of(
        cls,
        model: MeasurableModel,
        data: EstimationData,
        examples: ExampleChoice,
        batch_size: int | None,
        device: str | torch.device | None,
        block: int = 1,
    ) -> Examples:
        """The examples of ``data`` chosen by ``examples``, in batches of ``batch_size`` (the
        DataLoader's, else :data:`DEFAULT_BATCH`) rounded up to a multiple of ``block`` (a
        plan computes in blocks of that many examples: a batch of 1 would waste the rest)."""
        dataset, loader_batch = indexed_examples(data)
        size = batch_size if batch_size is not None else loader_batch or DEFAULT_BATCH
        if size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {size}")
        size = -(-size // block) * block
        indices = chosen_indices(len(dataset), examples)
        return cls(dataset, indices, size, pick_device(device, model))


@contextlib.contextmanager
def evaluation_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode within the block, and back in the mode it was in after it (a
    model that is not an ``nn.Module`` has no mode)."""
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        yield
    finally:
        if was_training is not None:
            model.train(was_training)


@contextlib.contextmanager
def placed_on(model: Any, device: torch.device) -> Iterator[None]:
    """``model`` on ``device`` within the block, and back where it was after it: ``device=``
    computes there whatever device the model is on (said in the log at INFO level). A model
    without parameters, or already there, is left alone."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    here = None if first is None else first.device
    if here is None or same_device(here, device) or not callable(getattr(model, "to", None)):
        yield
        return
    log.info("moving the model from %s to %s for this estimate, and back after it", here, device)
    model.to(device)
    try:
        yield
    finally:
        model.to(here)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` are one device (``cuda`` is this process's current CUDA device)."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (
        b.index if b.index is not None else current
    )


def visit_batches(
    model: MeasurableModel,
    examples: Examples,
    visit: Callable[[torch.Tensor, torch.Tensor], None],
    progress: bool = False,
    label: str = "log p(x)",
    done: int = 0,
) -> None:
    """Call ``visit(x [b, ...], index [b])`` on this process's share of ``examples``, batch by
    batch, with the model in eval mode on ``examples.device`` (:func:`placed_on`) and, with
    ``progress``, a bar over examples on the first process (starting at ``done``, the examples
    found done already)."""
    rank, size = world()
    local = shard(examples.indices)
    loader = DataLoader(Subset(examples.dataset, local), batch_size=examples.batch_size)
    with (
        evaluation_mode(model),
        placed_on(model, examples.device),
        example_progress(
            done + len(local), label + share_note(size), progress and rank == 0, done
        ) as advance,
    ):
        for x, index in loader:
            index = torch.as_tensor(index)
            visit(x.to(examples.device), index)
            advance(len(index))


def estimate(
    model: MeasurableModel,
    data: EstimationData,
    *,
    plan: Plan | None = None,
    estimator: EstimatorChoice | None = None,
    proposal: ProposalChoice | None = None,
    num_samples: int | None = None,
    batch_size: int | None = None,
    examples: ExampleChoice = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool = False,
    store: str | Path | ResultStore | None = None,
    split: str = "data",
) -> Estimates:
    """Estimate log p(x) of every example of ``data`` under ``model``.

    Args:
        model: any object meeting :class:`~vaelik.models.contract.MeasurableModel` (vaelik's
            own models, or one wrapped by :mod:`vaelik.adapters`).
        data: a tensor ``[N, ...]``, a ``Dataset`` yielding ``x`` or ``(x, label)``, or a
            ``DataLoader``.
        plan: a plan resolved for ``model`` by :func:`vaelik.resolve`; then ``estimator``,
            ``proposal``, ``num_samples`` and ``seed`` are the plan's and may not be given.
        estimator: ``importance`` (the default), ``ais``, ``prior`` (naive Monte Carlo),
            ``quadrature`` (1- or 2-D latents), with the defaults of ``conf/estimator/``; or an
            estimator object.
        proposal: ``encoder`` (the default), ``prior``, ``student_t``, ``inflated``,
            ``defensive``, ``refined``; or a proposal object. AIS starts its chains from it (or
            from the prior, see ``prior_share``); the summary and ``Estimates.plan`` name what
            was really used and why.
        num_samples: K (draws or chains per example), replacing the estimator's.
        batch_size: examples per call (default: the plan's, the DataLoader's, else 100);
            never changes the numbers.
        examples: all (None), these indices (``range(100)``: the first 100), or
            ``vaelik.Spread(100)``: 100 spread evenly over the data (a bare number is refused
            as ambiguous).
        device: where to compute (default: the plan's, else the model's parameters' device;
            ``auto``: CUDA when available). The data and the model are moved there for the call
            (the model back after it; logged at INFO level).
        seed: the seed mixed into every example's stream key (default: the estimator's, 0).
        progress: a progress bar over examples on standard error.
        store: a results store (a path, made if missing, or a :class:`ResultStore`): the
            rows it holds for these weights, this plan, ``split`` and this data are reused, and
            every batch computed is committed to it as soon as it is done (a killed call,
            called again, computes only what is missing; :mod:`vaelik.evaluation.store`).
        split: the name the store keys these examples' rows under, beside the data's digest.

    Returns:
        :class:`Estimates`: per-example values, the summary (``log_px_mean``,
        ``log_px_stderr``, ``bpd``, ``ess_mean``, ``khat_*``, ``flagged_share``,
        ``estimator``, ``proposal``, ``num_samples``, ``plan_digest``, ``plan``, ``seconds``,
        ...) and the plan.
    """
    if plan is None:
        plan = resolve(
            model,
            estimator if estimator is not None else "importance",
            proposal,
            num_samples=num_samples,
            seed=seed,
            device=device,
            batch_size=batch_size,
        )
    else:
        plan = plan_for_call(plan, model, estimator, proposal, num_samples, seed)
        plan = with_execution(
            plan,
            device=plan.execution.device if device is None else pick_device(device, model),
            batch_size=plan.execution.batch_size if batch_size is None else batch_size,
        )
    execution = plan.execution
    chosen = Examples.of(model, data, examples, execution.batch_size, execution.device, plan.block)
    with opened(store) as results_store:
        kept = StoredRows.of(
            results_store, model, plan, chosen.dataset, chosen.indices, split, chosen.device
        )
        synchronize()  # every process has read the store before any writes to it
        todo = replace(chosen, indices=kept.missing(chosen.indices))
        parts: list[tuple[torch.Tensor, Estimate]] = []

        def visit(x: torch.Tensor, index: torch.Tensor) -> None:
            began = time.perf_counter()
            estimated = plan.estimate(x, index)
            parts.append((index, estimated))
            kept.add(index, estimated, time.perf_counter() - began, todo.device, plan.dtype)

        start = time.perf_counter()
        label = plan.label + (f", {len(kept.rows.index)} from the store" if kept.found else "")
        visit_batches(model, todo, visit, progress, label, len(kept.rows.index))
        # every example once, on every process, sorted by index
        results = PerExampleResults.joined(
            [gather_results(PerExampleResults.concatenate(parts)), kept.rows]
        )
        if results.index.tolist() != sorted(chosen.indices):
            raise RuntimeError("the examples estimated are not those chosen: a share was lost")
        seconds = time.perf_counter() - start
    summary = {
        **results.summary(event_dims(chosen.dataset)),
        **plan.report(),
        "seconds": seconds,
        "samples_per_second": len(todo.indices) * plan.num_samples / seconds,
        "device": str(chosen.device),
        "processes": world()[1],
        **kept.report(),
    }
    return Estimates(results, summary, plan)


def plan_for_call(
    plan: Plan,
    model: MeasurableModel,
    estimator: EstimatorChoice | None,
    proposal: ProposalChoice | None,
    num_samples: int | None,
    seed: int | None,
) -> Plan:
    """``plan``, checked against the rest of a call: resolved for this very ``model``, and no
    value-determining argument given beside it."""
    given = {"estimator": estimator, "proposal": proposal, "num_samples": num_samples, "seed": seed}
    for name, value in given.items():
        if value is not None:
            raise ConfigError(
                f"{name} is the plan's to decide: pass either plan= or {name}=, not both "
                f"(vaelik.resolve(model, ..., {name}=...) makes a plan with another {name})"
            )
    if not isinstance(plan, Plan):
        raise ConfigError(
            f"plan must be a vaelik.Plan (from vaelik.resolve), got {type(plan).__name__}"
        )
    if plan.model is not model:
        raise ConfigError(
            "the plan was resolved for another model: resolve one for this model with "
            "vaelik.resolve(model, ...)"
        )
    return plan
