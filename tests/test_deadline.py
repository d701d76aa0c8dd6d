"""The project-deadline example: graph, likelihood ratios against direct formulas, agreement of
the estimators where plain Monte Carlo is accurate, and bad values."""

from __future__ import annotations

import math

import pytest
import scipy.stats as st
import torch

from conftest import run_cli, run_cli_failing
from vaelik.cli import deadline as deadline_cli
from vaelik.examples import deadline as dl


def test_completion_time_is_the_longest_path():
    durations = torch.tensor([dl.MEANS], dtype=torch.float64)
    assert dl.completion_time(durations).item() == 15.0  # the seed's 15 days at the means
    assert sorted(dl.paths()) == sorted(
        [(1, 2, 4, 10), (1, 2, 5, 9, 10), (1, 3, 6, 9, 10), (1, 3, 7, 9, 10), (1, 3, 8, 10)]
    )
    x = torch.rand(1000, 10, dtype=torch.float64) * 10
    brute = (
        torch.stack([x[:, [t - 1 for t in path]].sum(1) for path in dl.paths()], 1).max(1).values
    )
    torch.testing.assert_close(dl.completion_time(x), brute)


@pytest.mark.parametrize(
    "proposal", [dl.scale_all(4.0), dl.critical_path(3.0), dl.PathMixture()], ids=lambda p: p.name
)
def test_likelihood_ratio_matches_a_direct_formula(proposal):
    x = proposal.sample(200, torch.Generator().manual_seed(0))
    _, log_ratio, _ = dl.log_weights(proposal, 200, 70.0, seed=0)
    p = st.expon(scale=dl.MEANS).logpdf(x.numpy()).sum(1)
    if isinstance(proposal, dl.PathMixture):
        dens = sum(
            math.exp(lw) * st.expon(scale=c.means.numpy()).pdf(x.numpy()).prod(1)
            for lw, c in zip(proposal.log_weights.tolist(), proposal.components, strict=True)
        )
        q = torch.log(torch.as_tensor(dens)).numpy()
    else:
        q = st.expon(scale=proposal.means.numpy()).logpdf(x.numpy()).sum(1)
    torch.testing.assert_close(log_ratio, torch.as_tensor(p - q), rtol=1e-9, atol=1e-9)


def test_estimators_agree_where_plain_monte_carlo_is_accurate():
    """At 40 days P is about 4e-3: plain MC is accurate, and every proposal must agree with it
    within their combined standard errors; and the mean completion time is about 18.2 days."""
    estimates = [
        dl.estimate(p, 400_000, 40.0, seed=1)
        for p in (dl.naive(), dl.scale_all(), dl.critical_path(), dl.PathMixture(target=40.0))
    ]
    reference = estimates[0]
    for other in estimates[1:]:
        gap = abs(other.probability - reference.probability)
        assert gap < 4 * math.hypot(other.stderr, reference.stderr), (other.proposal, gap)
        spread = math.hypot(other.mean_completion_stderr, reference.mean_completion_stderr)
        assert abs(other.mean_completion - reference.mean_completion) < 4 * spread
    assert 17.9 < reference.mean_completion < 18.5
    assert reference.relative_efficiency == pytest.approx(1.0, rel=0.01)  # plain MC against itself


def test_the_tilted_path_mixture_beats_the_seeds_proposals_at_70_days():
    results = {
        p.name: dl.estimate(p, 200_000, 70.0, seed=2)
        for p in (dl.scale_all(), dl.critical_path(), dl.PathMixture())
    }
    assert (
        results["path_mixture"].stderr
        < results["critical_path"].stderr
        < results["scale_all"].stderr
    )
    for r in results.values():
        assert 2.5e-5 < r.probability < 4e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["proposal=scale_all", "proposal.factor=-2"], "factor must be > 0"),
        (["threshold=-1"], "threshold must be >= 0"),
        (["num_samples=0"], "num_samples must be >= 1"),
        (["proposal=path_mixture", "proposal.defensive=1.5"], "defensive must be in"),
    ],
)
def test_bad_values_fail_clearly(argv, message, tmp_path, monkeypatch, capsys):
    output = run_cli_failing(
        deadline_cli.main,
        [
            *argv,
            "num_samples=1000" if "num_samples=0" not in argv else "seed=0",
            f"hydra.run.dir={tmp_path}",
        ],
        monkeypatch,
        capsys,
    )
    assert message in output


def test_command_writes_summary_and_the_two_figures(tmp_path, monkeypatch):
    run_cli(
        deadline_cli.main,
        [
            "proposal=critical_path",
            "num_samples=20000",
            "figures=true",
            "figure_sizes=[1000,10000]",
            f"hydra.run.dir={tmp_path}",
        ],
        monkeypatch,
    )
    assert (tmp_path / "figure2_monte_carlo.png").stat().st_size > 5000
    assert (tmp_path / "figure3_importance_sampling.png").stat().st_size > 5000
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["proposal"] == "critical_path" and set(summary["curves"]) == {
        "naive",
        "scale_all",
        "critical_path",
        "path_mixture",
    }
