"""``vaelik.bdmc``: bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; Wu, Burda,
Salakhutdinov & Grosse 2017) on data simulated from a trained model.

For N pairs (z, x) drawn from the model, z ~ p(z) and x ~ p(x|z), the latent z is an exact
sample of the posterior p(z|x). Forward AIS gives a stochastic lower bound on log p(x); reverse
AIS, run from z back to the start distribution, a stochastic upper bound (see
:meth:`~vaelik.inference.ais.AnnealedImportanceSampling.reverse_log_weights`). Their gap, per
example and on average, bounds the error of forward AIS with that schedule on data like the
model's own: a user picks the schedule whose gap is small enough, then runs it on real data.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from vaelik.errors import ConfigError
from vaelik.evaluation.estimate import ProposalChoice, evaluation_mode, placed_on
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.blocks import in_blocks
from vaelik.inference.diagnostics import log_mean_exp
from vaelik.inference.log_weights import check_positive
from vaelik.inference.plan import Plan, chosen_estimator, pick_device, resolve
from vaelik.metrics import mean_and_stderr
from vaelik.models.contract import MeasurableModel, ModelContractError, check_measurable
from vaelik.progress import example_progress


@torch.no_grad()
def simulate(
    model: Any, count: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs from the model: latents ``z [N, L]`` ~ p(z) and data ``x [N, ...]``
    ~ p(x|z) (shaped as ``model.data_shape`` where the model has one), from a generator seeded
    with ``seed`` (the global one is left as it was)."""
    if not callable(getattr(model, "decode", None)):
        raise ModelContractError(
            f"{type(model).__name__} has no decode(z) -> p(x|z): BDMC simulates data from the "
            "model and needs it (estimate needs only log_joint)"
        )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        noise = torch.randn(count, model.prior.noise_dims, device=device)
        z = model.prior.sample(noise)
        x = model.decode(z).sample()
    # a wrapped model's likelihood sees examples as images; give them back as its data
    data_shape = getattr(model, "data_shape", None)
    return z, (x.reshape(count, *data_shape) if data_shape else x)


def sandwich(
    plan: Plan,
    x: torch.Tensor,
    z: torch.Tensor,
    batch_size: int,
    label: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Forward and reverse AIS on the simulated ``x`` with the exact samples ``z``: per-example
    lower and upper bounds ``[N]`` and the time both took."""
    ais = plan.estimator
    assert isinstance(ais, AnnealedImportanceSampling)
    lower, upper = [], []
    start = time.perf_counter()
    with example_progress(len(x), label, progress) as advance:
        for first in range(0, len(x), batch_size):
            rows = slice(first, first + batch_size)
            index = torch.arange(first, min(first + batch_size, len(x)))
            lower.append(plan.estimate(x[rows], index).log_px)
            reverse = in_blocks(
                partial(ais.reverse_log_weights, plan), plan.block, x[rows], index, z[rows]
            )
            upper.append(-log_mean_exp(reverse))
            advance(len(index))
    return {
        "lower": torch.cat(lower).cpu(),
        "upper": torch.cat(upper).cpu(),
        "seconds": time.perf_counter() - start,
    }


@dataclass
class BdmcResult:
    """A row per schedule length (``num_steps``, ``num_chains``, ``start``, the mean bounds,
    ``gap_mean`` +- ``gap_stderr``, ``gap_max``, ``seconds``) and per-example ``columns``
    (``index``, ``lower_<T>``, ``upper_<T>``)."""

    rows: list[dict[str, Any]]
    columns: dict[str, torch.Tensor]

    def write(self, folder: str | Path) -> Path:
        """``bdmc.json`` (a row per schedule) and ``per_example.csv`` (both bounds per
        schedule) in ``folder``."""
        output_dir = Path(folder)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "bdmc.json").write_text(json.dumps(self.rows, indent=2))
        names = list(self.columns)
        with open(output_dir / "per_example.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            for i in range(len(self.columns["index"])):
                writer.writerow([self.columns[name][i].item() for name in names])
        return output_dir


def bdmc(
    model: MeasurableModel,
    *,
    num_examples: int = 100,
    num_steps: Sequence[int] = (100, 1000),
    estimator: AnnealedImportanceSampling | None = None,
    proposal: ProposalChoice | None = None,
    num_samples: int | None = None,
    batch_size: int = 100,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    accept_rules: bool = False,
) -> BdmcResult:
    """Simulate ``num_examples`` pairs (z, x) from ``model`` and bound log p(x) from both sides
    with AIS of every schedule length in ``num_steps``.

    Args:
        estimator: the AIS whose settings all but ``num_steps`` come from (default: the
            config's ``estimator=ais``; ``num_samples`` replaces its number of chains).
        proposal: where AIS starts (by name or as an object; default: the encoder, or the
            prior where AIS's automatic rule chooses it; see ``prior_share``).
        seed: of the simulation, and of the AIS streams.
        accept_rules: let AIS's automatic start replace a ``proposal`` given here (see
            :func:`vaelik.resolve`); the start used is in each row.
    """
    check_measurable(model)
    count = check_positive("num_examples", num_examples)
    schedules = [check_positive("num_steps", steps) for steps in num_steps]
    if not schedules:
        raise ConfigError("num_steps is empty: give the schedule lengths to try, e.g. [100,1000]")
    base = chosen_estimator(estimator or "ais", {"num_samples": num_samples, "seed": seed})
    if not isinstance(base, AnnealedImportanceSampling):
        raise ConfigError(f"BDMC runs AIS: give an AIS estimator, not {base.name}")
    plans = [
        resolve(model, base.replace(num_steps=steps), proposal, accept_rules=accept_rules)
        for steps in schedules
    ]
    where = pick_device(device, model)
    with evaluation_mode(model), placed_on(model, where):
        z, x = simulate(model, count, seed, where)
        rows, columns = [], {"index": torch.arange(count)}
        for steps, plan in zip(schedules, plans, strict=True):
            label = f"AIS {steps} steps, {plan.num_samples} chains, forward and reverse"
            bounds = sandwich(plan, x, z, batch_size, label, progress)
            gap = bounds["upper"] - bounds["lower"]
            gap_mean, gap_stderr = mean_and_stderr(gap)
            rows.append(
                {
                    "num_steps": steps,
                    "num_chains": plan.num_samples,
                    "start": plan.proposal_name,
                    "lower_mean": bounds["lower"].double().mean().item(),
                    "upper_mean": bounds["upper"].double().mean().item(),
                    "gap_mean": gap_mean,
                    "gap_stderr": gap_stderr,
                    "gap_max": gap.max().item(),
                    "num_examples": count,
                    "seconds": bounds["seconds"],
                }
            )
            columns[f"lower_{steps}"] = bounds["lower"]
            columns[f"upper_{steps}"] = bounds["upper"]
    return BdmcResult(rows, columns)
