"""Likelihood heads: pmfs that sum to 1 (brute force), direct references, sampling frequencies
(chi-square), finite gradients at extremes, and the head/data pairings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
import torch

from vaelik.models.likelihoods import (
    BernoulliHead,
    CategoricalHead,
    DiscretizedLogisticHead,
    DiscretizedLogisticMixtureHead,
    GaussianHead,
    IncompatibleDataError,
)
from vaelik.models.likelihoods.logistic import discretized_logistic_log_prob

VALUES = torch.arange(256, dtype=torch.float64)


def reference_discretized_logistic(x: np.ndarray, mean: float, scale: float) -> np.ndarray:
    """P(x) straight from the definition with scipy's logistic CDF, in float64."""
    c = x / 127.5 - 1
    upper = np.where(x >= 255, 1.0, st.logistic.cdf(c + 1 / 255, loc=mean, scale=scale))
    lower = np.where(x <= 0, 0.0, st.logistic.cdf(c - 1 / 255, loc=mean, scale=scale))
    return upper - lower


@pytest.mark.parametrize(
    ("mean", "log_scale"),
    [(0.0, -3.0), (0.9, -5.0), (-1.3, -1.0), (0.2, -7.0), (3.0, 0.5), (0.0, -12.0)],
)
def test_discretized_logistic_sums_to_one_and_matches_the_definition(mean, log_scale):
    log_p = discretized_logistic_log_prob(
        VALUES,
        torch.tensor(mean, dtype=torch.float64),
        torch.tensor(log_scale, dtype=torch.float64),
    )
    assert torch.isfinite(log_p).all()
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-9)
    reference = reference_discretized_logistic(VALUES.numpy(), mean, float(np.exp(log_scale)))
    mask = reference > 1e-300
    np.testing.assert_allclose(np.exp(log_p.numpy())[mask], reference[mask], rtol=1e-7, atol=1e-12)


def mixture_params(k: int, c: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Random decoder output for one pixel: ``[1, K(1 + 2C + C(C-1)/2), 1, 1]`` float64."""
    gen = torch.Generator().manual_seed(seed)
    channels = k * (1 + 2 * c + c * (c - 1) // 2)
    params = torch.randn(1, channels, 1, 1, generator=gen, dtype=torch.float64) * scale
    params[:, k + c * k : k + 2 * c * k] -= 2.5  # log-scales around -2.5
    return params


@pytest.mark.slow
def test_rgb_mixture_sums_to_one_over_all_256_cubed_values():
    head = DiscretizedLogisticMixtureHead(data_channels=3, num_components=2)
    dist = head(mixture_params(2, 3))
    total = []
    green_blue = torch.cartesian_prod(VALUES, VALUES)  # [65536, 2]
    for red in range(256):
        pixels = torch.cat([torch.full((65536, 1), float(red), dtype=torch.float64), green_blue], 1)
        total.append(torch.logsumexp(dist.log_prob(pixels.view(-1, 3, 1, 1)), 0))
    assert torch.logsumexp(torch.stack(total), 0).item() == pytest.approx(0.0, abs=1e-8)


def test_rgb_mixture_matches_a_direct_reference():
    k = 3
    head = DiscretizedLogisticMixtureHead(data_channels=3, num_components=k)
    params = mixture_params(k, 3, seed=1)
    dist = head(params)
    p = params.view(-1).numpy()
    weights = np.exp(p[:k] - np.logaddexp.reduce(p[:k]))
    means, log_scales = p[k : 4 * k].reshape(3, k), p[4 * k : 7 * k].reshape(3, k)
    coeffs = np.tanh(p[7 * k :].reshape(3, k))
    torch.manual_seed(0)  # pixels the model finds likely: the reference's CDF differences keep
    for r, g, b in dist.sample((20,)).view(20, 3).long().tolist():  # their digits there
        cr, cg = r / 127.5 - 1, g / 127.5 - 1
        total = 0.0
        for j in range(k):
            mu = [
                means[0, j],
                means[1, j] + coeffs[0, j] * cr,
                means[2, j] + coeffs[1, j] * cr + coeffs[2, j] * cg,
            ]
            prob = weights[j]
            for value, m, ls in zip((r, g, b), mu, log_scales[:, j], strict=True):
                prob *= reference_discretized_logistic(np.array([value]), m, np.exp(ls))[0]
            total += prob
        pixel = torch.tensor([[r, g, b]], dtype=torch.float64).view(1, 3, 1, 1)
        # the reference subtracts CDFs in float64 and loses digits on tiny bins: rel 1e-6
        assert dist.log_prob(pixel).item() == pytest.approx(np.log(total), rel=1e-8)


def chi_square_pvalue(draws: torch.Tensor, log_p: torch.Tensor) -> float:
    """Pearson's test of integer ``draws`` against the pmf exp(log_p) over 0..255, pooling
    values with expected count below 5 into one cell."""
    counts = torch.bincount(draws.long().flatten(), minlength=256).double()
    expected = torch.exp(log_p) * counts.sum()
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum().view(1)])
    expect = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = expect > 0
    return st.chisquare(
        observed[keep].numpy(),
        expect[keep].numpy() * observed[keep].sum().item() / expect[keep].sum().item(),
    ).pvalue


def test_sampling_frequencies_match_the_pmfs():
    torch.manual_seed(0)
    n = 200_000
    single = DiscretizedLogisticHead(data_channels=1)(
        torch.tensor([0.3, -0.5], dtype=torch.float64).view(1, 2, 1, 1)
    )
    log_p = discretized_logistic_log_prob(VALUES, single.loc.view(()), single.log_scale.view(()))
    assert chi_square_pvalue(single.sample((n,)), log_p) > 1e-3

    grey = DiscretizedLogisticMixtureHead(data_channels=1, num_components=3)(
        mixture_params(3, 1, seed=2)
    )
    log_p = grey.log_prob(VALUES.view(-1, 1, 1, 1))
    assert chi_square_pvalue(grey.sample((n,)), log_p) > 1e-3

    rgb = DiscretizedLogisticMixtureHead(data_channels=3, num_components=2)(
        mixture_params(2, 3, seed=3)
    )
    draws = rgb.sample((n,))  # [n, 1, 3, 1, 1]
    # the red channel alone: a mixture of discretized logistics with the mixture weights
    p = mixture_params(2, 3, seed=3).view(-1)
    weights = torch.log_softmax(p[:2], 0)
    red = torch.logsumexp(
        torch.stack(
            [
                weights[j]
                + discretized_logistic_log_prob(VALUES, p[2 + j], torch.clamp(p[8 + j], min=-7.0))
                for j in range(2)
            ]
        ),
        0,
    )
    assert torch.logsumexp(red, 0).item() == pytest.approx(0.0, abs=1e-9)
    assert chi_square_pvalue(draws[..., 0, 0, 0], red) > 1e-3

    cat_logits = torch.randn(
        1, 256, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    categorical = CategoricalHead(data_channels=1)(cat_logits)
    assert (
        chi_square_pvalue(categorical.sample((n,)), torch.log_softmax(cat_logits.view(-1), 0))
        > 1e-3
    )


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_heads_have_finite_values_and_gradients_at_extremes(scale):
    x = torch.tensor([0.0, 1.0, 128.0, 254.0, 255.0]).view(5, 1, 1, 1).repeat(1, 3, 2, 2)
    heads = [
        (DiscretizedLogisticHead(3, bounded=True), 6),
        (DiscretizedLogisticHead(3, bounded=False), 6),
        (DiscretizedLogisticMixtureHead(3, num_components=5), 50),
        (CategoricalHead(3), 768),
    ]
    for head, channels in heads:
        params = (torch.randn(5, channels, 2, 2) * scale).requires_grad_(True)
        log_p = head(params).log_prob(x)
        log_p.sum().backward()
        assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all(), type(
            head
        ).__name__


def test_every_discrete_head_sums_to_one_per_subpixel():
    for head, channels in [
        (DiscretizedLogisticHead(1), 2),
        (CategoricalHead(1), 256),
        (DiscretizedLogisticMixtureHead(1, num_components=4), 12),
    ]:
        params = torch.randn(1, channels, 1, 1, dtype=torch.float64)
        log_p = head(params).log_prob(VALUES.view(-1, 1, 1, 1))
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-9), type(head).__name__


def test_means_are_in_pixel_range_and_exact_for_the_categorical():
    logits = torch.randn(2, 256, 3, 3)
    mean = CategoricalHead(1)(logits).mean
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(
        mean, (probs * torch.arange(256.0).view(1, -1, 1, 1)).sum(1, keepdim=True)
    )
    for head, channels in [
        (DiscretizedLogisticHead(3), 6),
        (DiscretizedLogisticMixtureHead(3, num_components=2), 20),
    ]:
        m = head(torch.randn(4, channels, 5, 5) * 3).mean
        assert m.shape == (4, 3, 5, 5) and m.min() >= 0 and m.max() <= 255


@pytest.mark.parametrize(
    ("head", "bad_kind"),
    [
        (BernoulliHead(1), "8bit"),
        (DiscretizedLogisticHead(1), "binary"),
        (DiscretizedLogisticMixtureHead(3), "continuous"),
        (CategoricalHead(1), "binary"),
        (GaussianHead(1), "8bit"),
    ],
)
def test_heads_refuse_data_they_cannot_model(head, bad_kind):
    head.check_data(head.accepts[0])
    with pytest.raises(
        IncompatibleDataError, match=f"likelihood={head.name} models .* but the data is {bad_kind}"
    ):
        head.check_data(bad_kind)


def test_param_channel_mismatch_is_explained():
    with pytest.raises(ValueError, match="needs 50 decoder channels for 3 data channels"):
        DiscretizedLogisticMixtureHead(3, param_channels=30, num_components=5)
