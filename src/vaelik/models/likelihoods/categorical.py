"""A 256-way softmax per sub-pixel (PixelRNN's output): 256 decoder channels per data channel."""

from __future__ import annotations

import torch
from torch.distributions import Categorical, Distribution, constraints

from vaelik.models.likelihoods.base import EIGHT_BIT, EIGHT_BIT_REMEDY, IMAGE_DIMS, LikelihoodHead

NUM_VALUES = 256


class CategoricalImage(Distribution):
    """Independent 256-way categoricals; ``logits [..., C, 256, H, W]``, event ``[C, H, W]``."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.integer_interval(0, NUM_VALUES - 1)

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        shape = logits.shape
        super().__init__(shape[:-4], (shape[-4], *shape[-2:]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(self.logits, dim=-3)  # [..., C, 256, H, W]
        index = value.long().unsqueeze(-3)  # [..., C, 1, H, W]
        batch = torch.broadcast_shapes(log_p.shape[:-3], index.shape[:-3])
        log_p = log_p.expand(*batch, *log_p.shape[-3:])
        index = index.expand(*batch, *index.shape[-3:])
        return log_p.gather(-3, index).squeeze(-3).flatten(-IMAGE_DIMS).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        values = torch.arange(NUM_VALUES, dtype=self.logits.dtype, device=self.logits.device)
        probs = torch.softmax(self.logits, dim=-3)
        return (probs * values.view(-1, 1, 1)).sum(-3)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits.movedim(-3, -1)
            draws = Categorical(logits=logits).sample(torch.Size(sample_shape))
            return draws.float()


class CategoricalHead(LikelihoodHead):
    """p(x_d = v | z) = softmax(l_d)_v, v in 0..255: 256 decoder channels per data channel."""

    name = "categorical"
    params_per_channel = NUM_VALUES
    accepts = EIGHT_BIT
    remedy = EIGHT_BIT_REMEDY

    def __call__(self, params: torch.Tensor) -> Distribution:
        return CategoricalImage(params.unflatten(-3, (self.data_channels, NUM_VALUES)))
