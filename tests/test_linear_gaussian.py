"""Estimators on a linear-Gaussian VAE, where log p(x) and the posterior are closed-form."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import estimate_with
from models import linear_gaussian_log_px, linear_gaussian_vae, orthogonal_columns
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.proposals import (
    DefensiveProposal,
    EncoderProposal,
    InflatedProposal,
    PriorProposal,
    StudentTProposal,
)

DIM, LATENT, NOISE = 6, 3, 0.7


@pytest.fixture(scope="module")
def problem():
    """Weights, bias and 12 data points drawn from the model itself."""
    gen = torch.Generator().manual_seed(0)
    weight = orthogonal_columns(DIM, LATENT)
    bias = torch.randn(DIM, generator=gen) * 0.3
    z = torch.randn(12, LATENT, generator=gen)
    x = z @ weight.T + bias + NOISE * torch.randn(12, DIM, generator=gen)
    exact = linear_gaussian_log_px(weight, bias, NOISE, x)
    return weight, bias, x.reshape(12, 1, 1, DIM), exact


@pytest.mark.parametrize("k", [1, 7, 300])
def test_exact_posterior_gives_the_exact_value_with_zero_variance(problem, k):
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE)
    estimate = estimate_with(
        ImportanceSampling(num_samples=k), model, x, torch.arange(12), EncoderProposal()
    )
    torch.testing.assert_close(estimate.log_px, exact, rtol=0, atol=2e-4)
    assert estimate.log_weight_var.max() < 1e-7
    assert torch.all(estimate.ess > 1 - 1e-6)


@pytest.mark.parametrize(
    "proposal",
    [
        EncoderProposal(),
        StudentTProposal(4.0),
        InflatedProposal(1.5),
        DefensiveProposal(0.2),
        PriorProposal(),
    ],
    ids=["encoder", "student_t", "inflated", "defensive", "prior"],
)
def test_importance_sampling_converges_to_the_exact_value(problem, proposal):
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.15)
    index = torch.arange(12)
    errors = []
    for k in (10, 100, 20_000):
        estimate = estimate_with(ImportanceSampling(num_samples=k), model, x, index, proposal)
        errors.append((estimate.log_px - exact).abs().mean().item())
    # the delta method's standard error of log p_hat: sqrt((1 / ESS - 1) / K), ESS normalised
    stderr = ((1 / estimate.ess - 1) / 20_000).sqrt().mean().item()
    assert errors[-1] < min(errors[0], 4 * stderr, 0.05), (errors, stderr)
    # the IWAE bound: from below, on average over 2,000 independent K = 10 estimates
    copies = x[:1].expand(2000, -1, -1, -1)
    bound = estimate_with(
        ImportanceSampling(num_samples=10), model, copies, torch.arange(2000), proposal
    ).log_px
    assert bound.mean() < exact[0]


def test_khat_flags_a_too_narrow_proposal_and_clears_a_wide_one(problem):
    """q with half the posterior's scale has infinite-variance weights (k-hat > 0.7); the same
    q inflated by 3 (1.5 x the posterior's scale) has bounded weights (k-hat < 0.5)."""
    weight, bias, x, _ = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.5)
    index = torch.arange(12)
    narrow = estimate_with(ImportanceSampling(num_samples=5000), model, x, index, EncoderProposal())
    wide = estimate_with(
        ImportanceSampling(num_samples=5000), model, x, index, InflatedProposal(3.0)
    )
    assert (narrow.khat > 0.7).float().mean() > 0.5, narrow.khat
    assert torch.all(wide.khat < 0.5), wide.khat
    assert wide.ess.mean() > narrow.ess.mean()


def test_prior_estimator_converges_in_a_2d_latent_space():
    gen = torch.Generator().manual_seed(1)
    weight = orthogonal_columns(4, 2, scale=1.0, seed=1)
    bias = torch.zeros(4)
    x = torch.randn(8, 2, generator=gen) @ weight.T + 0.5 * torch.randn(8, 4, generator=gen)
    exact = linear_gaussian_log_px(weight, bias, 0.5, x)
    model = linear_gaussian_vae(weight, bias, 0.5, posterior_error=0.5)
    prior_estimator = ImportanceSampling(
        num_samples=100_000, proposal=PriorProposal(), name="prior"
    )
    estimate = estimate_with(
        prior_estimator, model, x.reshape(8, 1, 1, 4), torch.arange(8), EncoderProposal()
    )
    torch.testing.assert_close(estimate.log_px, exact, rtol=0, atol=0.02)


@pytest.mark.slow
def test_ais_is_close_to_the_exact_value_from_the_prior(problem):
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.5)
    index = torch.arange(12)
    ais = AnnealedImportanceSampling(
        num_samples=16, num_steps=1000, leapfrog_steps=5, step_size=0.1
    )
    estimate = estimate_with(ais, model, x, index, PriorProposal())
    plain = estimate_with(ImportanceSampling(num_samples=16), model, x, index, PriorProposal())
    error = estimate.log_px - exact
    assert abs(error.mean()) < 0.05 and error.abs().mean() < 0.1, error
    assert error.abs().mean() < (plain.log_px - exact).abs().mean() / 10


def test_exp_of_the_estimate_is_unbiased(problem):
    """E[p_hat(x)] = p(x): a z-test over 40,000 independent K = 3 estimates of one example."""
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.2)
    copies = x[:1].expand(40_000, -1, -1, -1)
    estimate = estimate_with(
        ImportanceSampling(num_samples=3),
        model,
        copies,
        torch.arange(40_000),
        InflatedProposal(1.3),
    )
    ratio = torch.exp(estimate.log_px - exact[0])
    z_score = (ratio.mean() - 1) / (ratio.std() / math.sqrt(ratio.numel()))
    assert abs(z_score) < 4, z_score


@pytest.mark.slow
def test_results_do_not_depend_on_chunks_batches_or_order(problem):
    weight, bias, x, _ = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.3)
    index = torch.arange(100, 112)
    reference = estimate_with(
        ImportanceSampling(num_samples=600, chunk_size=20_000), model, x, index, StudentTProposal()
    )
    for chunk_size in (1, 7, 600, 1000):
        other = estimate_with(
            ImportanceSampling(num_samples=600, chunk_size=chunk_size),
            model,
            x,
            index,
            StudentTProposal(),
        )
        torch.testing.assert_close(other.log_px, reference.log_px, rtol=0, atol=1e-6)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    first, second = order[:5], order[5:]
    parts = [
        estimate_with(
            ImportanceSampling(num_samples=600), model, x[rows], index[rows], StudentTProposal()
        ).log_px
        for rows in (first, second)
    ]
    torch.testing.assert_close(torch.cat(parts), reference.log_px[order], rtol=0, atol=1e-6)
    # and a different seed gives different draws
    reseeded = estimate_with(
        ImportanceSampling(num_samples=600, seed=1), model, x, index, StudentTProposal()
    )
    assert not torch.allclose(reseeded.log_px, reference.log_px, rtol=0, atol=1e-9)


def test_ais_does_not_depend_on_how_the_batch_is_cut(problem):
    weight, bias, x, _ = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.3)
    index = torch.arange(12)
    common = dict(num_samples=4, num_steps=20, leapfrog_steps=3, prior_share=0.25)
    whole = estimate_with(
        AnnealedImportanceSampling(**common, chunk_size=1000), model, x, index, EncoderProposal()
    )
    pieces = estimate_with(
        AnnealedImportanceSampling(**common, chunk_size=4), model, x, index, EncoderProposal()
    )
    torch.testing.assert_close(pieces.log_px, whole.log_px, rtol=0, atol=1e-5)
