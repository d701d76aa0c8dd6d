"""A proposal refined for each example: the encoder's Gaussian moved towards that example's
posterior before any draw is scored.

An encoder is amortised: one network serves every x, so its q(z|x) sits near, not on, each
example's posterior, and importance sampling from it pays for the distance (K = 5000 draws
leave about half a nat on a binarized-MNIST model). :class:`RefinedProposal` starts from the
guide's N(mu, diag sigma^2) and takes ``steps`` Adam steps on the example's own
importance-weighted bound with ``samples`` draws,

    L(mu, rho) = log (1/S) sum_s w_s,   w_s = p(x, z_s) / N(z_s; mu, e^{2 rho}),
    z_s = mu + e^rho eps_s.

Its gradients are estimated by the doubly reparameterised estimator (Tucker, Lawson, Gu &
Maddison 2019): with the normalised weights v_s = w_s / sum w and the path derivative

    d_s = d/dz [log p(x, z) - log N(z; mu, e^{2 rho})] at z_s = g_s + eps_s / e^rho,

    dL/dmu ~ sum_s v_s^2 d_s,      dL/drho ~ sum_s v_s^2 d_s e^rho eps_s,

where g_s = d/dz log p(x, z_s). At a posterior the family contains, d_s = 0 for every draw:
the estimate has no noise where the plain reparameterised gradient keeps some, so the steps
settle instead of wandering. g_s comes from
:class:`~vaelik.inference.joint_gradient.JointGradient`, so the decoder's gradient is
hand-written where it can be. The refinement's noise is its own per-example stream, apart from
the draws that are scored; the refined proposal is then a fixed distribution given x, and
importance sampling from it (or AIS started from it) stays unbiased for p(x).
"""

from __future__ import annotations

from typing import Any

import torch

from vaelik.errors import SettingError, UnsupportedCombinationError
from vaelik.inference.joint_gradient import JointGradient
from vaelik.inference.log_weights import check_positive
from vaelik.inference.proposals import EncoderProposal
from vaelik.inference.streams import Draws, substream_keys
from vaelik.models.contract import posterior_name
from vaelik.models.guides import (
    DiagonalGaussianGuide,
    DiagonalGaussianPosterior,
    Guide,
    Posterior,
    gaussian_log_prob,
)
from vaelik.options import option_defaults

#: mixed into the example keys of the refinement's noise (above any AIS step number, so that
#: no AIS stream can meet it)
REFINE_STREAM = 1 << 48
_REFINED = option_defaults("proposal", "refined")
#: Adam's moment decay rates and its epsilon
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class RefinedProposal(EncoderProposal):
    """N(mu*, diag sigma*^2): the guide's Gaussian after ``steps`` Adam steps (learning rate
    ``lr``) on each example's importance-weighted bound with ``samples`` draws (see the module
    docstring); ``steps=0`` is the encoder itself. For guides whose posterior is a diagonal
    Gaussian."""

    name = "refined"

    def __init__(
        self,
        steps: int = _REFINED["steps"],
        samples: int = _REFINED["samples"],
        lr: float = _REFINED["lr"],
    ) -> None:
        self.steps = 0 if steps == 0 else check_positive("steps", steps)
        self.samples = check_positive("samples", samples)
        if not lr > 0:
            raise SettingError("lr", f"(the refinement's learning rate) must be > 0, got {lr}")
        self.lr = float(lr)

    def check(self, model: Any, needs_log_prob: bool = False) -> None:
        """Refuse, before any work, a vaelik guide whose posterior is not one diagonal
        Gaussian (IAF, model=hvae); a model of another kind is checked at its first batch."""
        super().check(model, needs_log_prob)
        guide = getattr(model, "guide", None)
        if isinstance(guide, Guide) and not isinstance(guide, DiagonalGaussianGuide):
            raise not_diagonal(model)

    def prepare(
        self, model, x: torch.Tensor, posterior: Posterior, keys: torch.Tensor
    ) -> Posterior:
        """The refined posterior of the examples ``x [B, ...]`` (stream keys ``keys [B]``)."""
        if not isinstance(posterior, DiagonalGaussianPosterior):
            raise not_diagonal(model)
        if self.steps == 0:
            return posterior
        joint = JointGradient(model)
        loc, log_scale = posterior.loc.detach().clone(), posterior.scale.detach().log()
        moments = [torch.zeros_like(loc) for _ in range(4)]  # Adam's m and v of mu and rho
        for step in range(1, self.steps + 1):
            eps = Draws(substream_keys(keys, REFINE_STREAM, step), 0, self.samples, loc.dtype)
            eps = eps.normal(loc.shape[-1])  # [S, B, L]
            scale = log_scale.exp()
            z = loc + scale * eps
            log_joint, gradient = joint(x, z)
            log_w = log_joint.double() - gaussian_log_prob(z, loc, scale).double()
            weights = torch.softmax(log_w, 0).square().to(loc.dtype).unsqueeze(-1)  # [S, B, 1]
            path = weights * (gradient + eps / scale)  # v_s^2 d_s
            gradients = (path.sum(0), (path * scale * eps).sum(0))
            for parameter, grad, m, v in zip(
                (loc, log_scale), gradients, moments[::2], moments[1::2], strict=True
            ):
                adam_ascent(parameter, grad, m, v, step, self.lr)
        return DiagonalGaussianPosterior(loc, log_scale.exp())


def not_diagonal(model: Any) -> UnsupportedCombinationError:
    """The error for a model whose posterior the refinement cannot move."""
    return UnsupportedCombinationError(
        f"proposal=refined with posterior={posterior_name(model)}: the refinement moves a "
        "posterior that is one diagonal Gaussian, and this one is not; use "
        "posterior=diagonal_gaussian with model=vae, or proposal=encoder, student_t or inflated"
    )


def adam_ascent(
    parameter: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
) -> None:
    """One Adam step (Kingma & Ba 2015) up the gradient ``grad``, in place on ``parameter``
    and its moments ``m``, ``v``: element-wise, so every example moves on its own."""
    m.mul_(BETAS[0]).add_(grad, alpha=1 - BETAS[0])
    v.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
    m_hat = m / (1 - BETAS[0] ** step)
    v_hat = v / (1 - BETAS[1] ** step)
    parameter.add_(lr * m_hat / (v_hat.sqrt() + ADAM_EPS))
