"""The one routine that computes importance log-weights, in chunks over the K samples.

For an example x and a proposal r(z|x), the log-weight of a draw z_k ~ r(z|x) is

    log w_k = log p(x|z_k) + log p(z_k) - log r(z_k|x),

and exp(log w_k) is an unbiased estimate of p(x). The encoder runs once per example; the
decoder sees at most ``chunk_size`` samples per example at a time, so memory does not grow with K.
"""

from __future__ import annotations

import torch

from vaelik.model import VAE


def check_positive(name: str, value: int) -> int:
    """Return ``value`` if it is an integer >= 1, else raise a ValueError naming ``name``."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


@torch.no_grad()
def importance_log_weights(
    model: VAE,
    x: torch.Tensor,
    proposal,
    num_samples: int,
    chunk_size: int,
) -> torch.Tensor:
    """Log importance weights ``[K, B]`` (float64) for ``x [B, C, H, W]``.

    Args:
        model: the VAE (encoder, prior, decoder, head).
        x: a batch of data.
        proposal: ``(posterior, prior) -> r(z|x)``, see :mod:`vaelik.proposals`.
        num_samples: K >= 1 draws per example.
        chunk_size: at most this many draws per example go through the decoder at once.
    """
    num_samples = check_positive("num_samples (K)", num_samples)
    chunk_size = check_positive("chunk_size", chunk_size)
    r = proposal(model.encode(x), model.prior())
    log_w = torch.empty(num_samples, x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, num_samples, chunk_size):
        k = min(chunk_size, num_samples - start)
        z = r.sample((k,))
        log_w[start : start + k] = model.log_joint_terms(x, z) - r.log_prob(z)
    if torch.isnan(log_w).any():
        raise FloatingPointError(
            "NaN in the importance log-weights: the model or proposal produced an invalid "
            "density (check the checkpoint, or bound the posterior scale with "
            "posterior.log_scale_bound)"
        )
    return log_w
