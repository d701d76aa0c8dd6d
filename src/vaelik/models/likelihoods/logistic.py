"""Discretized logistic likelihoods for 8-bit pixels (Salimans et al. 2017, PixelCNN++).

Pixel values x in {0, ..., 255} are mapped to c = x / 127.5 - 1 in [-1, 1], bins of half-width
h = 1/255. A logistic with mean mu and scale s puts on x the mass of its bin,

    P(x) = sigma((c + h - mu) / s) - sigma((c - h - mu) / s),

with the first bin integrated from -inf and the last to +inf, so P sums to 1 over the 256
values. Everything is computed in log space without cancellation:

    log(sigma(a) - sigma(b)) = b + log(expm1(a - b)) - softplus(a) - softplus(b),   a > b,
    log sigma(a) = -softplus(-a),   log(1 - sigma(b)) = -softplus(b),

which stays finite at x = 0 and 255 and for any mu and s (no NaN from a tiny difference of
two sigmoids, and no approximation by the density at the bin centre).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from vaelik.errors import ConfigError
from vaelik.models.likelihoods.base import EIGHT_BIT, EIGHT_BIT_REMEDY, IMAGE_DIMS, LikelihoodHead

HALF_BIN = 1.0 / 255.0
MAX_VALUE = 255


def to_unit_interval(x: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 -> bin centres in [-1, 1]."""
    return x / 127.5 - 1.0


def log_expm1(d: torch.Tensor) -> torch.Tensor:
    """log(exp(d) - 1) for d > 0, finite (and with finite gradients) for any d > 0."""
    large = d > 20.0
    small = torch.log(torch.expm1(torch.clamp(d, min=1e-30, max=20.0)))
    return torch.where(large, d + torch.log1p(-torch.exp(-torch.clamp(d, min=20.0))), small)


def discretized_logistic_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log P(x) of each sub-pixel (broadcast shapes), x in {0..255}, mean in the [-1, 1] scale."""
    centred = to_unit_interval(x) - mean
    inv_scale = torch.exp(-log_scale)
    upper = (centred + HALF_BIN) * inv_scale
    lower = (centred - HALF_BIN) * inv_scale
    interior = lower + log_expm1(upper - lower) - F.softplus(upper) - F.softplus(lower)
    first = -F.softplus(-upper)
    last = -F.softplus(lower)
    return torch.where(x <= 0, first, torch.where(x >= MAX_VALUE, last, interior))


def sample_discretized_logistic(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """x = round of a logistic draw mu + s (log u - log(1 - u)), clipped to 0..255."""
    u = torch.rand_like(mean).clamp(1e-6, 1 - 1e-6)
    v = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.clamp(torch.round((v + 1.0) * 127.5), 0, MAX_VALUE)


def intensity_to_pixels(v: torch.Tensor) -> torch.Tensor:
    """A continuous intensity in [-1, 1] as a pixel value in [0, 255] (not rounded)."""
    return torch.clamp((v + 1.0) * 127.5, 0, MAX_VALUE)


def bound_log_scale(raw: torch.Tensor, log_scale_min: float, bounded: bool) -> torch.Tensor:
    """The log-scale from the decoder: ``log_scale_min + |log_scale_min| sigmoid(raw)`` (in
    [log_scale_min, 0]: a sigmoid bound) when ``bounded``, else ``max(raw, min)``."""
    if bounded:
        return log_scale_min - log_scale_min * torch.sigmoid(raw)
    return torch.clamp(raw, min=log_scale_min)


class DiscretizedLogisticImage(Distribution):
    """One discretized logistic per sub-pixel; parameters ``[..., 2C, H, W]`` (means, then
    log-scales), event shape ``[C, H, W]``."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.integer_interval(0, MAX_VALUE)

    def __init__(self, mean: torch.Tensor, log_scale: torch.Tensor) -> None:
        self.loc, self.log_scale = mean, log_scale
        super().__init__(mean.shape[:-IMAGE_DIMS], mean.shape[-IMAGE_DIMS:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        """The logistic's centre in pixel units (the mean of the continuous intensity)."""
        return intensity_to_pixels(self.loc)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return sample_discretized_logistic(self.loc.expand(shape), self.log_scale.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_p = discretized_logistic_log_prob(value, self.loc, self.log_scale)
        return log_p.flatten(-IMAGE_DIMS).sum(-1)


class LogisticHead(LikelihoodHead):
    """What the logistic heads share: 8-bit data, and the log-scale's floor ``log_scale_min``
    (< 0) with, when ``bounded``, a sigmoid bound to [``log_scale_min``, 0]."""

    accepts = EIGHT_BIT
    remedy = EIGHT_BIT_REMEDY

    def __init__(
        self,
        data_channels: int,
        param_channels: int | None = None,
        log_scale_min: float = -7.0,
        bounded: bool = True,
    ) -> None:
        super().__init__(data_channels, param_channels)
        if log_scale_min >= 0:
            raise ConfigError(f"log_scale_min must be < 0, got {log_scale_min}")
        self.log_scale_min = log_scale_min
        self.bounded = bounded


class DiscretizedLogisticHead(LogisticHead):
    """A discretized logistic per sub-pixel (``experiment=cifar10``'s head): 2 decoder channels per
    data channel (means, then log-scales); the log-scale bounded by default."""

    name = "discretized_logistic"
    params_per_channel = 2

    def __call__(self, params: torch.Tensor) -> Distribution:
        mean, raw = params.chunk(2, dim=-IMAGE_DIMS)
        return DiscretizedLogisticImage(
            mean, bound_log_scale(raw, self.log_scale_min, self.bounded)
        )


def coupling_count(channels: int) -> int:
    """Coefficients of the linear dependence of a channel's mean on earlier channels' values."""
    return channels * (channels - 1) // 2


class DiscretizedLogisticMixtureImage(Distribution):
    """PixelCNN++'s mixture of K discretized logistics per pixel, with the means of later
    channels shifted linearly by the values of earlier ones (G by R; B by R and G):

        P(pixel) = sum_k pi_k prod_c P_c(x_c | mu_kc + sum_{c'<c} a_kcc' x_c', s_kc).

    Tensors: ``logits [..., K, H, W]``, ``means``/``log_scales [..., C, K, H, W]``,
    ``coeffs [..., C(C-1)/2, K, H, W]`` (tanh-squashed); event shape ``[C, H, W]``.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.integer_interval(0, MAX_VALUE)

    def __init__(self, logits, means, log_scales, coeffs) -> None:
        self.logits, self.means, self.log_scales, self.coeffs = logits, means, log_scales, coeffs
        channels = means.shape[-4]
        batch = logits.shape[:-3]
        super().__init__(batch, (channels, *logits.shape[-2:]), validate_args=False)

    def _coupled_means(self, values: torch.Tensor) -> torch.Tensor:
        """Means ``[..., C, K, H, W]`` given the earlier channels' values (in [-1, 1])."""
        channels = self.means.shape[-4]
        out, pair = [], 0
        for c in range(channels):
            mean = self.means[..., c, :, :, :]
            for earlier in range(c):
                mean = mean + self.coeffs[..., pair, :, :, :] * values[..., earlier, :, :, :]
                pair += 1
            out.append(mean)
        return torch.stack(torch.broadcast_tensors(*out), dim=-4)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        x = value.unsqueeze(-3)  # [..., C, 1, H, W]
        means = self._coupled_means(to_unit_interval(x))
        per_channel = discretized_logistic_log_prob(x, means, self.log_scales)
        per_component = per_channel.sum(-4) + torch.log_softmax(self.logits, dim=-3)
        return torch.logsumexp(per_component, dim=-3).flatten(-2).sum(-1)

    def _select(self, tensor: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """Pick component ``component [..., H, W]`` from ``tensor [..., C', K, H, W]``."""
        index = (
            component.unsqueeze(-3).unsqueeze(-4).expand(*tensor.shape[:-3], 1, *tensor.shape[-2:])
        )
        return tensor.gather(-3, index).squeeze(-3)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            logits = self.logits.expand(*shape, *self.logits.shape[-3:])
            gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)))
            component = (logits + gumbel).argmax(-3)  # [..., H, W]
            means = self._select(self.means.expand(*shape, *self.means.shape[-4:]), component)
            log_scales = self._select(
                self.log_scales.expand(*shape, *self.log_scales.shape[-4:]), component
            )
            coeffs = self._select(self.coeffs.expand(*shape, *self.coeffs.shape[-4:]), component)
            pixels: list[torch.Tensor] = []
            pair = 0
            for c in range(means.shape[-3]):
                mean = means[..., c, :, :]
                for earlier in range(c):
                    mean = mean + coeffs[..., pair, :, :] * to_unit_interval(pixels[earlier])
                    pair += 1
                pixels.append(sample_discretized_logistic(mean, log_scales[..., c, :, :]))
            return torch.stack(pixels, dim=-3)

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean of the continuous intensity, channel by channel (earlier channels at
        their means), in pixel units."""
        weights = torch.softmax(self.logits, dim=-3)
        channels = self.means.shape[-4]
        values: list[torch.Tensor] = []
        pair = 0
        for c in range(channels):
            mean = self.means[..., c, :, :, :]
            for earlier in range(c):
                mean = mean + self.coeffs[..., pair, :, :, :] * values[earlier].unsqueeze(-3)
                pair += 1
            values.append((weights * mean).sum(-3))
        return intensity_to_pixels(torch.stack(torch.broadcast_tensors(*values), dim=-3))


class DiscretizedLogisticMixtureHead(LogisticHead):
    """PixelCNN++'s discretized logistic mixture with ``num_components`` = K components per
    pixel: decoder channels K (mixture logits) + C K (means) + C K (log-scales)
    + C(C-1)/2 K (coupling coefficients): 10 K for RGB, 3 K for grey. The log-scale is only
    clamped below by default, as in PixelCNN++."""

    name = "discretized_logistic_mixture"

    def __init__(
        self,
        data_channels: int,
        param_channels: int | None = None,
        num_components: int = 5,
        log_scale_min: float = -7.0,
        bounded: bool = False,
    ) -> None:
        if num_components < 1:
            raise ConfigError(f"num_components must be >= 1, got {num_components}")
        self.num_components = num_components
        super().__init__(data_channels, param_channels, log_scale_min, bounded)

    def expected_param_channels(self, data_channels: int) -> int:
        return self.num_components * (1 + 2 * data_channels + coupling_count(data_channels))

    def __call__(self, params: torch.Tensor) -> Distribution:
        k, c = self.num_components, self.data_channels
        logits = params[..., :k, :, :]
        rest = params[..., k:, :, :].unflatten(-3, (-1, k))  # [..., 2C + C(C-1)/2, K, H, W]
        means, raw_scales, raw_coeffs = rest.split([c, c, coupling_count(c)], dim=-4)
        return DiscretizedLogisticMixtureImage(
            logits,
            means,
            bound_log_scale(raw_scales, self.log_scale_min, self.bounded),
            torch.tanh(raw_coeffs),
        )
