"""estimator=quadrature: exact log p(x) for 1- and 2-D latents, against closed forms and sums."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import estimate_with, plan_for
from models import (
    all_binary_images,
    linear_gaussian_log_px,
    linear_gaussian_vae,
    orthogonal_columns,
    quadrature_log_px,
    tiny_bernoulli_vae,
)
from vaelik.errors import ConfigError, UnsupportedCombinationError
from vaelik.evaluation.results import PerExampleResults
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.proposals import EncoderProposal, PriorProposal
from vaelik.inference.quadrature import Quadrature, UniformBox, cell_centres, sub_grid_masks

DIM, NOISE = 6, 0.7


def linear_gaussian_problem(latent: int, noise: float = NOISE, n: int = 10):
    """A linear-Gaussian VAE with ``latent`` dimensions, ``n`` points drawn from it and their
    exact log p(x)."""
    gen = torch.Generator().manual_seed(latent)
    weight = orthogonal_columns(DIM, latent)
    bias = torch.randn(DIM, generator=gen) * 0.3
    z = torch.randn(n, latent, generator=gen)
    x = z @ weight.T + bias + noise * torch.randn(n, DIM, generator=gen)
    model = linear_gaussian_vae(weight, bias, noise)
    return model, x.reshape(n, 1, 1, DIM), linear_gaussian_log_px(weight, bias, noise, x)


@pytest.mark.parametrize("latent", [1, 2])
def test_quadrature_gives_the_closed_form_of_a_linear_gaussian_model(latent):
    model, x, exact = linear_gaussian_problem(latent)
    estimate = estimate_with(
        Quadrature(points=200), model, x, torch.arange(len(x)), EncoderProposal()
    )
    torch.testing.assert_close(estimate.log_px, exact, rtol=0, atol=1e-4)
    # its own error check says it converged, and is not a sampling diagnostic
    assert estimate.grid_error.max() < 1e-3
    assert torch.isnan(estimate.khat).all()


@pytest.mark.slow
@pytest.mark.parametrize("latent", [1, 2])
def test_probabilities_of_every_binary_image_sum_to_one(latent):
    """Brute force over the data space: sum over all 2^6 images of p(x) is 1."""
    model = tiny_bernoulli_vae(latent_dim=latent)
    images = all_binary_images()
    estimate = estimate_with(
        Quadrature(points=300, bound=7.0),
        model,
        images,
        torch.arange(len(images)),
        EncoderProposal(),
    )
    assert torch.logsumexp(estimate.log_px, dim=0).item() == pytest.approx(0.0, abs=1e-5)
    assert estimate.grid_error.max() < 1e-3


def test_quadrature_agrees_with_the_fine_trapezoid_reference_in_one_dimension():
    model = tiny_bernoulli_vae(latent_dim=1, seed=3)
    images = all_binary_images()[::5]
    estimate = estimate_with(
        Quadrature(points=400), model, images, torch.arange(len(images)), EncoderProposal()
    )
    torch.testing.assert_close(estimate.log_px, quadrature_log_px(model, images), rtol=0, atol=1e-5)


def test_importance_sampling_converges_to_the_quadrature_value():
    """The ground truth in use: naive Monte Carlo (fine in 2-D) with many draws lands on it,
    and IS with few draws from this untrained encoder stays below it on average."""
    model = tiny_bernoulli_vae(latent_dim=2, seed=1)
    images = all_binary_images()[::4]
    index = torch.arange(len(images))
    exact = estimate_with(Quadrature(points=300), model, images, index, EncoderProposal()).log_px
    sampled = estimate_with(
        ImportanceSampling(num_samples=50_000), model, images, index, PriorProposal()
    )
    torch.testing.assert_close(sampled.log_px, exact, rtol=0, atol=0.02)
    small = estimate_with(
        ImportanceSampling(num_samples=3), model, images, index, EncoderProposal()
    )
    assert small.log_px.mean() < exact.mean()


def test_a_grid_coarser_than_the_posterior_is_reported():
    """A posterior about 0.02 wide on cells 0.2 wide: every example is flagged; on cells 0.003
    wide the rule is exact and its check, still above its actual error, is small."""
    model, x, exact = linear_gaussian_problem(1, noise=0.02, n=4)
    with pytest.warns(UserWarning, match="raise estimator.points"):
        coarse = estimate_with(Quadrature(points=60), model, x, torch.arange(4), EncoderProposal())
    assert (coarse.grid_error > 0.3).all() and ((coarse.log_px - exact).abs() > 0.3).all()
    assert (coarse.flagged == 1).all()
    fine = estimate_with(Quadrature(points=4000), model, x, torch.arange(4), EncoderProposal())
    torch.testing.assert_close(fine.log_px, exact, rtol=0, atol=1e-3)
    assert (fine.grid_error < 0.01).all() and (fine.flagged == 0).all()
    summary = PerExampleResults.concatenate([(torch.arange(4), coarse)]).summary(6)
    assert (summary["flagged_share"], summary["flag_rule"]) == (
        1.0,
        "grid error above the rule's tolerance",
    )


def test_a_box_that_cuts_off_the_posterior_is_reported():
    model, x, exact = linear_gaussian_problem(2)
    with pytest.warns(UserWarning, match="mass at the box's edge"):
        estimate = estimate_with(
            Quadrature(points=100, bound=0.5), model, x, torch.arange(10), EncoderProposal()
        )
    assert (estimate.log_px < exact).all()  # the box misses mass
    assert estimate.grid_error.max() > 0.05


def test_more_than_two_latent_dimensions_are_refused():
    model = tiny_bernoulli_vae(latent_dim=3)
    with pytest.raises(UnsupportedCombinationError, match="estimator=importance or estimator=ais"):
        plan_for(model, Quadrature(), EncoderProposal())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": 7}, "even"),
        ({"points": 2}, ">= 4"),
        ({"bound": 0.0}, "bound"),
        ({"tolerance": -1.0}, "tolerance"),
    ],
)
def test_impossible_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Quadrature(**kwargs)


def test_the_grid_and_its_sub_grids():
    centres = cell_centres(4, 2.0, 2)
    assert centres.shape == (16, 2)
    assert sorted(set(centres[:, 0].tolist())) == [-1.5, -0.5, 0.5, 1.5]
    half, ring = sub_grid_masks(4, 2)
    assert centres[half].tolist() == [[-1.5, -1.5], [-1.5, 0.5], [0.5, -1.5], [0.5, 0.5]]
    assert int(ring.sum()) == 12  # all but the 2 x 2 inner cells


def test_the_uniform_box_is_a_density():
    box = UniformBox(2.0)
    z = torch.tensor([[[0.0, 1.9]], [[0.0, 2.1]]])
    log_r = box.log_prob(None, None, z)
    assert log_r[0, 0].item() == pytest.approx(-2 * math.log(4.0))
    assert log_r[1, 0].item() == -math.inf


def test_sampling_estimators_leave_no_grid_error_column():
    model = tiny_bernoulli_vae(latent_dim=1)
    images = all_binary_images()[:3]
    parts = [
        (
            torch.arange(3),
            estimate_with(
                ImportanceSampling(num_samples=5), model, images, torch.arange(3), EncoderProposal()
            ),
        )
    ]
    results = PerExampleResults.concatenate(parts)
    assert "grid_error" not in results.rows()[0]
    assert results.summary(6)["grid_error_max"] is None
    parts = [
        (
            torch.arange(3),
            estimate_with(Quadrature(points=40), model, images, torch.arange(3), EncoderProposal()),
        )
    ]
    results = PerExampleResults.concatenate(parts)
    assert results.rows()[0]["grid_error"] >= 0
    assert results.summary(6)["grid_error_max"] == pytest.approx(results.grid_error.max().item())
