"""Independent Bernoulli pixels, for binary images."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from vaelik.models.elementwise import bernoulli_log_prob
from vaelik.models.likelihoods.base import IMAGE_DIMS, LikelihoodHead


class BernoulliImage(Distribution):
    """Independent Bernoulli pixels with logits ``l``, event shape ``[C, H, W]``.

    log p(x|z) = sum_d [x_d l_d - softplus(l_d)], the negative binary cross-entropy, computed by
    :func:`~vaelik.models.elementwise.bernoulli_log_prob` from kernels that torch vectorises on
    a CPU (``binary_cross_entropy_with_logits`` is several times slower there).
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
        return bernoulli_log_prob(self.logits.flatten(-IMAGE_DIMS), value.flatten(-IMAGE_DIMS))


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

    def log_prob_gradient(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d/dl log p(x|l) = x - sigmoid(l) for logits ``params [..., C, H, W]`` and images ``x``
        broadcastable to them (what AIS's hand-written gradients read)."""
        return x.to(params.dtype) - torch.sigmoid(params)
