"""Bidirectional Monte Carlo: reverse AIS from exact posterior samples bounds log p(x) from above,
forward AIS from below, on data simulated from a model whose log p(x) is known."""

from __future__ import annotations

import pytest
import torch

from conftest import estimate_with, plan_for
from models import linear_gaussian_log_px, linear_gaussian_vae, orthogonal_columns
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.diagnostics import log_mean_exp
from vaelik.inference.proposals import EncoderProposal

DIM, LATENT, NOISE, N = 6, 2, 0.3, 24


@pytest.fixture(scope="module")
def simulated():
    """A linear-Gaussian VAE with a poor encoder, and N points simulated from it with the
    latents that generated them (exact posterior samples)."""
    gen = torch.Generator().manual_seed(5)
    weight = orthogonal_columns(DIM, LATENT, scale=2.0)
    bias = torch.randn(DIM, generator=gen) * 0.3
    z = torch.randn(N, LATENT, generator=gen)
    x = z @ weight.T + bias + NOISE * torch.randn(N, DIM, generator=gen)
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.6)
    exact = linear_gaussian_log_px(weight, bias, NOISE, x)
    return model, x.reshape(N, 1, 1, DIM), z, exact


def bounds(model, x, z, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    ais = AnnealedImportanceSampling(
        num_samples=4, num_steps=steps, leapfrog_steps=5, step_size=0.05, prior_share=0
    )  # the chains start from the poor encoder
    index = torch.arange(len(x))
    lower = estimate_with(ais, model, x, index, EncoderProposal()).log_px
    upper = -log_mean_exp(
        ais.reverse_log_weights(plan_for(model, ais, EncoderProposal()), x, index, z)
    )
    return lower, upper


@pytest.mark.slow
def test_forward_and_reverse_ais_sandwich_the_exact_value_and_tighten(simulated):
    model, x, z, exact = simulated
    gaps = []
    for steps in (3, 30, 300):
        lower, upper = bounds(model, x, z, steps)
        # stochastic bounds: on average over the simulated points
        assert lower.mean() <= exact.mean() + 0.01 and upper.mean() >= exact.mean() - 0.01
        gaps.append((upper - lower).mean().item())
    # measured: about 14, 6.5 and 0.6 nats
    assert gaps[0] > gaps[1] > gaps[2] > 0 and gaps[2] < 1.0, gaps


def test_reverse_chains_use_their_own_noise(simulated):
    """The reverse run does not replay the forward chains' random numbers."""
    model, x, z, _ = simulated
    ais = AnnealedImportanceSampling(num_samples=2, num_steps=5, leapfrog_steps=2)
    index = torch.arange(4)
    first = ais.reverse_log_weights(plan_for(model, ais, EncoderProposal()), x[:4], index, z[:4])
    again = ais.reverse_log_weights(plan_for(model, ais, EncoderProposal()), x[:4], index, z[:4])
    torch.testing.assert_close(first, again)  # reproducible
    assert not torch.equal(first[0], first[1])  # chains from one start differ
