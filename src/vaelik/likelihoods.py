"""Likelihood heads: decoder outputs -> a distribution p(x|z) over whole images.

A head maps decoder parameters ``[..., P, H, W]`` to a distribution whose ``log_prob(x)`` sums
over the pixels ``[C, H, W]`` and broadcasts over leading (sample, batch) dimensions. Each head
declares the kinds of data it can model; pairing it with other data fails before training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal, constraints

IMAGE_DIMS = 3


class IncompatibleDataError(ValueError):
    """A likelihood head was paired with data it cannot model."""


class BernoulliImage(Distribution):
    """Independent Bernoulli pixels with logits ``l``, event shape ``[C, H, W]``.

    log p(x|z) = sum_d [x_d l_d - softplus(l_d)], which is the usual binary cross-entropy written
    so that the x-independent part ``sum softplus(l)`` is one reduction and the x-dependent part a
    product (cheaper than ``binary_cross_entropy_with_logits``; see shared/PERFORMANCE.md).
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.boolean

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        super().__init__(
            batch_shape=logits.shape[:-IMAGE_DIMS],
            event_shape=logits.shape[-IMAGE_DIMS:],
            validate_args=False,
        )

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return torch.bernoulli(torch.sigmoid(self.logits).expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.logits.flatten(-IMAGE_DIMS)
        x = value.flatten(-IMAGE_DIMS)
        return (x * logits).sum(-1) - F.softplus(logits).sum(-1)


class LikelihoodHead:
    """What every head shares: how many decoder channels it needs per data channel, which kinds
    of data it models, and the check that fails early on anything else.

    Subclasses set ``name`` (the config choice), ``params_per_channel``, ``accepts``,
    ``remedy`` (what to do about unsuitable data) and ``__call__(params) -> distribution``.
    """

    name: str
    params_per_channel: int
    accepts: Sequence[str]
    remedy: str

    def __init__(self, data_channels: int, param_channels: int | None = None) -> None:
        expected = self.params_per_channel * data_channels
        if param_channels is not None and param_channels != expected:
            raise ValueError(
                f"likelihood={self.name} needs {expected} decoder channels "
                f"({self.params_per_channel} per data channel), the config gives {param_channels}"
            )
        self.data_channels = data_channels
        self.param_channels = expected

    def __call__(self, params: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def check_data(self, kind: str) -> None:
        """Raise IncompatibleDataError unless this head can model data of this ``kind``."""
        if kind not in self.accepts:
            raise IncompatibleDataError(
                f"likelihood={self.name} models {' or '.join(self.accepts)} data but the data "
                f"is {kind}: {self.remedy}"
            )


class BernoulliHead(LikelihoodHead):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(l_d)) for binary pixels; one logit per sub-pixel."""

    name = "bernoulli"
    params_per_channel = 1
    accepts = ("binary",)
    remedy = (
        "binarize it (data.binarize=dynamic, static or threshold) or choose a likelihood for it"
    )

    def __call__(self, params: torch.Tensor) -> Distribution:
        return BernoulliImage(params)


class GaussianHead(LikelihoodHead):
    """p(x|z) = prod_d N(x_d; mu_d, sigma_d^2) with mu and log sigma from the decoder (2 channels
    per data channel: all means first, then all log-scales). For continuous data only: on
    discrete pixels a density is not a probability, so its bits/dim are not comparable with
    those of a discrete head."""

    name = "gaussian"
    params_per_channel = 2
    accepts = ("continuous",)
    remedy = "choose a discrete likelihood for it"

    def __call__(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = params.chunk(2, dim=-IMAGE_DIMS)
        return Independent(Normal(loc, log_scale.exp(), validate_args=False), IMAGE_DIMS)
