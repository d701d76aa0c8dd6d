"""Tiny VAEs for exact-answer tests, built from the real components."""

from __future__ import annotations

import torch

from vaelik.latent import DiagonalGaussian, StandardNormal
from vaelik.likelihoods import BernoulliHead
from vaelik.model import VAE
from vaelik.networks import MLPDecoder, MLPEncoder

SHAPE = (1, 2, 3)  # D = 6 binary pixels


def tiny_bernoulli_vae(latent_dim: int = 1, seed: int = 0) -> VAE:
    """A randomly initialised MLP VAE over 6 binary pixels, small enough for brute-force p(x)."""
    torch.manual_seed(seed)
    model = VAE(
        encoder=MLPEncoder(SHAPE, 2 * latent_dim, hidden=(16,), activation="tanh"),
        posterior=DiagonalGaussian(latent_dim),
        prior=StandardNormal(latent_dim),
        decoder=MLPDecoder(latent_dim, SHAPE, hidden=(16,), activation="tanh"),
        likelihood=BernoulliHead(data_channels=1),
    )
    with torch.no_grad():  # make p(x|z) depend strongly on z, so that the estimators can differ
        model.decoder.net[-1].weight.mul_(4.0)
    return model.eval()


def all_binary_images() -> torch.Tensor:
    """Every one of the 2^6 binary images of SHAPE: ``[64, 1, 2, 3]``."""
    codes = torch.arange(2**6)
    bits = (codes.unsqueeze(1) >> torch.arange(6)) & 1
    return bits.float().reshape(-1, *SHAPE)


@torch.no_grad()
def quadrature_log_px(model: VAE, x: torch.Tensor, points: int = 20001) -> torch.Tensor:
    """log p(x) = log integral N(z; 0, 1) p(x|z) dz for a 1-D latent, by the trapezoid rule on
    [-10, 10] in float64 (error far below the Monte Carlo tolerances used)."""
    z = torch.linspace(-10, 10, points, dtype=torch.float64)
    log_prior = -0.5 * z**2 - 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    log_lik = model.decode(
        z.float().unsqueeze(-1).unsqueeze(-1).expand(-1, x.shape[0], 1)
    ).log_prob(x)
    integrand = log_lik.double() + log_prior.unsqueeze(1)  # [points, B]
    dz = z[1] - z[0]
    weights = torch.full((points,), float(dz), dtype=torch.float64)
    weights[[0, -1]] *= 0.5
    return torch.logsumexp(integrand + weights.log().unsqueeze(1), dim=0)
