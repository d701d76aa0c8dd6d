"""What every likelihood head shares: decoder parameters -> a distribution p(x|z) over images.

A head maps decoder parameters ``[..., P, H, W]`` to a distribution whose ``log_prob(x)`` sums
over the pixels ``[C, H, W]`` and broadcasts over leading (sample, batch) dimensions, which
``sample``s images and has a ``mean`` for reconstructions. Each head declares the kinds of data
it can model; pairing it with other data fails before training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution

from vaelik.errors import ConfigError, IncompatibleDataError

IMAGE_DIMS = 3


EIGHT_BIT = ("8bit",)
EIGHT_BIT_REMEDY = "use likelihood=bernoulli for binary data, or a density for continuous data"


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
        expected = self.expected_param_channels(data_channels)
        if param_channels is not None and param_channels != expected:
            raise ConfigError(
                f"likelihood={self.name} needs {expected} decoder channels "
                f"for {data_channels} data channels, the config gives {param_channels}"
            )
        self.data_channels = data_channels
        self.param_channels = expected

    def expected_param_channels(self, data_channels: int) -> int:
        """Decoder output channels for ``data_channels`` channels of data."""
        return self.params_per_channel * data_channels

    def __call__(self, params: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def check_data(self, kind: str) -> None:
        """Raise IncompatibleDataError unless this head can model data of this ``kind``."""
        if kind not in self.accepts:
            raise IncompatibleDataError(
                f"likelihood={self.name} models {' or '.join(self.accepts)} data but the data "
                f"is {kind}: {self.remedy}"
            )
