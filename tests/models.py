"""Tiny VAEs for exact-answer tests, built from the real components."""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal

from vaelik.models.guides import DiagonalGaussianGuide
from vaelik.models.likelihoods import BernoulliHead, GaussianHead
from vaelik.models.networks import MLPDecoder, MLPEncoder
from vaelik.models.priors import StandardNormal
from vaelik.models.vae import VAE

SHAPE = (1, 2, 3)  # D = 6 binary pixels


def tiny_bernoulli_vae(latent_dim: int = 1, seed: int = 0) -> VAE:
    """A randomly initialised MLP VAE over 6 binary pixels, small enough for brute-force p(x)."""
    torch.manual_seed(seed)
    model = VAE(
        guide=DiagonalGaussianGuide(
            MLPEncoder(SHAPE, 2 * latent_dim, hidden=(16,), activation="tanh"), latent_dim
        ),
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


def linear_gaussian_vae(
    weight: torch.Tensor, bias: torch.Tensor, noise: float, posterior_error: float = 0.0
) -> VAE:
    """x = W z + b + noise * eps with z ~ N(0, I_L), x in R^D (as images ``[1, 1, D]``).

    p(x) = N(b, W W^T + noise^2 I) is closed-form; so is the posterior,
    N(S W^T (x - b) / noise^2, S) with S = (I + W^T W / noise^2)^-1, which is diagonal when W
    has orthogonal columns. The encoder is set to that posterior's mean and (diagonal) standard
    deviation, shifted by ``posterior_error`` and scaled by ``1 - posterior_error``.
    """
    dim, latent = weight.shape
    shape = (1, 1, dim)
    w, b = weight.double(), bias.double()
    cov = torch.linalg.inv(torch.eye(latent, dtype=torch.float64) + w.T @ w / noise**2)
    std = cov.diagonal().sqrt() * (1 - posterior_error)
    model = VAE(
        guide=DiagonalGaussianGuide(
            MLPEncoder(shape, 2 * latent, hidden=()), latent, min_scale=0.0
        ),
        prior=StandardNormal(latent),
        decoder=MLPDecoder(latent, (2, 1, dim), hidden=()),
        likelihood=GaussianHead(data_channels=1),
    )
    gain = cov @ w.T / noise**2
    with torch.no_grad():
        enc, dec = model.guide.encoder.net[0], model.decoder.net[0]
        enc.weight.zero_()
        enc.weight[:latent] = gain.float()
        enc.bias[:latent] = (-gain @ b + posterior_error).float()
        enc.bias[latent:] = torch.log(torch.expm1(std)).float()  # softplus^-1
        dec.weight.zero_()
        dec.weight[:dim] = weight
        dec.bias[:dim] = bias
        dec.bias[dim:] = math.log(noise)
    return model.eval()


def linear_gaussian_log_px(weight, bias, noise, x: torch.Tensor) -> torch.Tensor:
    """Exact log N(x; b, W W^T + noise^2 I) in float64 for ``x [B, 1, 1, D]``."""
    w = weight.double()
    cov = w @ w.T + noise**2 * torch.eye(w.shape[0], dtype=torch.float64)
    return MultivariateNormal(bias.double(), cov).log_prob(x.double().flatten(1))


def orthogonal_columns(dim: int, latent: int, scale: float = 1.5, seed: int = 0) -> torch.Tensor:
    """A ``[dim, latent]`` matrix with orthogonal columns of different lengths."""
    q, _ = torch.linalg.qr(torch.randn(dim, latent, generator=torch.Generator().manual_seed(seed)))
    return q * scale * torch.linspace(0.5, 1.5, latent)
