"""The per-example refined proposal: it finds a diagonal posterior exactly, keeps importance
sampling unbiased, and depends on the example alone."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import compose_config, estimate_with, run_cli
from models import linear_gaussian_log_px, linear_gaussian_vae, orthogonal_columns
from vaelik.cli import train
from vaelik.errors import SettingError, UnsupportedCombinationError
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.proposals import EncoderProposal
from vaelik.inference.refinement import RefinedProposal, adam_ascent
from vaelik.models.factory import build_model

DIM, LATENT, NOISE = 6, 3, 0.7


@pytest.fixture(scope="module")
def problem():
    """A linear-Gaussian model with a diagonal posterior, 12 points drawn from it, and the
    exact log p(x)."""
    gen = torch.Generator().manual_seed(4)
    weight = orthogonal_columns(DIM, LATENT)
    bias = torch.randn(DIM, generator=gen) * 0.3
    x = torch.randn(12, LATENT, generator=gen) @ weight.T + bias
    x = x + NOISE * torch.randn(12, DIM, generator=gen)
    return weight, bias, x.reshape(12, 1, 1, DIM), linear_gaussian_log_px(weight, bias, NOISE, x)


def test_refinement_finds_the_exact_posterior_from_a_wrong_encoder(problem):
    """The posterior is diagonal Gaussian, so the refined proposal can be it: its weights are
    then all equal and one draw gives log p(x)."""
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.4)
    index = torch.arange(12)
    encoder = estimate_with(ImportanceSampling(num_samples=1), model, x, index, EncoderProposal())
    refined = estimate_with(
        ImportanceSampling(num_samples=1),
        model,
        x,
        index,
        RefinedProposal(steps=600, samples=16, lr=0.03),
    )
    assert (encoder.log_px - exact).abs().mean() > 0.5
    torch.testing.assert_close(refined.log_px, exact, rtol=0, atol=0.01)


def test_importance_sampling_from_the_refined_proposal_is_unbiased(problem):
    """E[p_hat(x)] = p(x): a z-test over 40,000 independent K = 2 estimates of one example,
    the refinement (3 steps, a proposal still off the posterior) fixed by the example."""
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.3)
    copies = x[:1].expand(40_000, -1, -1, -1)
    proposal = RefinedProposal(steps=3, samples=4, lr=0.05)
    estimate = estimate_with(
        ImportanceSampling(num_samples=2), model, copies, torch.arange(40_000), proposal
    )
    ratio = torch.exp(estimate.log_px.double() - exact[0])
    assert ratio.std() > 0.01  # the proposal is not exact: the test can fail
    z_score = (ratio.mean() - 1) / (ratio.std() / math.sqrt(ratio.numel()))
    assert abs(z_score) < 4, z_score


def test_an_example_gets_the_same_refinement_in_any_batch(problem):
    weight, bias, x, _ = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.3)
    index = torch.arange(100, 112)
    estimator = ImportanceSampling(num_samples=50)
    proposal = RefinedProposal(steps=5)
    whole = estimate_with(estimator, model, x, index, proposal).log_px
    alone = torch.cat(
        [
            estimate_with(estimator, model, x[i : i + 1], index[i : i + 1], proposal).log_px
            for i in (0, 7)
        ]
    )
    torch.testing.assert_close(alone, whole[[0, 7]], rtol=0, atol=1e-5)
    encoder = estimate_with(estimator, model, x, index, EncoderProposal()).log_px
    unrefined = estimate_with(estimator, model, x, index, RefinedProposal(steps=0)).log_px
    assert torch.equal(unrefined, encoder) and not torch.allclose(whole, encoder)


def test_ais_starts_from_the_refined_proposal(problem):
    weight, bias, x, exact = problem
    model = linear_gaussian_vae(weight, bias, NOISE, posterior_error=0.4)
    ais = AnnealedImportanceSampling(num_samples=4, num_steps=10, leapfrog_steps=2, prior_share=0)
    index = torch.arange(12)
    from_encoder = estimate_with(ais, model, x, index, EncoderProposal()).log_px
    refined = estimate_with(ais, model, x, index, RefinedProposal(steps=200, lr=0.02)).log_px
    assert (refined - exact).abs().mean() < (from_encoder - exact).abs().mean() / 5


def test_adam_ascent_climbs_element_wise():
    """On f(p) = -(p - c)^2 each element reaches its own c; the first step is lr * sign."""
    target = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    parameter = torch.zeros(2, 2)
    m, v = torch.zeros(2, 2), torch.zeros(2, 2)
    adam_ascent(parameter, -2 * (parameter - target), m, v, 1, 0.1)
    torch.testing.assert_close(parameter, 0.1 * target.sign(), rtol=0, atol=1e-6)
    for step in range(2, 3000):
        adam_ascent(parameter, -2 * (parameter - target), m, v, step, 0.1)
    torch.testing.assert_close(parameter, target, rtol=0, atol=1e-3)


@pytest.mark.parametrize("settings", [{"steps": -1}, {"samples": 0}, {"lr": 0.0}, {"steps": 2.5}])
def test_impossible_settings_are_refused(settings):
    with pytest.raises(SettingError):
        RefinedProposal(**settings)


def test_a_guide_that_is_not_a_diagonal_gaussian_is_refused():
    cfg = compose_config(overrides=["posterior=iaf", "latent_dim=2", "encoder.hidden=[8]"])
    model = build_model(cfg, "binary").eval()
    x = torch.randint(0, 2, (2, 1, 28, 28)).float()
    with pytest.raises(UnsupportedCombinationError, match="proposal=refined"):
        estimate_with(
            ImportanceSampling(num_samples=2), model, x, torch.arange(2), RefinedProposal(steps=1)
        )


def test_inside_inference_mode_the_need_for_gradients_is_said(problem):
    weight, bias, x, _ = problem
    model = linear_gaussian_vae(weight, bias, NOISE)
    estimator = ImportanceSampling(num_samples=2)
    with torch.inference_mode(), pytest.raises(SettingError, match="inference_mode"):
        estimate_with(estimator, model, x, torch.arange(12), RefinedProposal(steps=1))
    with torch.inference_mode(), torch.inference_mode(False):  # as the training callback runs it
        assert torch.isfinite(
            estimate_with(estimator, model, x, torch.arange(12), RefinedProposal(steps=1)).log_px
        ).all()


@pytest.mark.slow
def test_a_training_run_validates_with_the_refined_proposal(tmp_path, monkeypatch):
    """Lightning validates under inference mode; the callback's refinement still runs."""
    run_cli(
        train.main,
        [
            "debug=fast",
            "proposal=refined",
            "proposal.steps=2",
            "callbacks.log_likelihood.every_n_epochs=1",
            "callbacks.log_likelihood.convergence_ks=null",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ],
        monkeypatch,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isfinite(metrics["val/log_px"]) and metrics["val/log_px"] < 0
