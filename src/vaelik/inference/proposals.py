"""Proposal distributions r(z|x) for importance sampling, as transformations of noise.

A proposal draws latents from given base noise, ``sample(model, posterior, noise) -> (z, log r)``
with ``noise [K, B, noise_dims]`` from :meth:`draw_noise` (so per-example random streams stay
exact), and scores given latents with ``log_prob(model, posterior, z)`` where it can (AIS and the
defensive mixture need that). Student-t and inflated proposals replace the diagonal-Gaussian
*base* of the guide's draw and keep the rest of the guide (flow steps, a lower layer), so they
are defined for every guide; the encoder and prior proposals are the guide and the prior
themselves. ``check(model)`` fails before any work where a proposal is not defined.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import Independent, StudentT

from vaelik.errors import ConfigError, SettingError, UnsupportedCombinationError
from vaelik.inference.streams import Draws
from vaelik.models.contract import can_score, posterior_name
from vaelik.models.guides import Posterior, gaussian_log_prob
from vaelik.options import option_defaults


def is_plain(value: Any) -> bool:
    """A number, a text, None, or a list or tuple of them: what a plan records as it is."""
    if isinstance(value, list | tuple):
        return all(is_plain(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


class Proposal:
    """The interface and the defaults: noise of the posterior's size, always defined."""

    name: str
    #: True where log r(z|x) of any latent needs log q(z|x) of latents the guide did not draw
    scores_posterior = False

    def settings(self) -> dict[str, Any]:
        """The settings that shape this distribution (``df``, ``scale``, ...): the instance's
        attributes, which must be plain values (numbers, text, lists of them) for a plan to
        record them. A proposal holding anything else (a tensor, a network) overrides this
        method with the plain values that determine what it draws."""
        for key, value in vars(self).items():
            if not is_plain(value):
                raise ConfigError(
                    f"proposal {self.name!r} holds {key!r} of type {type(value).__name__}, which "
                    "a plan cannot record: give its class a settings() method returning the "
                    "plain values that determine its draws"
                )
        return dict(vars(self))

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        """Equal proposals are of one class with equal settings (they draw alike); one whose
        settings cannot be recorded equals itself only."""
        if type(other) is not type(self):
            return NotImplemented
        try:
            return self.settings() == other.settings()  # type: ignore[attr-defined]
        except ConfigError:
            return self is other

    def __hash__(self) -> int:
        return hash(type(self))

    def record(self) -> dict[str, Any]:
        """``{"name": ..., "settings": {...}}``: how a plan records this proposal."""
        return {"name": self.name, "settings": self.settings()}

    def check(self, model: Any, needs_log_prob: bool = False) -> None:
        """Raise :class:`UnsupportedCombinationError` where this proposal cannot be used with
        ``model`` (and, with ``needs_log_prob``, where it cannot score latents)."""
        if (needs_log_prob or self.scores_posterior) and not can_score(model):
            need = "the defensive mixture" if self.scores_posterior else "AIS"
            guide = posterior_name(model)
            raise UnsupportedCombinationError(
                f"proposal={self.name} with posterior={guide}: {need} needs "
                f"log q(z|x) at latents the guide did not draw, and posterior="
                f"{guide} cannot score them; use proposal=prior"
                + (
                    " or AIS's prior_share=1 (chains from the prior; auto does so for this guide)"
                    if needs_log_prob
                    else ", encoder, student_t or inflated"
                )
            )

    def prepare(
        self, model: Any, x: torch.Tensor, posterior: Posterior, keys: torch.Tensor
    ) -> Posterior:
        """The posterior this proposal draws around for the examples ``x [B, ...]`` (their
        stream keys ``keys [B]``), made once per batch before any draw: ``posterior`` itself,
        except for a proposal fitted to each example (:mod:`vaelik.inference.refinement`)."""
        return posterior

    def noise_dims(self, model: Any, posterior: Posterior) -> int:
        return posterior.noise_dims

    def draw_noise(self, model: Any, posterior: Posterior, draws: Draws) -> torch.Tensor:
        """``[n, B, noise_dims]`` base noise: ``draws``' share of every example's stream."""
        return draws.normal(self.noise_dims(model, posterior))

    def sample(
        self, model: Any, posterior: Posterior, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``z [K, B, L]`` and ``log r(z|x) [K, B]`` from ``noise [K, B, D]``."""
        raise NotImplementedError

    def log_prob(self, model: Any, posterior: Posterior, z: torch.Tensor) -> torch.Tensor:
        """log r(z|x) ``[K, B]`` of given latents."""
        raise NotImplementedError


class EncoderProposal(Proposal):
    """r(z|x) = q(z|x): the guide itself, trained to sit where p(z|x) puts its mass."""

    name = "encoder"

    def sample(self, model, posterior, noise):
        return posterior.sample(noise)

    def log_prob(self, model, posterior, z):
        return posterior.log_prob(z)


class PriorProposal(Proposal):
    """r(z|x) = p(z): naive Monte Carlo from the prior; fine in 2-D, not in 50-D."""

    name = "prior"

    def check(self, model: Any, needs_log_prob: bool = False) -> None:
        """Defined for every model: it scores latents with the prior alone."""

    def noise_dims(self, model, posterior):
        return model.prior.noise_dims

    def sample(self, model, posterior, noise):
        z = model.prior.sample(noise)
        return z, model.prior.log_prob(z)

    def log_prob(self, model, posterior, z):
        return model.prior.log_prob(z)


class BaseReplacement(Proposal):
    """r(z|x): the guide with its diagonal-Gaussian base N(mu, sigma^2) replaced by
    :meth:`base_log_prob`'s distribution; the guide's completion (flow steps, lower layers)
    stays. log r(z|x) = log r_base(z_0) + the completion's own terms."""

    def base_draw(self, posterior: Posterior, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def base_log_prob(self, posterior: Posterior, base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, model, posterior, noise):
        dims = posterior.noise_dims
        base = self.base_draw(posterior, noise)
        return posterior.complete(
            base, self.base_log_prob(posterior, base), noise[..., posterior.base_dims : dims]
        )

    def log_prob(self, model, posterior, z):
        return posterior.log_prob_with_base(z, lambda base: self.base_log_prob(posterior, base))


class StudentTProposal(BaseReplacement):
    """Base prod_l t_nu(z0_l; mu_l(x), sigma_l(x)): the posterior's location and scale with
    Student-t tails (``df`` = nu > 0; nu -> inf recovers q(z|x)). Heavier tails than the target
    bound the importance weights where a Gaussian proposal is too narrow.

    A t draw is eps / sqrt(V / nu) with eps ~ N(0, 1) and V ~ chi^2_nu: the noise is the
    guide's normals followed by one chi-square value per base dimension."""

    name = "student_t"

    def __init__(self, df: float = option_defaults("proposal", "student_t")["df"]) -> None:
        if not df > 0:
            raise SettingError("df", f"(degrees of freedom) must be > 0, got {df}")
        self.df = float(df)

    def noise_dims(self, model, posterior):
        return posterior.noise_dims + posterior.base_dims

    def draw_noise(self, model, posterior, draws):
        normals = draws.normal(posterior.noise_dims)
        chi2 = draws.gamma(0.5 * self.df, posterior.base_dims) / 0.5  # > 0: gamma is clamped
        return torch.cat([normals, chi2], dim=-1)

    def base_draw(self, posterior, noise):
        eps = noise[..., : posterior.base_dims]
        chi2 = noise[..., posterior.noise_dims :]
        return posterior.loc + posterior.scale * (eps * torch.rsqrt(chi2 / self.df))

    def base_log_prob(self, posterior, base):
        df = torch.full_like(posterior.loc, self.df)
        return Independent(
            StudentT(df, posterior.loc, posterior.scale, validate_args=False), 1
        ).log_prob(base)


class InflatedProposal(BaseReplacement):
    """Base N(mu(x), diag (c sigma(x))^2): the posterior's base widened by ``scale`` = c > 0.
    Encoders trained on the ELBO are too narrow (KL(q||p) is mode-seeking); c > 1 corrects that."""

    name = "inflated"

    def __init__(self, scale: float = option_defaults("proposal", "inflated")["scale"]) -> None:
        if not scale > 0:
            raise SettingError("scale", f"(the factor c) must be > 0, got {scale}")
        self.scale = float(scale)

    def base_draw(self, posterior, noise):
        return noise[..., : posterior.base_dims] * (self.scale * posterior.scale) + posterior.loc

    def base_log_prob(self, posterior, base):
        return gaussian_log_prob(base, posterior.loc, self.scale * posterior.scale)


class DefensiveProposal(Proposal):
    """r(z|x) = alpha p(z) + (1 - alpha) q(z|x) (Hesterberg 1995), ``alpha`` in [0, 1]: the
    prior component keeps every weight w = p(x, z) / r(z) <= p(x|z) / alpha, so no draw can
    carry an unbounded weight. Scoring a prior draw under q needs a guide that can score.

    Noise: the prior's, the guide's, then one uniform choosing the component."""

    name = "defensive"
    scores_posterior = True

    def __init__(self, alpha: float = option_defaults("proposal", "defensive")["alpha"]) -> None:
        if not 0 <= alpha <= 1:
            raise SettingError("alpha", f"must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def noise_dims(self, model, posterior):
        return model.prior.noise_dims + posterior.noise_dims + 1

    def draw_noise(self, model, posterior, draws):
        return torch.cat(
            [
                draws.normal(model.prior.noise_dims),
                draws.normal(posterior.noise_dims),
                draws.uniform(1),
            ],
            dim=-1,
        )

    def sample(self, model, posterior, noise):
        prior_dims = model.prior.noise_dims
        from_prior = model.prior.sample(noise[..., :prior_dims])
        from_posterior, _ = posterior.sample(noise[..., prior_dims:-1])
        pick_prior = noise[..., -1:] < self.alpha
        z = torch.where(pick_prior, from_prior, from_posterior)
        return z, self.log_prob(model, posterior, z)

    def log_prob(self, model, posterior, z):
        terms = []
        if self.alpha > 0:
            terms.append(math.log(self.alpha) + model.prior.log_prob(z))
        if self.alpha < 1:
            terms.append(math.log1p(-self.alpha) + posterior.log_prob(z))
        return torch.logsumexp(torch.stack(terms), dim=0)
