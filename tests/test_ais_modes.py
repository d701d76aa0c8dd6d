"""AIS that one posterior mode cannot fool: chains started from the prior as well as the encoder.

A hand-built model whose posterior has two separated modes, with an encoder that sits on the
smaller one; the exact answer comes from quadrature.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import estimate_with, plan_for
from models import linear_gaussian_log_px, linear_gaussian_vae, orthogonal_columns
from vaelik.errors import ConfigError
from vaelik.inference.ais import AnnealedImportanceSampling, StratifiedStart
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.proposals import EncoderProposal, PriorProposal
from vaelik.inference.quadrature import Quadrature
from vaelik.models.guides import DiagonalGaussianGuide
from vaelik.models.likelihoods import GaussianHead
from vaelik.models.networks import MLPEncoder
from vaelik.models.priors import StandardNormal
from vaelik.models.vae import VAE

NOISE = 0.3
SMALL_MODE = (-1 - math.sqrt(17)) / 2  # z^2 + z = 4: z = 1.56 and -2.56


class TwoModeDecoder(nn.Module):
    """p(x|z) = N(x; z^2 + z, 0.3^2) for one latent and one pixel: the observation x = 4 has
    posterior modes 0.07 wide at z = 1.56 and z = -2.56, the first with about 8 times the mass
    (from the prior)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [N, 1] -> [N, 2, 1, 1]
        mean = z**2 + z
        return torch.stack([mean, torch.full_like(mean, math.log(NOISE))], dim=1).view(-1, 2, 1, 1)


def two_mode_model() -> VAE:
    """The model above with an encoder N(-2.56, 0.08^2) on the smaller mode, whatever x."""
    guide = DiagonalGaussianGuide(MLPEncoder((1, 1, 1), 2, hidden=()), 1, min_scale=0.0)
    with torch.no_grad():
        layer = guide.encoder.net[0]
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([SMALL_MODE, math.log(math.expm1(0.08))]))
    model = VAE(guide, StandardNormal(1), TwoModeDecoder(), GaussianHead(data_channels=1))
    return model.eval()


@pytest.fixture(scope="module")
def two_modes():
    model = two_mode_model()
    x = torch.full((20, 1, 1, 1), 4.0)
    index = torch.arange(20)  # 20 independent estimates of the same value
    exact = estimate_with(Quadrature(points=4000), model, x, index, EncoderProposal()).log_px
    return model, x, index, exact


def ais(**kwargs) -> AnnealedImportanceSampling:
    settings = {"num_samples": 16, "num_steps": 300, "leapfrog_steps": 5, "step_size": 0.05}
    return AnnealedImportanceSampling(**(settings | kwargs))


def test_the_encoder_alone_misses_the_larger_mode_and_looks_sure_of_it(two_modes):
    model, x, index, exact = two_modes
    importance = estimate_with(
        ImportanceSampling(num_samples=1000), model, x, index, EncoderProposal()
    )
    assert (importance.log_px < exact - 1.5).all()
    from_encoder = estimate_with(ais(prior_share=0), model, x, index, EncoderProposal())
    assert (from_encoder.log_px < exact - 1.5).all()
    # the trap: its chains agree with each other
    assert (from_encoder.ess > 0.5).all() and (from_encoder.log_weight_var < 0.5).all()


@pytest.mark.slow
def test_chains_from_the_prior_recover_the_exact_value(two_modes):
    """Half of 32 chains from the prior: right on average, never 1 nat off, and the chains now
    disagree (low ESS) where the encoder's alone agreed on a wrong value."""
    model, x, index, exact = two_modes
    estimate = estimate_with(
        ais(prior_share=0.5, num_samples=32, num_steps=500), model, x, index, EncoderProposal()
    )
    error = estimate.log_px - exact
    assert abs(error.mean()) < 0.25 and error.abs().max() < 1.0, error
    assert estimate.ess.mean() < 0.5


@pytest.mark.slow
def test_the_default_starts_low_dimensional_chains_from_the_prior_and_finds_the_mass(two_modes):
    """``prior_share: auto`` on a 1-D latent: every chain from the prior, whatever the run's
    proposal; the default 32 chains x 500 steps land on the exact value where the encoder's
    chains were all 2 nats low."""
    model, x, index, exact = two_modes
    estimator = AnnealedImportanceSampling()
    assert isinstance(plan_for(model, estimator, EncoderProposal()).proposal, PriorProposal)
    error = estimate_with(estimator, model, x, index, EncoderProposal()).log_px - exact
    assert abs(error.mean()) < 0.1 and error.abs().max() < 0.5, error


@pytest.mark.slow
def test_a_mixed_start_stays_exact_where_the_encoder_is_right():
    """The stratified mixture a p + (1 - a) q keeps AIS unbiased: on a linear-Gaussian model
    with a good encoder it lands on the closed form."""
    gen = torch.Generator().manual_seed(0)
    weight, bias = orthogonal_columns(6, 2), torch.randn(6, generator=gen) * 0.3
    x = (torch.randn(8, 2, generator=gen) @ weight.T + bias).reshape(8, 1, 1, 6)
    exact = linear_gaussian_log_px(weight, bias, 0.7, x)
    model = linear_gaussian_vae(weight, bias, 0.7, posterior_error=0.2)
    estimate = estimate_with(ais(prior_share=0.25), model, x, torch.arange(8), EncoderProposal())
    error = estimate.log_px - exact
    assert abs(error.mean()) < 0.03 and error.abs().max() < 0.1, error


def test_the_start_is_stratified_and_named(two_modes):
    model = two_modes[0]
    estimator = ais(prior_share=0.3)
    start = plan_for(model, estimator, EncoderProposal()).proposal
    assert isinstance(start, StratifiedStart)
    assert (start.prior_chains, start.share) == (5, 5 / 16)
    assert start.name == "prior (5 of 16 chains) + encoder"
    assert plan_for(model, estimator, start).proposal is start  # not wrapped twice
    # from the prior already: nothing to mix
    assert isinstance(plan_for(model, estimator, PriorProposal()).proposal, PriorProposal)
    assert plan_for(model, ais(prior_share=0), EncoderProposal()).proposal.name == "encoder"
    assert plan_for(model, ais(prior_share=1), EncoderProposal()).proposal.name == "prior"


def test_auto_starts_from_the_prior_up_to_two_dimensions_only():
    for latent_dim, start in [(1, "prior"), (2, "prior"), (3, "encoder"), (32, "encoder")]:
        model = linear_gaussian_vae(orthogonal_columns(40, latent_dim), torch.zeros(40), 0.7)
        assert plan_for(model, ais(), EncoderProposal()).proposal.name == start, latent_dim


@pytest.mark.parametrize(
    ("share", "start"),
    [
        ("auto", "prior"),
        (1, "prior"),
        (1.0, "prior"),
        ("0.5", "prior (8 of 16 chains) + encoder"),
        (0, "encoder"),
    ],
)
def test_accepted_prior_shares(two_modes, share, start):
    """As Hydra passes them from the command line: auto, an int, a float, a quoted number."""
    assert plan_for(two_modes[0], ais(prior_share=share), EncoderProposal()).proposal.name == start


@pytest.mark.parametrize("share", [-0.1, 1.5, "half", None, True])
def test_impossible_prior_shares_are_refused(share):
    with pytest.raises(ConfigError, match=r"prior_share must be auto or a number in \[0, 1\]"):
        ais(prior_share=share)


def test_a_single_chain_starts_from_the_proposal(two_modes):
    """K = 1 (as in a convergence table's first column) cannot be split: no prior chain."""
    estimator = ais(prior_share=0.5, num_samples=1)
    assert plan_for(two_modes[0], estimator, EncoderProposal()).proposal.name == "encoder"


def test_a_nan_spread_or_grid_error_is_flagged_not_passed():
    from vaelik.inference.diagnostics import flag_unreliable

    nan = torch.tensor([math.nan], dtype=torch.float64)
    assert flag_unreliable(nan, nan).tolist() == [1.0]
