"""The one routine that computes importance log-weights, in chunks over the K draws and the batch.

For an example x and a proposal r(z|x), the log-weight of a draw z_k ~ r(z|x) is

    log w_k = log p(x|z_k) + log p(z_k) - log r(z_k|x),

and exp(log w_k) is an unbiased estimate of p(x). The encoder runs once per example; the decoder
sees at most ``chunk_size`` (draw, example) pairs at a time, so memory depends neither on K nor
on the batch size. Draws come from per-example streams (:mod:`vaelik.streams`), so the numbers do
not depend on the chunk sizes or on which batch or process an example lands in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from vaelik.latent import slice_batch
from vaelik.model import VAE
from vaelik.streams import keyed_draws, stream_key

Proposal = Callable[[Distribution, Distribution], Distribution]


def check_positive(name: str, value: int) -> int:
    """Return ``value`` if it is an integer >= 1, else raise a ValueError naming ``name``."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def check_finite(log_w: torch.Tensor, what: str = "importance log-weights") -> torch.Tensor:
    """Raise if any log-weight is NaN (+inf is also invalid: a density cannot be infinite)."""
    if torch.isnan(log_w).any() or torch.isposinf(log_w).any():
        raise FloatingPointError(
            f"NaN or +inf in the {what}: the model or proposal produced an invalid density "
            "(check the checkpoint, or bound the posterior scale with posterior.log_scale_bound)"
        )
    return log_w


@dataclass
class BatchChunk:
    """Examples ``rows`` of a batch with their proposal (batched) and per-example draw function."""

    rows: slice
    proposal: Distribution
    draw: Callable[[int, int], torch.Tensor]
    keys: list[int]


def batch_chunks(
    model: VAE, x: torch.Tensor, index: torch.Tensor, proposal: Proposal, rows: int, seed: int
) -> Iterator[BatchChunk]:
    """Run the encoder once on ``x`` and yield the batch in chunks of ``rows`` examples."""
    posterior = model.encode(x)
    prior = model.prior()
    keys = [stream_key(seed, i) for i in index.tolist()]
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        singles = [
            proposal(slice_batch(posterior, slice(p, p + 1)), prior) for p in range(start, stop)
        ]
        yield BatchChunk(
            rows=slice(start, stop),
            proposal=proposal(slice_batch(posterior, slice(start, stop)), prior),
            draw=per_example_sampler(singles),
            keys=keys[start:stop],
        )


def per_example_sampler(singles: list[Distribution]) -> Callable[[int, int], torch.Tensor]:
    """``(position, n) -> [n, L]``: n draws from the proposal of the example at ``position``."""

    def draw(position: int, n: int) -> torch.Tensor:
        return singles[position].sample((n,))[:, 0]

    return draw


@torch.no_grad()
def importance_log_weights(
    model: VAE,
    x: torch.Tensor,
    index: torch.Tensor,
    proposal: Proposal,
    num_samples: int,
    chunk_size: int,
    seed: int = 0,
) -> torch.Tensor:
    """Log importance weights ``[K, B]`` (float64) for ``x [B, C, H, W]``.

    Args:
        model: the VAE (encoder, prior, decoder, head).
        x: a batch of data; ``index [B]`` their dataset indices (keys of their random streams).
        proposal: ``(posterior, prior) -> r(z|x)``, see :mod:`vaelik.proposals`.
        num_samples: K >= 1 draws per example.
        chunk_size: at most this many (draw, example) pairs go through the decoder at once.
        seed: the run's seed, mixed into every example's stream key.
    """
    num_samples = check_positive("num_samples (K)", num_samples)
    chunk_size = check_positive("chunk_size", chunk_size)
    batch = x.shape[0]
    rows = min(batch, chunk_size)
    draws_per_pass = max(1, chunk_size // rows)
    log_w = torch.empty(num_samples, batch, dtype=torch.float64, device=x.device)
    for chunk in batch_chunks(model, x, index, proposal, rows, seed):
        x_rows = x[chunk.rows]
        for start in range(0, num_samples, draws_per_pass):
            stop = min(start + draws_per_pass, num_samples)
            z = keyed_draws(chunk.draw, chunk.keys, start, stop)
            log_joint = model.log_joint_terms(x_rows, z).double()
            log_w[start:stop, chunk.rows] = log_joint - chunk.proposal.log_prob(z).double()
    return check_finite(log_w)
