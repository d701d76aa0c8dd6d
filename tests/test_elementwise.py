"""The hot path's element-wise functions against torch's own, in value and in gradient."""

import pytest
import torch
import torch.nn.functional as F

from vaelik.models.elementwise import GROUP, Tanh, bernoulli_log_prob, tanh
from vaelik.models.likelihoods.bernoulli import BernoulliImage
from vaelik.models.networks import mlp


def test_tanh_is_within_float32_rounding_of_the_exact_value():
    x = torch.linspace(-30, 30, 200_001)
    exact = torch.tanh(x.double())
    assert (tanh(x).double() - exact).abs().max() < 3e-7
    assert tanh(x).dtype == torch.float32
    assert torch.equal(tanh(torch.tensor([-50.0, 0.0, 50.0])), torch.tensor([-1.0, 0.0, 1.0]))


def test_tanh_is_exact_in_float64_and_has_tanh_gradients():
    x = torch.randn(40, dtype=torch.float64, requires_grad=True) * 3
    assert torch.allclose(tanh(x), torch.tanh(x), atol=1e-15)
    (grad,) = torch.autograd.grad(tanh(x).sum(), x)
    assert torch.allclose(grad, 1 - torch.tanh(x) ** 2, atol=1e-14)
    leaf = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(tanh, (leaf,))
    assert torch.autograd.gradgradcheck(tanh, (leaf,))


def test_the_tanh_activation_of_networks_is_vaeliks_and_loads_torch_tanh_weights():
    net = mlp([3, 5, 2], "tanh")
    assert isinstance(net[1], Tanh)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    net.load_state_dict(plain.state_dict())
    x = torch.randn(7, 3)
    assert torch.allclose(net(x), plain(x), atol=1e-6)


def exact_bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum x l - log(1 + e^l) in float64 (F.softplus returns l itself above l = 20, 2e-9 off)."""
    logits, x = logits.double(), x.double()
    return (x * logits - torch.logaddexp(logits, torch.zeros((), dtype=logits.dtype))).sum(-1)


@pytest.mark.parametrize("pixels", [784, GROUP, 100, 7])
def test_bernoulli_log_prob_matches_the_float64_sum(pixels):
    torch.manual_seed(pixels)
    logits = torch.randn(6, 3, pixels) * 8
    logits[0, 0, :3] = torch.tensor([-120.0, 0.0, 120.0])[: min(3, pixels)]
    x = (torch.rand(3, pixels) < 0.4).float()
    exact = exact_bernoulli_log_prob(logits, x)
    out = bernoulli_log_prob(logits, x)
    assert out.shape == (6, 3) and out.dtype == torch.float32
    assert (out.double() - exact).abs().max() < 1e-6 * exact.abs().max() + 1e-5
    assert torch.allclose(bernoulli_log_prob(logits.double(), x), exact, rtol=1e-13, atol=1e-12)


def test_bernoulli_log_prob_is_exact_for_pixels_between_zero_and_one():
    logits = torch.randn(4, 2, 50, dtype=torch.float64) * 5
    x = torch.rand(2, 50, dtype=torch.float64)
    assert torch.allclose(bernoulli_log_prob(logits, x), exact_bernoulli_log_prob(logits, x))


def test_bernoulli_log_prob_does_not_underflow_where_every_factor_is_a_half():
    logits = torch.zeros(2, 4 * GROUP)  # each factor sigmoid(0) = 1/2: a group's product 2^-64
    x = (torch.rand(2, 4 * GROUP) < 0.5).float()
    expected = torch.full((2,), -4 * GROUP * 0.6931471805599453)
    assert torch.allclose(bernoulli_log_prob(logits, x), expected)


def test_bernoulli_log_prob_of_half_precision_is_computed_in_float32():
    logits = (torch.randn(4, 784) * 5).bfloat16()
    x = (torch.rand(784) < 0.5).float()
    out = bernoulli_log_prob(logits, x)
    assert out.dtype == torch.float32
    expected = (x * logits.float()).sum(-1) - F.softplus(logits.float()).sum(-1)
    assert torch.allclose(out, expected, rtol=1e-5)


def test_bernoulli_log_prob_has_the_usual_gradients():
    logits = (torch.randn(3, 2, 130, dtype=torch.float64) * 4).requires_grad_()
    x = torch.rand(2, 130, dtype=torch.float64).requires_grad_()
    weights = torch.randn(3, 2, dtype=torch.float64)
    grads = torch.autograd.grad((bernoulli_log_prob(logits, x) * weights).sum(), (logits, x))
    expected = weights[..., None] * (x - torch.sigmoid(logits))
    assert torch.allclose(grads[0], expected, atol=1e-15)
    assert torch.allclose(grads[1], (weights[..., None] * logits).sum(0), atol=1e-14)
    assert torch.autograd.gradcheck(bernoulli_log_prob, (logits, x))
    assert torch.autograd.gradgradcheck(bernoulli_log_prob, (logits, x))


def test_bernoulli_log_prob_is_the_negative_binary_cross_entropy():
    logits = torch.randn(5, 2, 1, 28, 28, dtype=torch.float64) * 6
    x = (torch.rand(2, 1, 28, 28) < 0.3).double()
    expected = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum((-3, -2, -1))
    assert torch.allclose(BernoulliImage(logits).log_prob(x), expected, rtol=1e-13)


def test_half_precision_tanh_is_torchs():
    x = torch.tensor([0.001, 0.01, -0.5, 3.0]).bfloat16()
    assert torch.equal(tanh(x), torch.tanh(x))


def bernoulli_of_half_pixels(logits: torch.Tensor) -> torch.Tensor:
    return bernoulli_log_prob(logits, torch.full(logits.shape[-1:], 0.25, dtype=logits.dtype))


@pytest.mark.parametrize("function", [tanh, bernoulli_of_half_pixels])
def test_torch_func_transforms_work(function):
    x = torch.randn(3, 70, dtype=torch.float64)
    jacobian = torch.func.jacrev(function)(x)
    numeric = torch.autograd.functional.jacobian(function, x)
    assert torch.allclose(jacobian, numeric, atol=1e-12)
    tangent = torch.randn_like(x)
    _, forward = torch.func.jvp(function, (x,), (tangent,))
    expected = (numeric.reshape(-1, x.numel()) @ tangent.reshape(-1)).reshape(forward.shape)
    assert torch.allclose(forward, expected, atol=1e-12)
    assert torch.allclose(torch.func.vmap(function)(x), function(x), atol=1e-12)
