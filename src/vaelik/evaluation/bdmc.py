"""``vaelik-bdmc``: bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; Wu, Burda,
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
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vaelik.errors import ConfigError
from vaelik.evaluation.formatting import figure, report_written
from vaelik.evaluation.runner import load_model, pick_device
from vaelik.inference.diagnostics import log_mean_exp
from vaelik.inference.log_weights import check_positive
from vaelik.metrics import mean_and_stderr
from vaelik.models.vae import VAE
from vaelik.progress import example_progress


@torch.no_grad()
def simulate(model: VAE, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs from the model: latents ``z [N, L]`` ~ p(z) and data ``x [N, C, H, W]``
    ~ p(x|z), from a generator seeded with ``seed`` (the global one is left as it was)."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        noise = torch.randn(count, model.prior.noise_dims, device=device)
        z = model.prior.sample(noise)
        x = model.decode(z).sample()
    return z, x


def sandwich(model: VAE, x, z, ais, proposal, batch_size: int, label: str) -> dict[str, Any]:
    """Forward and reverse AIS on the simulated ``x`` with the exact samples ``z``: per-example
    lower and upper bounds ``[N]`` and the time both took."""
    lower, upper = [], []
    start = time.perf_counter()
    with example_progress(len(x), label, True) as advance:
        for first in range(0, len(x), batch_size):
            rows = slice(first, first + batch_size)
            index = torch.arange(first, min(first + batch_size, len(x)))
            lower.append(ais(model, x[rows], index, proposal).log_px)
            reverse = ais.reverse_log_weights(model, x[rows], index, z[rows], proposal)
            upper.append(-log_mean_exp(reverse))
            advance(len(index))
    return {
        "lower": torch.cat(lower).cpu(),
        "upper": torch.cat(upper).cpu(),
        "seconds": time.perf_counter() - start,
    }


def bdmc(cfg: DictConfig) -> list[dict[str, Any]]:
    """Simulate ``cfg.num_examples`` pairs from the checkpoint's model, then for each schedule
    length in ``cfg.num_steps`` bound log p(x) from both sides; write and print the gaps."""
    count = check_positive("num_examples", cfg.num_examples)
    schedules = [check_positive("num_steps", steps) for steps in cfg.num_steps]
    if not schedules:
        raise ConfigError("num_steps is empty: give the schedule lengths to try, e.g. [100,1000]")
    model, _ = load_model(cfg)
    device = pick_device(cfg.device)
    model.to(device).eval()
    proposal = instantiate(cfg.proposal)
    estimators = [instantiate(cfg.ais, num_steps=steps) for steps in schedules]
    for ais in estimators:
        ais.check(model, proposal)  # an impossible combination fails before any work
    z, x = simulate(model, count, cfg.seed)
    rows, columns = [], {"index": torch.arange(count)}
    for steps, ais in zip(schedules, estimators, strict=True):
        label = f"AIS {steps} steps, {ais.num_samples} chains, forward and reverse"
        bounds = sandwich(model, x, z, ais, proposal, cfg.batch_size, label)
        gap = bounds["upper"] - bounds["lower"]
        gap_mean, gap_stderr = mean_and_stderr(gap)
        rows.append(
            {
                "num_steps": steps,
                "num_chains": ais.num_samples,
                "start": ais.proposal_for(model, proposal).name,
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
    output_dir = Path(cfg.paths.output_dir)
    write_bdmc(output_dir, rows, columns)
    for row in rows:
        print(
            f"AIS {row['num_steps']:>5} steps from the {row['start']}: log p(x) between "
            f"{figure(row['lower_mean'])} and {figure(row['upper_mean'])} nats on {count} "
            "simulated examples; gap "
            f"{figure(row['gap_mean'])} +- {figure(row['gap_stderr'])} (largest "
            f"{figure(row['gap_max'])}), {row['seconds']:.1f} s"
        )
    report_written(output_dir)
    return rows


def write_bdmc(output_dir: Path, rows: list[dict[str, Any]], columns: dict) -> None:
    """``bdmc.json`` (a row per schedule) and ``per_example.csv`` (both bounds per schedule)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bdmc.json").write_text(json.dumps(rows, indent=2))
    names = list(columns)
    with open(output_dir / "per_example.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for i in range(len(columns["index"])):
            writer.writerow([columns[name][i].item() for name in names])
