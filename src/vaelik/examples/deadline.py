"""``vaelik-deadline``: a rare-event example, on the same importance-sampling core.

A project of 10 tasks with independent exponential durations T_j (means theta = 4, 4, 2, 5, 2,
3, 2, 3, 2, 2 days; 2 and 3 follow 1, 4 and 5 follow 2, 6, 7 and 8 follow 3, 9 follows 5, 6
and 7, 10 follows 4, 8 and 9; Owen, "Monte Carlo theory, methods and examples", ch. 9) ends at
D(T), the longest path through the graph. We want mu = P(D >= t) for t = 70 days.

With durations drawn from a proposal q instead of the nominal p, the log-weights are

    log w_i = log 1{D(T_i) >= t} + sum_j [log p_j(T_ij) - log q(T_i)],

and mu_hat = mean(w) is computed with the VAE estimators' reductions (float64 log-mean-exp,
normalised ESS, standard error in log space; :mod:`vaelik.inference.diagnostics`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vaelik.errors import ConfigError
from vaelik.evaluation.formatting import report_written
from vaelik.inference.diagnostics import log_mean_exp, log_weight_standard_error, normalized_ess

MEANS = (4.0, 4.0, 2.0, 5.0, 2.0, 3.0, 2.0, 3.0, 2.0, 2.0)
PREDECESSORS: dict[int, tuple[int, ...]] = {
    1: (),
    2: (1,),
    3: (1,),
    4: (2,),
    5: (2,),
    6: (3,),
    7: (3,),
    8: (3,),
    9: (5, 6, 7),
    10: (4, 8, 9),
}
CRITICAL_PATH = (1, 2, 4, 10)


def completion_time(durations: torch.Tensor) -> torch.Tensor:
    """D = the longest path's length for durations ``[n, 10]``: finish_j = T_j + max finish of
    the predecessors (tasks are numbered in a topological order)."""
    finish: list[torch.Tensor] = []
    for task in range(1, 11):
        start = torch.zeros_like(durations[:, 0])
        for before in PREDECESSORS[task]:
            start = torch.maximum(start, finish[before - 1])
        finish.append(start + durations[:, task - 1])
    return finish[-1]


def paths() -> list[tuple[int, ...]]:
    """Every path from task 1 to task 10 through the graph."""
    successors: dict[int, list[int]] = {task: [] for task in PREDECESSORS}
    for task, before in PREDECESSORS.items():
        for b in before:
            successors[b].append(task)

    def walk(task: int) -> list[tuple[int, ...]]:
        if task == 10:
            return [(10,)]
        return [(task, *rest) for nxt in successors[task] for rest in walk(nxt)]

    return walk(1)


def exponential_log_prob(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """sum_j log Exp(x_j; mean m_j) = sum_j (-log m_j - x_j / m_j), for ``x [n, 10]``."""
    return (-torch.log(means) - x / means).sum(-1)


class ScaledExponentials:
    """q: each task's mean multiplied by its factor (1 keeps the nominal distribution)."""

    def __init__(self, name: str, factors: list[float]) -> None:
        if len(factors) != 10 or any(f <= 0 for f in factors):
            raise ConfigError(f"proposal {name}: need 10 factors > 0, got {factors}")
        self.name = name
        self.means = torch.tensor(MEANS, dtype=torch.float64) * torch.tensor(
            factors, dtype=torch.float64
        )

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (
            torch.empty(n, 10, dtype=torch.float64).exponential_(generator=generator) * self.means
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return exponential_log_prob(x, self.means)


def naive() -> ScaledExponentials:
    """Plain Monte Carlo: q = p."""
    return ScaledExponentials("naive", [1.0] * 10)


def scale_all(factor: float = 4.0) -> ScaledExponentials:
    """Every task's mean times ``factor`` (the simplest way to make lateness common)."""
    check_factor(factor)
    return ScaledExponentials("scale_all", [factor] * 10)


def critical_path(factor: float = 4.0) -> ScaledExponentials:
    """Only the critical path's (1, 2, 4, 10) means times ``factor``."""
    check_factor(factor)
    return ScaledExponentials(
        "critical_path", [factor if t in CRITICAL_PATH else 1.0 for t in range(1, 11)]
    )


def check_factor(factor: float) -> None:
    if not factor > 0:
        raise ConfigError(f"proposal.factor must be > 0, got {factor}")


def tilt(means: list[float], target: float) -> tuple[float, list[float]]:
    """The exponential tilt that makes a sum of exponentials (``means``) average ``target``:
    lambda in [0, 1 / max mean) with sum_j m_j / (1 - lambda m_j) = target (by bisection), the
    tilted means, and the Chernoff bound log P(sum >= target) <= -lambda target
    - sum_j log(1 - lambda m_j), returned first."""
    low, high = 0.0, 1.0 / max(means)
    for _ in range(200):
        mid = 0.5 * (low + high)
        if sum(m / (1 - mid * m) for m in means) < target:
            low = mid
        else:
            high = mid
    lam = low
    log_bound = -lam * target - sum(math.log(1 - lam * m) for m in means)
    return log_bound, [m / (1 - lam * m) for m in means]


class PathMixture:
    """A mixture over the graph's 5 paths. Component m exponentially tilts the tasks of path m
    (a common lambda, so longer tasks stretch more) until the path's mean length is ``target``
    days; the other tasks keep their nominal means. Components are weighted by each path's
    Chernoff bound on P(length >= target), so the likely ways of being late get most draws, and
    ``defensive`` weight stays on p itself. One global scaling cannot do either."""

    def __init__(self, target: float = 70.0, defensive: float = 0.01) -> None:
        if not target > 0:
            raise ConfigError(f"proposal.target must be > 0, got {target}")
        if not 0 <= defensive < 1:
            raise ConfigError(f"proposal.defensive must be in [0, 1), got {defensive}")
        self.name = "path_mixture"
        components, bounds = [], []
        for path in paths():
            log_bound, tilted = tilt([MEANS[t - 1] for t in path], target)
            factors = [1.0] * 10
            for task, mean in zip(path, tilted, strict=True):
                factors[task - 1] = mean / MEANS[task - 1]
            components.append(ScaledExponentials("path", factors))
            bounds.append(log_bound)
        weights = torch.softmax(torch.tensor(bounds, dtype=torch.float64), 0) * (1 - defensive)
        if defensive > 0:
            components.insert(0, naive())
            weights = torch.cat([torch.tensor([defensive], dtype=torch.float64), weights])
        self.components = components
        self.log_weights = torch.log(weights)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        choice = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        unit = torch.empty(n, 10, dtype=torch.float64).exponential_(generator=generator)
        means = torch.stack([c.means for c in self.components])[choice]
        return unit * means

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        per_component = torch.stack([c.log_prob(x) for c in self.components], dim=-1)
        return torch.logsumexp(per_component + self.log_weights, dim=-1)


@dataclass
class DeadlineEstimate:
    """P(D >= threshold) with its standard error, ESS and mean completion time."""

    proposal: str
    num_samples: int
    probability: float
    stderr: float
    ess: float
    relative_efficiency: float
    mean_completion: float
    mean_completion_stderr: float
    seconds: float


def log_weights(proposal, n: int, threshold: float, seed: int, chunk: int = 1_000_000):
    """Importance log-weights ``[n]`` of the indicator (float64; -inf where D < t) and of the
    plain likelihood ratio, and the completion times, drawn in chunks of ``chunk``."""
    if n < 1:
        raise ConfigError(f"num_samples must be >= 1, got {n}")
    generator = torch.Generator().manual_seed(seed)
    nominal = torch.tensor(MEANS, dtype=torch.float64)
    ratio, times = [], []
    for start in range(0, n, chunk):
        x = proposal.sample(min(chunk, n - start), generator)
        ratio.append(exponential_log_prob(x, nominal) - proposal.log_prob(x))
        times.append(completion_time(x))
    log_ratio, completion = torch.cat(ratio), torch.cat(times)
    indicator = torch.where(completion >= threshold, 0.0, -math.inf).double()
    return log_ratio + indicator, log_ratio, completion


def estimate(proposal, n: int, threshold: float, seed: int) -> DeadlineEstimate:
    """mu_hat = mean(1{D >= t} w) with the shared reductions; relative efficiency is plain Monte
    Carlo's variance mu (1 - mu) / n over this estimator's squared standard error."""
    if threshold < 0:
        raise ConfigError(f"threshold must be >= 0 days, got {threshold}")
    start = time.perf_counter()
    log_w, log_ratio, completion = log_weights(proposal, n, threshold, seed)
    probability = float(torch.exp(log_mean_exp(log_w)))
    stderr = float(log_weight_standard_error(log_w))
    weighted_times = completion * torch.exp(log_ratio)  # E_p[D] = E_q[D w]
    mean_completion = float(weighted_times.mean())
    mean_completion_stderr = float(weighted_times.std() / math.sqrt(n)) if n > 1 else math.inf
    hits = torch.isfinite(log_w)
    ess = float(normalized_ess(log_w[hits]) * hits.sum()) if hits.any() else 0.0
    efficiency = probability * (1 - probability) / n / stderr**2 if stderr > 0 else math.inf
    return DeadlineEstimate(
        proposal.name,
        n,
        probability,
        stderr,
        ess,
        efficiency,
        mean_completion,
        mean_completion_stderr,
        time.perf_counter() - start,
    )


def running_estimates(
    proposal, sizes: list[int], threshold: float, seed: int
) -> list[dict[str, float]]:
    """Estimates on the first n draws of one run, for each n in ``sizes`` (a figure's points)."""
    log_w, _, _ = log_weights(proposal, max(sizes), threshold, seed)
    rows = []
    for n in sorted(sizes):
        prefix = log_w[:n]
        rows.append(
            {
                "n": n,
                "probability": float(torch.exp(log_mean_exp(prefix))),
                "stderr": float(log_weight_standard_error(prefix)),
            }
        )
    return rows


def plot_running(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """Estimate against the number of samples, +-2 standard errors, one line per proposal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in curves.items():
        n = [r["n"] for r in rows]
        p = torch.tensor([r["probability"] for r in rows])
        se = torch.tensor([r["stderr"] for r in rows])
        ax.plot(n, p, marker="o", label=name)
        ax.fill_between(n, (p - 2 * se).clamp(min=0), p + 2 * se, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("number of samples")
    ax.set_ylabel("estimated P(completion >= threshold)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def deadline(cfg: DictConfig) -> dict[str, Any]:
    """Estimate with ``cfg.proposal`` (and plain Monte Carlo for comparison); write the table and,
    with ``figures``, the estimate against the number of samples for plain MC
    (``figure2_monte_carlo.png``) and for importance sampling
    (``figure3_importance_sampling.png``)."""
    proposal = instantiate(cfg.proposal)
    result = estimate(proposal, int(cfg.num_samples), float(cfg.threshold), int(cfg.seed))
    output = Path(cfg.paths.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    print(
        f"{result.proposal}: P(D >= {cfg.threshold:g}) = {result.probability:.4e} "
        f"+- {result.stderr:.2e} (n = {result.num_samples:,}, ESS {result.ess:,.0f}, "
        f"efficiency vs plain MC {result.relative_efficiency:,.1f}x, mean completion "
        f"{result.mean_completion:.3f} +- {result.mean_completion_stderr:.3f} days, "
        f"{result.seconds:.2f} s)"
    )
    summary = {**result.__dict__, "threshold": float(cfg.threshold)}
    if cfg.figures:
        sizes = [int(s) for s in cfg.figure_sizes]
        title = f"P(completion >= {cfg.threshold:g} days)"
        curves = {"naive": running_estimates(naive(), sizes, cfg.threshold, cfg.seed)}
        plot_running(curves, output / "figure2_monte_carlo.png", f"plain Monte Carlo: {title}")
        for name in cfg.figure_proposals:
            node = compose_proposal(name)
            curves[name] = running_estimates(instantiate(node), sizes, cfg.threshold, cfg.seed)
        plot_running(
            curves, output / "figure3_importance_sampling.png", f"importance sampling: {title}"
        )
        summary["curves"] = curves
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    report_written(output)
    return summary


def compose_proposal(name: str):
    """The proposal node of ``conf/deadline/proposal/{name}.yaml``."""
    from hydra import compose

    return compose("deadline", overrides=[f"proposal={name}", "paths.output_dir=unused"]).proposal
