"""The one routine that computes importance log-weights, for training bounds and for estimators.

For an example x and a proposal r(z|x) (the guide q(z|x) when training), a draw z_k ~ r(z|x) has

    log w_k = log p(x|z_k) + log p(z_k) - log r(z_k|x),

and exp(log w_k) is an unbiased estimate of p(x). :func:`draw_log_weights` computes the terms
for given noise, with or without gradients: training objectives call it on fresh noise from the
training generator; :func:`importance_log_weights` calls it in chunks over the K draws and the
batch on noise from per-example streams (:mod:`vaelik.inference.streams`), without gradients,
reducing in float64. The guide runs once per example; the decoder sees at most ``chunk_size``
(draw, example) pairs at a time, so memory depends neither on K nor on the batch size; the model
runs :func:`~vaelik.models.frozen.frozen` (tanh MLPs folded, a mixture prior's components
computed once).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vaelik.errors import NonFiniteError, SettingError
from vaelik.inference.proposals import Proposal
from vaelik.inference.streams import Draws, example_keys
from vaelik.models.frozen import frozen
from vaelik.models.guides import Posterior
from vaelik.models.vae import VAE

#: (draw, example) pairs per decoder pass on a CPU: small enough that a pass's activations (about
#: 5 MB for an MLP decoder) stay in cache; larger passes spill them, and their logits can land on
#: fresh pages every pass (``benchmarks/is_throughput.py`` times a pass size)
CPU_CHUNK = 1024
#: the same on an accelerator, where a pass must be large to keep the device busy (a ResNet
#: decoder's pass of 20,000 pairs already needs about 17 GB)
DEVICE_CHUNK = 20_000


def default_chunk_size(device: torch.device) -> int:
    """Pairs per decoder pass when an estimator's ``chunk_size`` is not set: :data:`CPU_CHUNK`
    on a CPU, :data:`DEVICE_CHUNK` elsewhere. Set ``estimator.chunk_size`` to bound memory for
    a large decoder."""
    return CPU_CHUNK if device.type == "cpu" else DEVICE_CHUNK


def even_rows(batch: int, limit: int) -> int:
    """The examples per chunk of a batch of ``batch``: the largest divisor of ``batch`` that is
    at most ``limit`` (at least 1), so that every chunk of a block has the same shape."""
    return max(d for d in range(1, min(batch, max(1, limit)) + 1) if batch % d == 0)


def check_positive(name: str, value: object) -> int:
    """Return ``value`` if it is an integer >= 1, else raise a :class:`SettingError` naming the
    setting ``name`` (the caller's own name for it; see :meth:`SettingError.under`)."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else 0
    if not (math.isfinite(number) and number == int(number) and number >= 1):
        raise SettingError(name, f"must be an integer >= 1, got {value!r}")
    return int(number)


def check_finite(log_w: torch.Tensor, what: str = "importance log-weights") -> torch.Tensor:
    """Raise :class:`NonFiniteError` if any log-weight ``[K, B]`` is NaN or +inf (a density
    cannot be infinite), naming the batch columns (examples) where it happened."""
    bad = torch.isnan(log_w) | torch.isposinf(log_w)
    if bad.any():
        columns = bad.reshape(-1, log_w.shape[-1]).any(0).nonzero().flatten().tolist()
        raise NonFiniteError(
            f"NaN or +inf in the {what} of {len(columns)} example(s) of a batch (columns "
            f"{columns[:5]}): the model or proposal produced an invalid density. Check the "
            "networks' outputs on these inputs (or the checkpoint); for vaelik's own models, "
            "bound the posterior scale with posterior.log_scale_bound"
        )
    return log_w


@dataclass
class LogWeightTerms:
    """The pieces of K log-weights per example, each ``[K, B]``: log p(x|z), log p(z) and
    log r(z|x) of the draws ``z [K, B, L]``."""

    z: torch.Tensor
    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_r: torch.Tensor

    def log_weights(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """log w = log p(x, z) - log r(z|x) ``[K, B]``, the difference taken in ``dtype``."""
        log_joint = self.log_px_z + self.log_pz
        if dtype is None:
            return log_joint - self.log_r
        return log_joint.to(dtype) - self.log_r.to(dtype)


def draw_log_weights(
    model: VAE, x: torch.Tensor, posterior: Posterior, proposal: Proposal, noise: torch.Tensor
) -> LogWeightTerms:
    """Log-weight terms for ``x [B, C, H, W]`` from ``noise [K, B, D]`` (``D`` =
    ``proposal.noise_dims(model, posterior)``); differentiable when gradients are enabled."""
    z, log_r = proposal.sample(model, posterior, noise)
    log_px_z, log_pz = model.joint_terms(x, z)
    return LogWeightTerms(z=z, log_px_z=log_px_z, log_pz=log_pz, log_r=log_r)


@dataclass
class BatchChunk:
    """Examples ``rows`` of a batch with their posterior and their random-stream keys."""

    rows: slice
    posterior: Posterior
    keys: torch.Tensor

    def noise(self, model: VAE, proposal: Proposal, start: int, stop: int) -> torch.Tensor:
        """Draws ``start..stop-1`` of every example's noise stream: ``[stop - start, b, D]``."""
        return proposal.draw_noise(model, self.posterior, Draws(self.keys, start, stop))


def batch_chunks(
    model: Any,
    x: torch.Tensor,
    index: torch.Tensor,
    rows: int,
    seed: int,
    proposal: Proposal | None = None,
) -> Iterator[BatchChunk]:
    """Run the guide once on ``x`` (and ``proposal.prepare``: a per-example refinement) and
    yield the batch in chunks of ``rows`` examples."""
    keys = example_keys(seed, index.to(x.device))
    posterior = model.posterior(x)
    if proposal is not None:
        posterior = proposal.prepare(model, x, posterior, keys)
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        yield BatchChunk(slice(start, stop), posterior.rows(slice(start, stop)), keys[start:stop])


@torch.no_grad()
def importance_log_weights(
    model: Any,
    x: torch.Tensor,
    index: torch.Tensor,
    proposal: Proposal,
    num_samples: int,
    chunk_size: int,
    seed: int = 0,
) -> torch.Tensor:
    """Log importance weights ``[K, B]`` (float64) for ``x [B, ...]``.

    Args:
        model: the latent-variable model (see :class:`~vaelik.models.contract.MeasurableModel`).
        x: a batch of data; ``index [B]`` their dataset indices (keys of their random streams).
        proposal: r(z|x), see :mod:`vaelik.inference.proposals`, already checked against the
            model (:meth:`~vaelik.inference.estimators.LogWeightEstimator.bind` does).
        num_samples: K >= 1 draws per example (checked by the estimator that holds it).
        chunk_size: at most this many (draw, example) pairs go through the decoder at once.
        seed: the run's seed, mixed into every example's stream key.
    """
    batch = x.shape[0]
    rows = even_rows(batch, chunk_size)
    draws_per_pass = max(1, chunk_size // rows)
    log_w = torch.empty(num_samples, batch, dtype=torch.float64, device=x.device)
    with frozen(model):  # no parameter changes in here: tanh MLPs fold, priors hold components
        for chunk in batch_chunks(model, x, index, rows, seed, proposal):
            for start in range(0, num_samples, draws_per_pass):
                stop = min(start + draws_per_pass, num_samples)
                noise = chunk.noise(model, proposal, start, stop)
                z, log_r = proposal.sample(model, chunk.posterior, noise)
                log_joint = model.log_joint(x[chunk.rows], z)
                log_w[start:stop, chunk.rows] = log_joint.to(torch.float64) - log_r.to(
                    torch.float64
                )
    return check_finite(log_w)
