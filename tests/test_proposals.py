"""Every proposal's log_prob against scipy, its sample moments (drawn from noise, as the
estimators draw), and its bad values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats as st
import torch

from vaelik.inference.proposals import (
    DefensiveProposal,
    EncoderProposal,
    InflatedProposal,
    PriorProposal,
    StudentTProposal,
)
from vaelik.inference.streams import Draws, example_keys
from vaelik.models.guides import DiagonalGaussianPosterior
from vaelik.models.priors import StandardNormal

LOC = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]], dtype=torch.float64)
SCALE = torch.tensor([[0.2, 1.5, 0.7], [1.0, 0.05, 3.0]], dtype=torch.float64)
POSTERIOR = DiagonalGaussianPosterior(LOC, SCALE)
PRIOR = StandardNormal(3).double()
# what a proposal reads of the model: its prior, and whether its guide can score latents
MODEL = SimpleNamespace(prior=PRIOR, guide=SimpleNamespace(can_score=True, name="diagonal"))


def draws(proposal, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws for each of the two examples, from noise drawn as the estimators draw it."""
    noise = proposal.draw_noise(MODEL, POSTERIOR, Draws(example_keys(0, torch.arange(2)), 0, n))
    return proposal.sample(MODEL, POSTERIOR, noise.double())


def scipy_log_prob(name: str, z: np.ndarray) -> np.ndarray:
    """Reference log r(z) ``[N, B]`` for z ``[N, B, L]`` from scipy.stats."""
    loc, scale = LOC.numpy(), SCALE.numpy()
    if name == "encoder":
        return st.norm(loc, scale).logpdf(z).sum(-1)
    if name == "prior":
        return st.norm(0, 1).logpdf(z).sum(-1)
    if name == "student_t":
        return st.t(df=4.0, loc=loc, scale=scale).logpdf(z).sum(-1)
    if name == "inflated":
        return st.norm(loc, 2.5 * scale).logpdf(z).sum(-1)
    prior = st.norm(0, 1).logpdf(z).sum(-1)
    posterior = st.norm(loc, scale).logpdf(z).sum(-1)
    return np.logaddexp(np.log(0.3) + prior, np.log(0.7) + posterior)


def moments(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance ``[B, L]`` of each proposal."""
    loc, var = LOC.numpy(), SCALE.numpy() ** 2
    return {
        "encoder": (loc, var),
        "prior": (0 * loc, 1 + 0 * var),
        "student_t": (loc, var * 4.0 / (4.0 - 2.0)),
        "inflated": (loc, 2.5**2 * var),
        "defensive": (0.7 * loc, 0.3 * 1 + 0.7 * (var + loc**2) - (0.7 * loc) ** 2),
    }[name]


PROPOSALS = {
    "encoder": EncoderProposal(),
    "prior": PriorProposal(),
    "student_t": StudentTProposal(df=4.0),
    "inflated": InflatedProposal(scale=2.5),
    "defensive": DefensiveProposal(alpha=0.3),
}


@pytest.mark.parametrize("name", list(PROPOSALS))
def test_log_prob_matches_scipy(name):
    proposal = PROPOSALS[name]
    z = torch.randn(50, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    np.testing.assert_allclose(
        proposal.log_prob(MODEL, POSTERIOR, z).numpy(),
        scipy_log_prob(name, z.numpy()),
        rtol=1e-10,
        atol=1e-10,
    )
    # and the density a draw comes with is the density of that draw
    torch.manual_seed(2)
    z, log_r = draws(proposal, 20)
    np.testing.assert_allclose(log_r.numpy(), scipy_log_prob(name, z.numpy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(PROPOSALS))
def test_samples_have_the_right_moments(name):
    torch.manual_seed(1)
    z = draws(PROPOSALS[name], 200_000)[0].numpy()
    assert z.shape == (200_000, 2, 3)
    mean, var = moments(name)
    stderr = np.sqrt(var / z.shape[0])
    assert np.all(np.abs(z.mean(0) - mean) < 5 * stderr + 1e-12)
    # variance: relative tolerance (Student-t with 4 dof has a heavy-tailed variance estimate)
    np.testing.assert_allclose(z.var(0), var, rtol=0.1 if name == "student_t" else 0.02)


def test_defensive_alpha_edges_are_the_pure_components():
    z = torch.randn(10, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(
        DefensiveProposal(0.0).log_prob(MODEL, POSTERIOR, z), POSTERIOR.log_prob(z)
    )
    torch.testing.assert_close(
        DefensiveProposal(1.0).log_prob(MODEL, POSTERIOR, z), PRIOR.log_prob(z)
    )


def test_defensive_weights_are_bounded_by_the_prior_component():
    """log r(z) >= log alpha + log p(z): the weight p(x,z)/r(z) is at most p(x|z)/alpha."""
    z = torch.randn(1000, 2, 3, dtype=torch.float64) * 10
    log_r = DefensiveProposal(0.1).log_prob(MODEL, POSTERIOR, z)
    assert torch.all(log_r >= np.log(0.1) + PRIOR.log_prob(z) - 1e-9)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: StudentTProposal(df=0), "df"),
        (lambda: StudentTProposal(df=-1), "df"),
        (lambda: InflatedProposal(scale=0), "scale"),
        (lambda: DefensiveProposal(alpha=-0.1), "alpha"),
        (lambda: DefensiveProposal(alpha=1.5), "alpha"),
    ],
)
def test_bad_values_fail_clearly(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
