"""The latent-variable model: p(x, z) = p(z) p(x|z) with a guide q(z|x), as a plain nn.Module.

Estimators, objectives and proposals use two calls: ``posterior(x)`` (the guide, run once per
batch) and ``log_joint(x, z) = log p(x|z) + log p(z)``, summed over every stochastic layer.
One stochastic layer or several (model=hvae), a Gaussian or a flow posterior, any prior: all
are this class with other parts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence

from vaelik.errors import ConfigError
from vaelik.models.guides import Guide, Posterior
from vaelik.models.priors import Prior

#: the choices of ``model.init``
INITS = ("default", "he_normal")


def he_normal(module: nn.Module) -> None:
    """Redraw every linear layer's weight under ``module`` from N(0, 2 / fan_in), except layers
    whose own initialisation is part of the model (``keeps_init``: an IAF step's zero output
    layer, which makes an untrained flow the identity)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear) and not getattr(layer, "keeps_init", False):
            with torch.no_grad():
                layer.weight.normal_(0.0, (2.0 / layer.in_features) ** 0.5)


class VAE(nn.Module):
    """p(x, z) = p(z) p(x|z) with an amortised guide q(z|x).

    Args:
        guide: images ``[B, C, H, W]`` (scaled by ``input_scale``) -> :class:`Posterior`.
        prior: p(z) over the guide's ``latent_dim`` (bound to the guide, for the VampPrior).
        decoder: latents ``[N, L]`` -> likelihood parameters ``[N, P, H, W]``.
        likelihood: parameters -> p(x|z), event ``[C, H, W]``.
        input_scale: multiplies x before the guide (1/255 for 8-bit data, 1 for binary).
        init: ``default`` keeps each layer's own initialisation (PyTorch's); ``he_normal``
            redraws the weight of every linear layer of the guide, prior and decoder from
            N(0, 2 / fan_in) (He et al. 2015, as the VampPrior paper's code does), biases and
            IAF steps' zero output layers kept.
    """

    def __init__(
        self,
        guide: Guide,
        prior: Prior,
        decoder: nn.Module,
        likelihood,
        input_scale: float = 1.0,
        init: str = "default",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"model.init must be one of {', '.join(INITS)}, got {init!r}")
        if prior.latent_dim != guide.latent_dim:
            raise ConfigError(
                f"the prior is over {prior.latent_dim} dimensions but the guide draws "
                f"{guide.latent_dim}: both must use latent_dim"
            )
        self.guide = guide
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.input_scale = input_scale
        prior.bind(guide)
        if init == "he_normal":
            he_normal(self)

    @property
    def latent_dim(self) -> int:
        return self.guide.latent_dim

    @property
    def can_score(self) -> bool:
        """Whether the posterior scores latents it did not draw (False for IAF)."""
        return self.guide.can_score

    def posterior(self, x: torch.Tensor) -> Posterior:
        """q(z|x) for a batch ``x [B, C, H, W]``."""
        return self.guide(x * self.input_scale)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents ``z [..., L]``: batch ``[...]``, event ``[C, H, W]``."""
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood(params.reshape(*z.shape[:-1], *params.shape[1:]))

    def joint_terms(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) and log p(z), each ``[K, B]``, for ``x [B, C, H, W]``, ``z [K, B, L]``."""
        return self.decode(z).log_prob(x), self.prior.log_prob(z)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x|z) + log p(z), ``[K, B]``."""
        log_px_z, log_pz = self.joint_terms(x, z)
        return log_px_z + log_pz

    def closed_form_kl(self, posterior: Posterior) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per example ``[B]`` where torch knows it in closed form for this
        (posterior, prior) pair, else None (the objectives then use a Monte Carlo estimate)."""
        q, p = posterior.distribution(), self.prior.distribution()
        if q is None or p is None:
            return None
        try:
            return kl_divergence(q, p.expand(q.batch_shape))
        except NotImplementedError:
            return None

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """Means of p(x|z) for ``num`` draws z ~ p(z): ``[num, C, H, W]``."""
        device = next(self.parameters()).device
        z = self.prior.sample(torch.randn(num, self.prior.noise_dims, device=device))
        return self.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at a representative latent of q(z|x): ``[B, C, H, W]``."""
        return self.decode(self.posterior(x).mean).mean
