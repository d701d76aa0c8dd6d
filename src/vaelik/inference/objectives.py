"""Training objectives: bounds on log p(x) built on the one log-weight routine.

Both objectives draw K latents per example from the guide, z_k = guide(x, eps_k) with
eps_k ~ N(0, I) from the training generator, and compute log w_k = log p(x|z_k) + log p(z_k)
- log q(z_k|x) with :func:`vaelik.inference.log_weights.draw_log_weights`.

- :class:`Elbo`: E_q[log p(x|z)] - w KL(q(z|x) || p(z)), the KL in closed form where torch
  knows it for the (guide, prior) pair, else the Monte Carlo mean of log q - log p over the K
  draws. w = beta times the linear warm-up (Sonderby et al. 2016); ``free_bits`` = lambda
  replaces the KL by max(lambda, KL) on the batch mean (Kingma et al. 2016).
- :class:`Iwae`: log (1/K) sum_k exp(log p(x|z_k) + w [log p(z_k) - log q(z_k|x)]) (Burda et al.
  2016; w = beta after the warm-up), which rises towards log p(x) with K.

Every objective also returns the plain ELBO (beta = 1, no warm-up, no free bits) per example, so
that ``val/elbo`` stays comparable between runs whatever they optimise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelik.errors import ConfigError
from vaelik.inference.diagnostics import log_mean_exp
from vaelik.inference.log_weights import LogWeightTerms, check_positive, draw_log_weights
from vaelik.inference.proposals import EncoderProposal
from vaelik.models.vae import VAE

ENCODER = EncoderProposal()


@dataclass
class ObjectiveTerms:
    """``loss`` (scalar, minimised), and per example ``[B]``: the plain ``elbo``, its
    ``log_px_z`` and ``kl`` parts, and the objective's own ``bound``; ``kl_weight`` w."""

    loss: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    bound: torch.Tensor
    kl_weight: float


class Objective:
    """What the objectives share: K draws per example, the KL weight schedule, free bits.

    Args:
        num_samples: K draws per example.
        beta: the KL weight after the warm-up (1 for the true bound).
        kl_warmup_epochs: the KL weight rises linearly from 0 to ``beta`` over this many epochs
            (fractional, step by step); 0 for no warm-up.
        free_bits: lambda >= 0 nats: the KL term is max(lambda, batch-mean KL) (Elbo only).
    """

    name: str
    #: K when ``num_samples`` is not given
    default_num_samples = 1

    def __init__(
        self,
        num_samples: int | None = None,
        beta: float = 1.0,
        kl_warmup_epochs: float = 0.0,
        free_bits: float = 0.0,
    ) -> None:
        if num_samples is None:
            num_samples = self.default_num_samples
        self.num_samples = check_positive("objective.num_samples", num_samples)
        if not beta >= 0:
            raise ConfigError(f"objective.beta must be >= 0, got {beta}")
        if not kl_warmup_epochs >= 0:
            raise ConfigError(f"objective.kl_warmup_epochs must be >= 0, got {kl_warmup_epochs}")
        if not free_bits >= 0:
            raise ConfigError(f"objective.free_bits must be >= 0 nats, got {free_bits}")
        self.beta = float(beta)
        self.kl_warmup_epochs = float(kl_warmup_epochs)
        self.free_bits = float(free_bits)

    def kl_weight(self, epoch: float) -> float:
        """w at (fractional) ``epoch``: beta * min(1, epoch / kl_warmup_epochs)."""
        if self.kl_warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, epoch / self.kl_warmup_epochs)

    def draw(self, model: VAE, x: torch.Tensor):
        """The guide's posterior for ``x`` and K log-weight terms ``[K, B]`` on fresh noise."""
        posterior = model.posterior(x)
        noise = torch.randn(self.num_samples, x.shape[0], posterior.noise_dims, device=x.device)
        return posterior, draw_log_weights(model, x, posterior, ENCODER, noise)

    @staticmethod
    def sampled_kl(terms: LogWeightTerms) -> torch.Tensor:
        """Monte Carlo KL(q || p) per example ``[B]``: mean_k log q(z_k|x) - log p(z_k)."""
        return (terms.log_r - terms.log_pz).mean(0)

    def __call__(self, model: VAE, x: torch.Tensor, epoch: float = 0.0) -> ObjectiveTerms:
        raise NotImplementedError


class Elbo(Objective):
    """The (beta-weighted, warmed-up, free-bits) evidence lower bound; see the module docstring."""

    name = "elbo"

    def __call__(self, model: VAE, x: torch.Tensor, epoch: float = 0.0) -> ObjectiveTerms:
        posterior, terms = self.draw(model, x)
        kl = model.closed_form_kl(posterior)
        if kl is None:
            kl = self.sampled_kl(terms)
        log_px_z = terms.log_px_z.mean(0)
        weight = self.kl_weight(epoch)
        elbo = log_px_z - kl
        if self.free_bits > 0:
            loss = -(log_px_z.mean() - weight * torch.clamp(kl.mean(), min=self.free_bits))
        else:
            loss = -(log_px_z - weight * kl).mean()
        return ObjectiveTerms(loss, elbo, log_px_z, kl, log_px_z - weight * kl, weight)


class Iwae(Objective):
    """The importance-weighted bound with K = ``num_samples`` draws (default 50, as in Burda
    et al.); see the module docstring."""

    name = "iwae"
    default_num_samples = 50

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.free_bits > 0:
            raise ConfigError(
                "objective.free_bits is defined for objective=elbo only: the IWAE bound has no "
                "separate KL term to clamp"
            )

    def __call__(self, model: VAE, x: torch.Tensor, epoch: float = 0.0) -> ObjectiveTerms:
        _, terms = self.draw(model, x)
        weight = self.kl_weight(epoch)
        tempered = terms.log_px_z + weight * (terms.log_pz - terms.log_r)
        bound = log_mean_exp(tempered)
        log_px_z, kl = terms.log_px_z.mean(0), self.sampled_kl(terms)
        return ObjectiveTerms(-bound.mean(), log_px_z - kl, log_px_z, kl, bound, weight)
