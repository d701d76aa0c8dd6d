"""log p(x, z) and its gradient in the latents, the quantities every HMC step of AIS reads.

For ``x [B, ...]`` and latents ``z [K, B, L]``, :class:`JointGradient` returns

    log p(x, z) = log p(x|z) + log p(z)   ``[K, B]``   and   d/dz log p(x, z)   ``[K, B, L]``,

never gradients in the parameters. Where the model is vaelik's one-layer
:class:`~vaelik.models.vae.VAE` with an MLP decoder of linear, gated, tanh or relu layers and a
likelihood head that knows its own gradient (``log_prob_gradient``: x - sigmoid(l) for Bernoulli
logits l), the decoder's part is written by hand:

    d/dz log p(x|z) = J(z)^T g,   g = d/dl log p(x|l) at l = decoder(z),

with J(z)^T applied by :mod:`vaelik.models.reverse_mode`, and the value log p(x|z) computed only
when asked for (an HMC trajectory needs it at its end, not at every leapfrog step). The prior's
part d/dz log p(z), a few element-wise operations (or a mixture's two products), comes from
autograd on the prior alone. Every other model (other decoders, heads, hierarchies, models
wrapped by :mod:`vaelik.adapters`) gets autograd on its ``log_joint``; both give the same
numbers to float rounding.
"""

from __future__ import annotations

from typing import Any

import torch

from vaelik.errors import SettingError
from vaelik.models.networks import MLPDecoder
from vaelik.models.reverse_mode import ReverseMLP, reverse_mlp
from vaelik.models.vae import VAE


def gradient_of(function: Any, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``function(z)`` ``[...]`` and the gradient of its sum in ``z``, by autograd, both
    detached (for any function of the latents: a prior, a proposal, a model's log_joint).
    Inside ``torch.inference_mode`` autograd cannot run: a :class:`SettingError` says so."""
    if torch.is_inference_mode_enabled():
        raise SettingError(
            "estimator",
            "(AIS, or proposal=refined) needs gradients in the latents, which torch cannot "
            "compute inside torch.inference_mode(): call it outside, or under "
            "torch.inference_mode(False)",
        )
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        value = function(leaf)
        (gradient,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), gradient


def hand_written_decoder(model: Any) -> ReverseMLP | None:
    """The hand-written reverse pass of ``model``'s decoder where the whole of log p(x|z) is a
    vaelik VAE's MLP decoder and a head with ``log_prob_gradient``, else None. Build it where
    the parameters no longer change (it reads the weights once)."""
    kind = type(model)
    plain_vae = isinstance(model, VAE) and all(
        getattr(kind, name) is getattr(VAE, name) for name in ("log_joint", "joint_terms", "decode")
    )
    if not plain_vae or not isinstance(model.decoder, MLPDecoder):
        return None
    if not callable(getattr(model.likelihood, "log_prob_gradient", None)):
        return None
    return reverse_mlp(model.decoder.net)


class JointGradient:
    """log p(x, z) and d/dz log p(x, z) for one model, its way of computing them chosen once
    (:func:`hand_written_decoder`, else autograd); ``hand_written`` says which."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.reverse = hand_written_decoder(model)

    @property
    def hand_written(self) -> bool:
        return self.reverse is not None

    def __call__(
        self, x: torch.Tensor, z: torch.Tensor, value: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(log p(x, z) ``[K, B]``, or None when ``value`` is False on the hand-written path,
        and its gradient ``[K, B, L]``) for ``x [B, ...]`` and ``z [K, B, L]``."""
        if self.reverse is None or torch.is_autocast_enabled(z.device.type):
            return gradient_of(lambda leaf: self.model.log_joint(x, leaf), z)
        model = self.model
        log_pz, gradient = gradient_of(model.prior.log_prob, z)
        flat, saved = self.reverse.forward(z.reshape(-1, z.shape[-1]))
        params = flat.view(*z.shape[:-1], *model.decoder.out_shape)
        params_gradient = model.likelihood.log_prob_gradient(params, x)
        gradient += self.reverse.backward(saved, params_gradient.reshape(flat.shape)).view_as(z)
        if not value:
            return None, gradient
        return model.likelihood(params).log_prob(x) + log_pz, gradient
