"""Importance sampling against exact answers, its K = 1 identity with the ELBO, reductions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from conftest import estimate_with
from models import all_binary_images, quadrature_log_px, tiny_bernoulli_vae
from vaelik.inference.diagnostics import log_mean_exp, log_weight_variance, normalized_ess
from vaelik.inference.estimators import Estimate, ImportanceSampling
from vaelik.inference.log_weights import CPU_CHUNK, DEVICE_CHUNK, importance_log_weights
from vaelik.inference.objectives import Elbo
from vaelik.inference.proposals import EncoderProposal, PriorProposal
from vaelik.inference.streams import Draws, example_keys


def test_quadrature_sums_to_one_over_all_images():
    """The brute-force reference itself: p(x) over all 2^D images sums to 1."""
    model = tiny_bernoulli_vae()
    total = torch.logsumexp(quadrature_log_px(model, all_binary_images()), dim=0)
    assert abs(total.item()) < 1e-6


@pytest.mark.parametrize("proposal", [EncoderProposal(), PriorProposal()], ids=["encoder", "prior"])
def test_importance_sampling_matches_brute_force_log_px(proposal):
    model = tiny_bernoulli_vae()
    x = all_binary_images()[::4]
    exact = quadrature_log_px(model, x)
    index = torch.arange(len(x))
    log_w = importance_log_weights(model, x, index, proposal, num_samples=50_000, chunk_size=7_000)
    estimate = log_mean_exp(log_w)
    # delta method: sd of log p_hat ~ sd(w) / (sqrt(K) mean(w))
    w = torch.exp(log_w - log_w.max(0).values)
    rel_sd = w.std(0) / (w.mean(0) * math.sqrt(log_w.shape[0]))
    assert torch.all((estimate - exact).abs() < 5 * rel_sd + 1e-6), (estimate - exact, rel_sd)


def test_exp_of_estimate_is_unbiased_for_px():
    """Mean of p_hat(x) over many independent K=2 estimates equals the exact p(x) (z-test)."""
    model = tiny_bernoulli_vae()
    x = all_binary_images()[5:6]
    exact = quadrature_log_px(model, x).item()
    estimator = ImportanceSampling(num_samples=2)
    copies = x.expand(20_000, -1, -1, -1)  # independent streams: one per index
    p_hat = torch.exp(
        estimate_with(estimator, model, copies, torch.arange(20_000), EncoderProposal()).log_px
    )
    ratio = p_hat / math.exp(exact)
    z_score = (ratio.mean() - 1) / (ratio.std() / math.sqrt(ratio.numel()))
    assert abs(z_score) < 4, z_score
    # while log p_hat is biased low (Jensen): the IWAE bound
    assert torch.log(p_hat).mean() < exact


def test_k1_equals_single_sample_elbo_on_the_same_draw():
    model = tiny_bernoulli_vae(latent_dim=2)
    x = all_binary_images()[:16]
    index = torch.arange(100, 116)
    estimate = estimate_with(
        ImportanceSampling(num_samples=1, seed=7), model, x, index, EncoderProposal()
    )
    # the same draw, from the documented streams: example i's noise comes from stream (seed, i)
    with torch.no_grad():
        posterior = model.posterior(x)
        eps = Draws(example_keys(7, index), 0, 1).normal(2)[0]
        z = posterior.loc + posterior.scale * eps
        q = Normal(posterior.loc, posterior.scale)
        elbo = (
            model.decode(z).log_prob(x) + Normal(0, 1).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        )
    torch.testing.assert_close(estimate.log_px, elbo.double(), rtol=0, atol=1e-5)
    assert torch.all(estimate.ess == 1.0)


def test_estimate_rises_with_k_on_average():
    model = tiny_bernoulli_vae(latent_dim=2)
    x = all_binary_images()
    index = torch.arange(len(x))
    means = [
        estimate_with(ImportanceSampling(num_samples=k), model, x, index, EncoderProposal())
        .log_px.mean()
        .item()
        for k in (1, 10, 100, 1000)
    ]
    assert means == sorted(means), means
    assert means[-1] - means[0] > 0.1


def test_closed_form_kl_equals_the_sampled_kl_in_expectation():
    model = tiny_bernoulli_vae(latent_dim=2)
    x = all_binary_images()[:8]
    torch.manual_seed(5)
    with torch.no_grad():
        posterior, terms = Elbo(num_samples=20_000).draw(model, x)
        closed_form = model.closed_form_kl(posterior)
        sampled = Elbo.sampled_kl(terms)
    assert closed_form is not None and closed_form.shape == (8,)
    torch.testing.assert_close(sampled, closed_form, rtol=0, atol=0.03)


def test_log_mean_exp_ess_and_variance_against_direct_formulas():
    log_w = torch.tensor(
        [[0.0, -1000.0], [math.log(3.0), -1001.0], [math.log(0.5), 2000.0]], dtype=torch.float64
    )
    w = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    lme = log_mean_exp(log_w)
    assert lme.dtype == torch.float64
    assert lme[0].item() == pytest.approx(math.log(w.mean().item()), abs=1e-12)
    assert lme[1].item() == pytest.approx(2000.0 - math.log(3.0), abs=1e-9)  # no overflow
    ess = normalized_ess(log_w)
    assert ess[0].item() == pytest.approx((w.sum() ** 2 / (3 * (w**2).sum())).item(), abs=1e-12)
    assert 1 / 3 - 1e-9 < ess[1].item() < 1 / 3 + 1e-9  # one weight dominates
    assert log_weight_variance(log_w)[0].item() == pytest.approx(
        torch.log(w).var().item(), abs=1e-12
    )
    est = Estimate.from_log_weights(log_w)
    assert torch.isfinite(est.log_px).all()


def test_extreme_log_weights_stay_finite():
    log_w = torch.tensor([[-1e6], [1e6], [-1e308]], dtype=torch.float64)
    est = Estimate.from_log_weights(log_w)
    assert torch.isfinite(est.log_px).all() and torch.isfinite(est.ess).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_k_or_chunk_fails_clearly(bad):
    with pytest.raises(ValueError, match="num_samples"):
        ImportanceSampling(num_samples=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        ImportanceSampling(num_samples=4, chunk_size=bad)


def test_nan_log_weights_raise():
    model = tiny_bernoulli_vae()
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN"):
        x = all_binary_images()[:2]
        importance_log_weights(model, x, torch.arange(2), EncoderProposal(), 4, 4)


def test_an_unset_chunk_size_suits_the_device_and_gives_the_same_estimate():
    estimator = ImportanceSampling(num_samples=300)
    assert estimator.pairs_per_pass(torch.device("cpu")) == CPU_CHUNK
    assert estimator.pairs_per_pass(torch.device("cuda")) == DEVICE_CHUNK
    assert (
        ImportanceSampling(num_samples=300, chunk_size=7).pairs_per_pass(torch.device("cpu")) == 7
    )
    torch.manual_seed(0)
    model = tiny_bernoulli_vae().eval()
    x = all_binary_images()[:5]
    index = torch.arange(5)
    chunked = ImportanceSampling(num_samples=300, chunk_size=7)
    unset, small = (
        estimate_with(e, model, x, index, EncoderProposal()).log_px for e in (estimator, chunked)
    )
    assert torch.allclose(unset, small, atol=1e-5)  # float32 matmuls of other sizes
