"""Inverse autoregressive flow posteriors (Kingma, Salimans, Jozefowicz, Chen, Sutskever &
Welling 2016).

q(z|x): z_0 = mu(x) + sigma(x) * eps, then T steps

    z_t = m_t + exp(s_t) * z_{t-1},   (m_t, s_t) = MADE_t(z_{t-1}, h(x)),

where m_t,l and s_t,l depend only on z_{t-1, <l} (in the step's variable order; the order is
reversed between steps) and on a context h(x) from the encoder. The Jacobian is triangular, so

    log q(z_T|x) = log N(z_0; mu, sigma^2) - sum_t sum_l s_t,l.

s is softly bounded, s = b tanh(a / b). Every step's output layer starts at zero, so an
untrained IAF *is* the diagonal Gaussian. Sampling is one pass per step; scoring a latent the
guide did not draw would need L sequential passes per step, so this guide does not score
(``can_score = False``): proposals and AIS that need log q(z|x) at other latents refuse it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from vaelik.errors import ConfigError, UnsupportedCombinationError
from vaelik.models.guides import (
    Guide,
    Posterior,
    ScaleRule,
    check_encoder_features,
    check_latent_dim,
)
from vaelik.models.networks import activation_layer, check_activation


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask [out, in]``."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(m, s) ``[..., L]`` each from z ``[..., L]`` and a context ``[..., C]``: output l sees
    z_{<l} only (Germain et al. 2015); the context feeds every hidden unit and every output."""

    def __init__(
        self, latent_dim: int, context_features: int, hidden: Sequence[int], activation: str
    ) -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("posterior.hidden needs at least one hidden layer for IAF steps")
        degrees = [torch.arange(1, latent_dim + 1)]
        for width in hidden:  # hidden degrees cycle over 1..L-1 (a unit of degree d sees z_<=d)
            degrees.append(torch.arange(width) % max(1, latent_dim - 1) + 1)
        layers = []
        for previous, current in itertools.pairwise(degrees):
            layers.append(MaskedLinear(current.unsqueeze(1) >= previous.unsqueeze(0)))
        self.hidden_layers = nn.ModuleList(layers)
        self.context = nn.Linear(context_features, hidden[0]) if context_features else None
        output_degrees = torch.arange(1, latent_dim + 1).repeat(2)
        self.output = MaskedLinear(output_degrees.unsqueeze(1) > degrees[-1].unsqueeze(0))
        # the context also reaches the outputs directly, so that the first variable's shift and
        # scale (which see no hidden unit) still depend on x
        self.output_context = (
            nn.Linear(context_features, 2 * latent_dim) if context_features else None
        )
        for layer in (self.output, self.output_context):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
                layer.keeps_init = True  # a model-wide re-initialisation leaves it at zero
        self.activation = activation_layer(activation)

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden_layers[0](z)
        if self.context is not None:
            h = h + self.context(context)
        h = self.activation(h)
        for layer in self.hidden_layers[1:]:
            h = self.activation(layer(h))
        out = self.output(h)
        if self.output_context is not None:
            out = out + self.output_context(context)
        shift, log_scale = out.chunk(2, dim=-1)
        return shift, log_scale


class IAFPosterior(Posterior):
    """q(z|x) for a batch: base N(loc, scale^2) ``[B, L]``, context ``[B, C]``, the guide's
    steps. Latents ``z [K, B, L]``."""

    can_score = False

    def __init__(self, loc, scale, context, guide: IAFGuide) -> None:
        self.loc, self.scale, self.context, self.guide = loc, scale, context, guide
        self.noise_dims = loc.shape[-1]

    def complete(self, base, log_base, noise):
        return self.guide.flow(base, log_base, self.context)

    def log_prob_with_base(self, z, base_log_prob):
        raise UnsupportedCombinationError(
            "posterior=iaf cannot score latents it did not draw (inverting its autoregressive "
            "steps takes L sequential passes each): use proposal=encoder, student_t or "
            "inflated for importance sampling, and proposal=prior for estimator=ais"
        )

    def rows(self, rows: slice) -> IAFPosterior:
        return IAFPosterior(self.loc[rows], self.scale[rows], self.context[rows], self.guide)

    @property
    def mean(self) -> torch.Tensor:
        """The base mean pushed through the steps (a representative latent, not E[z])."""
        z, _ = self.guide.flow(
            self.loc, torch.zeros(self.loc.shape[:-1], device=self.loc.device), self.context
        )
        return z


class IAFGuide(Guide):
    """Encoder outputs ``[B, 2L + C]``: mu, the raw scale (as for the diagonal Gaussian) and a
    context h of ``context_features`` = C; then ``num_steps`` IAF steps, each a MADE with
    ``hidden`` units. ``step_log_scale_bound`` = b bounds every step's log-scale softly."""

    name = "iaf"
    can_score = False

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        context_features: int = 64,
        num_steps: int = 2,
        hidden: Sequence[int] = (320, 320),
        activation: str = "elu",
        log_scale_bound: float | None = None,
        min_scale: float = 1e-4,
        step_log_scale_bound: float = 5.0,
        encoder_features: int | None = None,
        log_var_bounds: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.scale_rule = ScaleRule(log_scale_bound, min_scale, log_var_bounds)
        check_activation(activation)
        if int(num_steps) != num_steps or num_steps < 0:
            raise ConfigError(f"posterior.num_steps must be an integer >= 0, got {num_steps}")
        if context_features < 0:
            raise ConfigError(f"posterior.context_features must be >= 0, got {context_features}")
        if not step_log_scale_bound > 0:
            raise ConfigError(
                f"posterior.step_log_scale_bound must be > 0, got {step_log_scale_bound}"
            )
        check_encoder_features(self.name, encoder_features, 2 * self.latent_dim + context_features)
        self.encoder = encoder
        self.context_features = int(context_features)
        self.step_log_scale_bound = float(step_log_scale_bound)
        self.steps = nn.ModuleList(
            MADE(self.latent_dim, self.context_features, list(hidden), activation)
            for _ in range(int(num_steps))
        )

    def forward(self, x: torch.Tensor) -> IAFPosterior:
        params = self.encoder(x)
        expected = 2 * self.latent_dim + self.context_features
        if params.shape[-1] != expected:
            raise ConfigError(
                f"the encoder gives {params.shape[-1]} outputs, posterior=iaf needs "
                f"2 * latent_dim + context_features = {expected}"
            )
        loc, raw_scale, context = params.split(
            [self.latent_dim, self.latent_dim, self.context_features], dim=-1
        )
        scale = self.scale_rule(raw_scale)
        return IAFPosterior(loc, scale, context, self)

    def flow(
        self, z: torch.Tensor, log_q: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Push ``z [..., B, L]`` (log-density ``log_q [..., B]``) through every step."""
        context = context.expand(*z.shape[:-1], context.shape[-1])
        bound = self.step_log_scale_bound
        for i, step in enumerate(self.steps):
            if i > 0:
                z = z.flip(-1)  # reverse the variable order between steps
            shift, raw = step(z, context)
            log_scale = bound * torch.tanh(raw / bound)
            z = shift + torch.exp(log_scale) * z
            log_q = log_q - log_scale.sum(-1)
        if len(self.steps) % 2 == 0 and len(self.steps) > 0:
            z = z.flip(-1)  # back to the base's order after an even number of reversals
        return z, log_q
