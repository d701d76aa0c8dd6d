"""Exact-answer tests of the latent-variable models built from the real parts: a two-layer
linear-Gaussian chain (closed-form p(x) and posterior), the ELBO and IWAE bounds against closed
forms and quadrature, IAF against a brute-force change of variables, the mixture priors against a
loop over components, and the per-example random streams for every guide."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from conftest import estimate_with, plan_for
from models import (
    SHAPE,
    all_binary_images,
    linear_gaussian_log_px,
    linear_gaussian_vae,
    orthogonal_columns,
    quadrature_log_px,
    tiny_bernoulli_vae,
)
from vaelik.errors import UnsupportedCombinationError
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.objectives import Elbo, Iwae
from vaelik.inference.proposals import EncoderProposal, StudentTProposal
from vaelik.inference.streams import Draws, example_keys
from vaelik.models.guides import DiagonalGaussianGuide, gaussian_log_prob
from vaelik.models.hierarchical import ConditionalGaussian, TwoLayerGuide, TwoLayerPrior
from vaelik.models.iaf import IAFGuide
from vaelik.models.likelihoods import BernoulliHead, GaussianHead
from vaelik.models.networks import MLPDecoder, MLPEncoder
from vaelik.models.priors import MixturePrior, StandardNormal, VampPrior
from vaelik.models.vae import VAE

F64 = torch.float64


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.expm1(y))


def set_linear(layer: torch.nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    return matrix - torch.diag(matrix.diagonal())


# --------------------------------------------------------------------------------------------
# 1. A two-layer linear-Gaussian chain: z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, s1^2 I),
#    x | z ~ N(W [z2, z1] + b, noise^2 I)
# --------------------------------------------------------------------------------------------

CHAIN_DIM, TOP, LOWER = 6, 2, 3
CHAIN_NOISE, LOWER_STD = 0.5, 0.6
# one non-zero per row and disjoint rows per column, and W with orthogonal columns: then both
# q(z2|x) and q(z1|x, z2) of the exact posterior have diagonal covariances (asserted below)
CHAIN_A = torch.tensor([[0.8, 0.0], [0.0, -1.2], [0.5, 0.0]], dtype=F64)
CHAIN_SHIFT = torch.tensor([0.3, -0.2, 0.1], dtype=F64)


def chain_prior_moments() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[L]`` and covariance ``[L, L]`` of z = [z2, z1] under the chain prior."""
    a = CHAIN_A
    mean = torch.cat([torch.zeros(TOP, dtype=F64), CHAIN_SHIFT])
    cov = torch.zeros(TOP + LOWER, TOP + LOWER, dtype=F64)
    cov[:TOP, :TOP] = torch.eye(TOP, dtype=F64)
    cov[:TOP, TOP:] = a.T
    cov[TOP:, :TOP] = a
    cov[TOP:, TOP:] = a @ a.T + LOWER_STD**2 * torch.eye(LOWER, dtype=F64)
    return mean, cov


def chain_marginal(weight: torch.Tensor, bias: torch.Tensor) -> MultivariateNormal:
    """p(x) = N(W m + b, W C W^T + noise^2 I)."""
    mean, cov = chain_prior_moments()
    w = weight.double()
    x_cov = w @ cov @ w.T + CHAIN_NOISE**2 * torch.eye(CHAIN_DIM, dtype=F64)
    return MultivariateNormal(w @ mean + bias.double(), x_cov)


def chain_posterior(weight: torch.Tensor, bias: torch.Tensor):
    """p(z|x) = N(G x + c, S): returns G ``[L, D]``, c ``[L]``, S ``[L, L]``."""
    mean, cov = chain_prior_moments()
    w, b = weight.double(), bias.double()
    precision = torch.linalg.inv(cov)
    post_cov = torch.linalg.inv(precision + w.T @ w / CHAIN_NOISE**2)
    gain = post_cov @ w.T / CHAIN_NOISE**2
    offset = post_cov @ (precision @ mean - w.T @ b / CHAIN_NOISE**2)
    return gain, offset, post_cov


def chain_vae(weight: torch.Tensor, bias: torch.Tensor, error: float = 0.0) -> VAE:
    """The chain as VAE(TwoLayerGuide, TwoLayerPrior, MLPDecoder, GaussianHead), all linear.

    The guide is set to the exact posterior p(z2|x) p(z1|x, z2): the lower encoder passes x
    through (identity weights), q(z1|x, z2) is linear in [x, z2]. ``error`` shifts both layers'
    means by ``error`` and shrinks their standard deviations by ``1 - error``.
    """
    shape = (1, 1, CHAIN_DIM)
    gain, offset, post_cov = chain_posterior(weight, bias)
    top_cov = post_cov[:TOP, :TOP]
    k = post_cov[TOP:, :TOP] @ torch.linalg.inv(top_cov)
    lower_cov = post_cov[TOP:, TOP:] - k @ post_cov[:TOP, TOP:]
    assert off_diagonal(top_cov).abs().max() < 1e-7  # W is float32: orthogonal to ~1e-8
    assert off_diagonal(lower_cov).abs().max() < 1e-7  # W is float32: orthogonal to ~1e-8
    top_std = top_cov.diagonal().sqrt() * (1 - error)
    lower_std = lower_cov.diagonal().sqrt() * (1 - error)
    model = VAE(
        guide=TwoLayerGuide(
            DiagonalGaussianGuide(MLPEncoder(shape, 2 * TOP, hidden=()), TOP, min_scale=0.0),
            MLPEncoder(shape, CHAIN_DIM, hidden=()),
            ConditionalGaussian(CHAIN_DIM + TOP, LOWER, hidden=(), min_scale=0.0),
        ),
        prior=TwoLayerPrior(
            StandardNormal(TOP), ConditionalGaussian(TOP, LOWER, hidden=(), min_scale=0.0)
        ),
        decoder=MLPDecoder(TOP + LOWER, (2, 1, CHAIN_DIM), hidden=()),
        likelihood=GaussianHead(data_channels=1),
    )
    top_weight = torch.zeros(2 * TOP, CHAIN_DIM, dtype=F64)
    top_weight[:TOP] = gain[:TOP]
    top_bias = torch.cat([offset[:TOP] + error, softplus_inverse(top_std)])
    set_linear(model.guide.top.encoder.net[0], top_weight, top_bias)
    set_linear(
        model.guide.lower_encoder.net[0],
        torch.eye(CHAIN_DIM, dtype=F64),
        torch.zeros(CHAIN_DIM, dtype=F64),
    )
    lower_weight = torch.zeros(2 * LOWER, CHAIN_DIM + TOP, dtype=F64)
    lower_weight[:LOWER, :CHAIN_DIM] = gain[TOP:] - k @ gain[:TOP]
    lower_weight[:LOWER, CHAIN_DIM:] = k
    lower_bias = torch.cat([offset[TOP:] - k @ offset[:TOP] + error, softplus_inverse(lower_std)])
    set_linear(model.guide.lower.net[0], lower_weight, lower_bias)
    prior_weight = torch.zeros(2 * LOWER, TOP, dtype=F64)
    prior_weight[:LOWER] = CHAIN_A
    prior_bias = torch.cat(
        [CHAIN_SHIFT, softplus_inverse(torch.full((LOWER,), LOWER_STD, dtype=F64))]
    )
    set_linear(model.prior.conditional.net[0], prior_weight, prior_bias)
    decoder_weight = torch.zeros(2 * CHAIN_DIM, TOP + LOWER, dtype=F64)
    decoder_weight[:CHAIN_DIM] = weight
    decoder_bias = torch.cat(
        [bias.double(), torch.full((CHAIN_DIM,), math.log(CHAIN_NOISE), dtype=F64)]
    )
    set_linear(model.decoder.net[0], decoder_weight, decoder_bias)
    return model.eval()


@pytest.fixture(scope="module")
def chain():
    """W, b, 12 data points drawn from p(x), and their exact log p(x)."""
    gen = torch.Generator().manual_seed(5)
    weight = orthogonal_columns(CHAIN_DIM, TOP + LOWER, scale=1.2, seed=2)
    bias = 0.3 * torch.randn(CHAIN_DIM, generator=gen)
    marginal = chain_marginal(weight, bias)
    eps = torch.randn(12, CHAIN_DIM, generator=gen, dtype=F64)
    x = (marginal.loc + eps @ torch.linalg.cholesky(marginal.covariance_matrix).T).float()
    exact = marginal.log_prob(x.double())
    return weight, bias, x.reshape(12, 1, 1, CHAIN_DIM), exact


def test_chain_prior_and_guide_are_the_closed_form_densities(chain):
    """log p(z) of TwoLayerPrior is the joint Gaussian's; log q(z|x) of TwoLayerGuide is the
    exact posterior's, both at arbitrary latents."""
    weight, bias, x, _ = chain
    model = chain_vae(weight, bias)
    z = 1.5 * torch.randn(4, 12, TOP + LOWER, generator=torch.Generator().manual_seed(1))
    mean, cov = chain_prior_moments()
    torch.testing.assert_close(
        model.prior.log_prob(z).double(),
        MultivariateNormal(mean, cov).log_prob(z.double()),
        rtol=1e-6,
        atol=1e-5,
    )
    gain, offset, post_cov = chain_posterior(weight, bias)
    post_mean = x.double().flatten(1) @ gain.T + offset  # [12, L]
    exact_log_q = MultivariateNormal(post_mean, post_cov).log_prob(z.double())
    torch.testing.assert_close(
        model.posterior(x).log_prob(z).double(), exact_log_q, rtol=1e-6, atol=1e-5
    )


def test_chain_prior_and_guide_draw_from_the_closed_form_densities(chain):
    """Moments of 100,000 draws of p(z) and of q(z|x) (the exact posterior) from given noise.
    (Log-weights of the exact posterior are log p(x) at any z, so they cannot check this.)"""
    weight, bias, x, _ = chain
    model = chain_vae(weight, bias)
    n = 100_000
    gen = torch.Generator().manual_seed(8)
    mean, cov = chain_prior_moments()
    gain, offset, post_cov = chain_posterior(weight, bias)
    with torch.no_grad():
        prior_draws = model.prior.sample(torch.randn(n, model.prior.noise_dims, generator=gen))
        posterior = model.posterior(x[:2])
        noise = torch.randn(n, 2, posterior.noise_dims, generator=gen)
        posterior_draws, _ = posterior.sample(noise)
    post_means = x[:2].double().flatten(1) @ gain.T + offset
    cases = [(prior_draws, mean, cov)] + [
        (posterior_draws[:, b], post_means[b], post_cov) for b in range(2)
    ]
    for draws, expected_mean, expected_cov in cases:
        draws = draws.double()
        scale = expected_cov.diagonal().max()
        tolerance = float(5 * (scale / n) ** 0.5)
        torch.testing.assert_close(draws.mean(0), expected_mean, rtol=0, atol=tolerance)
        torch.testing.assert_close(draws.T.cov(), expected_cov, rtol=0, atol=0.03 * float(scale))


@pytest.mark.parametrize("k", [1, 7])
def test_chain_exact_posterior_gives_the_exact_value(chain, k):
    weight, bias, x, exact = chain
    model = chain_vae(weight, bias)
    estimate = estimate_with(
        ImportanceSampling(num_samples=k), model, x, torch.arange(12), EncoderProposal()
    )
    torch.testing.assert_close(estimate.log_px, exact, rtol=0, atol=2e-4)
    assert estimate.log_weight_var.max() < 1e-7
    assert torch.all(estimate.ess > 1 - 1e-6)


def test_chain_importance_sampling_converges_with_a_perturbed_posterior(chain):
    weight, bias, x, exact = chain
    model = chain_vae(weight, bias, error=0.1)
    index = torch.arange(12)
    one = estimate_with(ImportanceSampling(num_samples=1), model, x, index, EncoderProposal())
    assert one.log_px.sub(exact).abs().mean() > 0.05  # the perturbation matters
    errors = []
    for k in (10, 100, 20_000):
        estimate = estimate_with(
            ImportanceSampling(num_samples=k), model, x, index, EncoderProposal()
        )
        errors.append((estimate.log_px - exact).abs().mean().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02, errors
    # from below on average: 2,000 independent K = 10 estimates of one example
    copies = x[:1].expand(2000, -1, -1, -1)
    bound = estimate_with(
        ImportanceSampling(num_samples=10), model, copies, torch.arange(2000), EncoderProposal()
    )
    assert bound.log_px.mean() < exact[0]


# --------------------------------------------------------------------------------------------
# 2. The ELBO and IWAE objectives against closed forms and quadrature
# --------------------------------------------------------------------------------------------

LG_DIM, LG_LATENT, LG_NOISE, LG_ERROR = 6, 3, 0.7, 0.3


def linear_gaussian_elbo(model: VAE, weight, bias, x: torch.Tensor) -> torch.Tensor:
    """E_q log p(x|z) - KL(q || N(0, I)) in closed form, for q = N(mu, diag sigma^2)."""
    posterior = model.posterior(x)
    mu, sigma = posterior.loc.double(), posterior.scale.double()
    w, b, flat = weight.double(), bias.double(), x.double().flatten(1)
    residual = flat - mu @ w.T - b
    spread = (sigma**2) @ (w**2).T  # diag(W diag(sigma^2) W^T)
    expected = -0.5 * LG_DIM * math.log(2 * math.pi * LG_NOISE**2) - (residual**2 + spread).sum(
        -1
    ) / (2 * LG_NOISE**2)
    kl = 0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log()).sum(-1)
    return expected - kl


@torch.no_grad()
def gaussian_quadrature_elbo(model: VAE, x: torch.Tensor, points: int = 4001) -> torch.Tensor:
    """E_q log p(x|z) - KL(q || N(0, 1)) for a 1-D latent: the expectation by the trapezoid
    rule on mu +- 12 sigma, in float64."""
    posterior = model.posterior(x)
    mu, sigma = posterior.loc.double(), posterior.scale.double()  # [B, 1]
    t = torch.linspace(-12, 12, points, dtype=F64)
    z = mu.squeeze(-1) + sigma.squeeze(-1) * t.unsqueeze(1)  # [points, B]
    log_lik = model.decode(z.float().unsqueeze(-1)).log_prob(x).double()
    weights = torch.full((points,), float(t[1] - t[0]), dtype=F64)
    weights[[0, -1]] *= 0.5
    density = Normal(0.0, 1.0).log_prob(t).exp() * weights
    expected = (density.unsqueeze(1) * log_lik).sum(0)
    kl = 0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log()).sum(-1)
    return expected - kl


@pytest.fixture(scope="module")
def bound_problems():
    """Per model: (model, x, exact log p(x), closed-form ELBO)."""
    gen = torch.Generator().manual_seed(0)
    weight = orthogonal_columns(LG_DIM, LG_LATENT)
    bias = torch.randn(LG_DIM, generator=gen) * 0.3
    z = torch.randn(12, LG_LATENT, generator=gen)
    flat = z @ weight.T + bias + LG_NOISE * torch.randn(12, LG_DIM, generator=gen)
    x = flat.reshape(12, 1, 1, LG_DIM)
    linear = linear_gaussian_vae(weight, bias, LG_NOISE, posterior_error=LG_ERROR)
    linear_exact = linear_gaussian_log_px(weight, bias, LG_NOISE, flat)
    linear_elbo = linear_gaussian_elbo(linear, weight, bias, x)
    # the same ELBO as log p(x) - KL(q || p(z|x)), the exact posterior N(m, S) (S diagonal)
    w = weight.double()
    post_cov = torch.linalg.inv(torch.eye(LG_LATENT, dtype=F64) + w.T @ w / LG_NOISE**2)
    post_mean = (flat.double() - bias.double()) @ w @ post_cov / LG_NOISE**2
    assert off_diagonal(post_cov).abs().max() < 1e-7  # W is float32: orthogonal to ~1e-8
    with torch.no_grad():
        posterior = linear.posterior(x)
    q = Normal(posterior.loc.double(), posterior.scale.double())
    p = Normal(post_mean, post_cov.diagonal().sqrt())
    gap = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(linear_elbo, linear_exact - gap, rtol=0, atol=1e-6)
    assert gap.min() > 0.05  # a posterior error the bounds can see

    bernoulli = tiny_bernoulli_vae(latent_dim=1)
    images = all_binary_images()
    return {
        "linear_gaussian": (linear, x, linear_exact, linear_elbo),
        "bernoulli": (
            bernoulli,
            images,
            quadrature_log_px(bernoulli, images),
            gaussian_quadrature_elbo(bernoulli, images),
        ),
    }


def test_elbo_and_iwae_are_log_px_for_the_exact_chain_posterior(chain):
    """The two-layer guide has no closed-form KL, so the ELBO uses the sampled KL: with the
    exact posterior every draw gives log p(x|z) - (log q - log p) = log p(x), so both objectives
    are exact whatever the draws; a perturbed guide gives ELBO < IWAE_5 < log p(x) on average."""
    weight, bias, x, exact = chain
    torch.manual_seed(13)
    with torch.no_grad():
        model = chain_vae(weight, bias)
        assert model.closed_form_kl(model.posterior(x)) is None
        elbo, iwae = Elbo(num_samples=3)(model, x), Iwae(num_samples=4)(model, x)
        torch.testing.assert_close(elbo.elbo.double(), exact, rtol=0, atol=2e-4)
        torch.testing.assert_close(iwae.bound.double(), exact, rtol=0, atol=2e-4)
        perturbed = chain_vae(weight, bias, error=0.1)
        many = x.repeat(200, 1, 1, 1)
        elbo = Elbo(num_samples=1)(perturbed, many).elbo.double().reshape(200, -1).mean(0)
        iwae = Iwae(num_samples=5)(perturbed, many).bound.double().reshape(200, -1).mean(0)
    assert torch.all(elbo < iwae) and iwae.mean() < exact.mean()


@pytest.mark.parametrize("which", ["linear_gaussian", "bernoulli"])
def test_elbo_objective_matches_the_closed_form_elbo(bound_problems, which):
    model, x, exact, closed_elbo = bound_problems[which]
    assert torch.all(closed_elbo < exact)
    torch.manual_seed(11)
    with torch.no_grad():
        terms = Elbo(num_samples=20_000)(model, x)
    torch.testing.assert_close(terms.elbo.double(), closed_elbo, rtol=0, atol=0.03)
    # beta = 1, no warm-up: the loss is the negative mean ELBO, the bound is the ELBO
    torch.testing.assert_close(terms.loss, -terms.elbo.mean())
    torch.testing.assert_close(terms.bound, terms.elbo)


@pytest.mark.parametrize("which", ["linear_gaussian", "bernoulli"])
def test_iwae_bound_lies_between_the_elbo_and_log_px_and_rises_with_k(bound_problems, which):
    """Means over many independent copies of each example: ELBO = IWAE_1 <= IWAE_5 <= IWAE_50
    <= log p(x)."""
    model, x, exact, closed_elbo = bound_problems[which]
    copies = 400 if which == "linear_gaussian" else 100
    many = x.repeat(copies, 1, 1, 1)  # [copies * B, ...], example b at rows b, b + B, ...
    torch.manual_seed(12)
    means, errors = {}, {}
    for k in (1, 5, 50):
        with torch.no_grad():
            bound = Iwae(num_samples=k)(model, many).bound.double().reshape(copies, -1)
        means[k] = bound.mean(0)
        errors[k] = bound.std(0) / math.sqrt(copies)
    slack = 4 * errors[1] + 1e-3
    assert torch.all((means[1] - closed_elbo).abs() < slack), (means[1] - closed_elbo, slack)
    assert torch.all(means[50] < exact + 4 * errors[50] + 1e-3)
    assert torch.all(means[5] > closed_elbo - 4 * errors[5] - 1e-3)
    assert closed_elbo.mean() < means[5].mean() < means[50].mean() < exact.mean()
    assert (means[5] > means[1]).float().mean() > 0.8
    assert (means[50] > means[5]).float().mean() > 0.8


# --------------------------------------------------------------------------------------------
# 3. Inverse autoregressive flows
# --------------------------------------------------------------------------------------------

IAF_LATENT, IAF_CONTEXT = 4, 3


def mlp_encoder(out_features: int) -> MLPEncoder:
    return MLPEncoder(SHAPE, out_features, hidden=(16,), activation="tanh")


def iaf_guide(latent: int, num_steps: int, perturb: float = 0.0, seed: int = 0) -> IAFGuide:
    torch.manual_seed(seed)
    guide = IAFGuide(
        mlp_encoder(2 * latent + IAF_CONTEXT),
        latent,
        context_features=IAF_CONTEXT,
        num_steps=num_steps,
        hidden=(16, 16),
        activation="elu",
        step_log_scale_bound=1.5,
    )
    if perturb:
        with torch.no_grad():
            for step in guide.steps:
                step.output.weight.normal_(0.0, perturb)
                step.output.bias.normal_(0.0, perturb)
                step.output_context.weight.normal_(0.0, perturb)
    return guide


def images(count: int = 8) -> torch.Tensor:
    return all_binary_images()[torch.arange(count) * 7 % 64]


@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_untrained_iaf_is_the_diagonal_gaussian_guide(num_steps):
    iaf = iaf_guide(IAF_LATENT, num_steps)
    for step in iaf.steps:
        assert not step.output.weight.any() and not step.output.bias.any()
    diagonal = DiagonalGaussianGuide(mlp_encoder(2 * IAF_LATENT), IAF_LATENT)
    with torch.no_grad():
        diagonal.encoder.net[0].load_state_dict(iaf.encoder.net[0].state_dict())
        head = iaf.encoder.net[2]
        set_linear(
            diagonal.encoder.net[2], head.weight[: 2 * IAF_LATENT], head.bias[: 2 * IAF_LATENT]
        )
        x = images()
        noise = torch.randn(5, x.shape[0], IAF_LATENT, generator=torch.Generator().manual_seed(3))
        z_iaf, log_q_iaf = iaf(x).sample(noise)
        z_diag, log_q_diag = diagonal(x).sample(noise)
        torch.testing.assert_close(z_iaf, z_diag, rtol=0, atol=1e-6)
        torch.testing.assert_close(log_q_iaf, log_q_diag, rtol=0, atol=1e-6)
        torch.testing.assert_close(iaf(x).mean, diagonal(x).mean, rtol=0, atol=1e-6)
        # and so the whole model's importance weights are the same
        models = [
            VAE(
                guide,
                StandardNormal(IAF_LATENT),
                MLPDecoder(IAF_LATENT, SHAPE, hidden=(8,)),
                BernoulliHead(data_channels=1),
            )
            for guide in (iaf, diagonal)
        ]
        models[1].decoder.load_state_dict(models[0].decoder.state_dict())
        index = torch.arange(x.shape[0])
        log_w = [
            plan_for(m, ImportanceSampling(num_samples=9), EncoderProposal()).log_weights(x, index)
            for m in models
        ]
    torch.testing.assert_close(log_w[0], log_w[1], rtol=0, atol=1e-5)


def flow_of_one_example(guide: IAFGuide, context: torch.Tensor):
    """z0 ``[L]`` -> z_T ``[L]`` through every step, for one example's ``context [C]``."""

    def flow(z0: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(1, dtype=z0.dtype)
        return guide.flow(z0.unsqueeze(0), zero, context.unsqueeze(0))[0][0]

    return flow


@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_iaf_log_density_is_the_change_of_variables(num_steps):
    guide = iaf_guide(IAF_LATENT, num_steps, perturb=0.5, seed=num_steps).double()
    x = images().double()
    with torch.no_grad():
        posterior = guide(x)
        noise = torch.randn(1, x.shape[0], IAF_LATENT, generator=torch.Generator().manual_seed(4))
        z, log_q = posterior.sample(noise.double())
    assert (z[0] - (posterior.loc + posterior.scale * noise[0])).abs().max() > 0.1  # not identity
    for b in range(x.shape[0]):
        z0 = posterior.loc[b] + posterior.scale[b] * noise[0, b].double()
        flow = flow_of_one_example(guide, posterior.context[b])
        jacobian = torch.autograd.functional.jacobian(flow, z0)
        _, log_det = torch.linalg.slogdet(jacobian)
        brute = gaussian_log_prob(z0, posterior.loc[b], posterior.scale[b]) - log_det
        torch.testing.assert_close(flow(z0), z[0, b], rtol=0, atol=1e-10)
        torch.testing.assert_close(log_q[0, b], brute.detach(), rtol=0, atol=1e-5)
        if num_steps == 1:  # z_l depends on z0_<=l only, with dz_l / dz0_l = exp(s_l) > 0
            assert torch.all(jacobian.triu(1) == 0)
            assert jacobian.tril(-1).abs().max() > 1e-3
            assert torch.all(jacobian.diagonal() > 0)
        elif num_steps == 2:  # the order is reversed between steps: the composition is full
            assert jacobian.triu(1).abs().max() > 1e-3
            assert jacobian.tril(-1).abs().max() > 1e-3


def test_every_made_step_is_autoregressive():
    """(m_l, s_l) of every step depend on z_<l only (strictly lower-triangular Jacobians), and
    do depend on all of them."""
    guide = iaf_guide(IAF_LATENT, 3, perturb=0.5, seed=7).double()
    context = torch.randn(IAF_CONTEXT, dtype=F64)
    z = torch.randn(IAF_LATENT, dtype=F64)
    for step in guide.steps:
        for part in range(2):
            jacobian = torch.autograd.functional.jacobian(
                lambda v, step=step, part=part: step(v, context)[part], z
            )
            assert torch.all(jacobian.triu(0) == 0), jacobian
            below = torch.ones(IAF_LATENT, IAF_LATENT, dtype=torch.bool).tril(-1)
            assert torch.all(jacobian[below] != 0), jacobian


def test_every_made_output_depends_on_the_context():
    """The first variable's (m, s) see no hidden unit; the context still reaches them, so every
    coordinate of every step depends on x."""
    guide = iaf_guide(IAF_LATENT, 2, perturb=0.5, seed=7).double()
    z = torch.randn(IAF_LATENT, dtype=F64)
    for step in guide.steps:
        for part in range(2):
            jacobian = torch.autograd.functional.jacobian(
                lambda c, step=step, part=part: step(z, c)[part],
                torch.randn(IAF_CONTEXT, dtype=F64),
            )
            assert torch.all(jacobian.abs().sum(-1) > 0), jacobian


# --------------------------------------------------------------------------------------------
# 4. Mixture priors against a loop over components
# --------------------------------------------------------------------------------------------


def loop_mixture_log_prob(z, means, scales, log_weights) -> torch.Tensor:
    terms = [
        log_weights[c].double()
        + Normal(means[c].double(), scales[c].double()).log_prob(z.double()).sum(-1)
        for c in range(means.shape[0])
    ]
    return torch.logsumexp(torch.stack(terms), dim=0)


def random_mixture(latent: int, components: int, seed: int, offset: float = 0.0) -> MixturePrior:
    torch.manual_seed(seed)
    prior = MixturePrior(latent, components)
    with torch.no_grad():
        prior.means.mul_(2.0).add_(offset)
        prior.log_scales.normal_(0.0, 0.5)
        prior.logits.normal_(0.0, 1.0)
    return prior


@pytest.mark.parametrize(
    ("dtype", "offset", "log_scale_shift"),
    [(F64, 0.0, 0.0), (torch.float32, 0.0, 0.0), (F64, 100.0, -3.0)],
    ids=["float64", "float32", "far_and_narrow"],
)
def test_mixture_log_prob_is_the_loop_over_components(dtype, offset, log_scale_shift):
    prior = random_mixture(3, 5, seed=1, offset=offset).to(dtype)
    with torch.no_grad():
        prior.log_scales.add_(log_scale_shift)
    gen = torch.Generator().manual_seed(2)
    # points near the components and far from all of them, with two batch dimensions
    near = prior.means.detach()[torch.randint(0, 5, (6, 4), generator=gen)]
    near = near + prior.log_scales.detach().exp().mean() * torch.randn(6, 4, 3, generator=gen)
    far = offset + 8 * torch.randn(2, 4, 3, generator=gen)
    z = torch.cat([near, far.to(dtype)])
    with torch.no_grad():
        got = prior.log_prob(z)
        expected = loop_mixture_log_prob(z, *prior.components())
    assert got.dtype == dtype and got.shape == (8, 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)


def vamp_model(guide, prior, latent: int) -> VAE:
    return VAE(guide, prior, MLPDecoder(latent, SHAPE, hidden=(8,)), BernoulliHead(data_channels=1))


def loop_vamp_log_prob(z, top_guide, pseudo_inputs) -> torch.Tensor:
    count = pseudo_inputs.shape[0]
    terms = []
    for c in range(count):
        q = top_guide(pseudo_inputs[c : c + 1].clamp(0.0, 1.0))
        terms.append(Normal(q.loc[0], q.scale[0]).log_prob(z.double()).sum(-1) - math.log(count))
    return torch.logsumexp(torch.stack(terms), dim=0)


def test_vampprior_is_the_mixture_of_the_guide_at_its_pseudo_inputs():
    torch.manual_seed(3)
    latent = 3
    prior = VampPrior(latent, SHAPE, num_pseudo_inputs=7)
    with torch.no_grad():  # some pixels outside [0, 1]: the hard tanh clips them
        prior.pseudo_inputs.uniform_(-0.5, 1.5)
    guide = DiagonalGaussianGuide(mlp_encoder(2 * latent), latent)
    model = vamp_model(guide, prior, latent).double()
    z = 2 * torch.randn(5, 4, latent, dtype=F64)
    with torch.no_grad():
        got = model.prior.log_prob(z)
        expected = loop_vamp_log_prob(z, guide, prior.pseudo_inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_vampprior_in_a_two_layer_model_uses_the_top_guide():
    torch.manual_seed(4)
    top, lower, features = 2, 3, 5
    vamp = VampPrior(top, SHAPE, num_pseudo_inputs=6)
    with torch.no_grad():
        vamp.pseudo_inputs.uniform_(0.0, 1.0)
    top_guide = DiagonalGaussianGuide(mlp_encoder(2 * top), top)
    guide = TwoLayerGuide(
        top_guide, mlp_encoder(features), ConditionalGaussian(features + top, lower, hidden=(8,))
    )
    conditional = ConditionalGaussian(top, lower, hidden=(8,))
    model = vamp_model(guide, TwoLayerPrior(vamp, conditional), top + lower).double()
    z = torch.randn(3, 4, top + lower, dtype=F64)
    with torch.no_grad():
        loc, scale = conditional(z[..., :top])
        expected = loop_vamp_log_prob(z[..., :top], top_guide, vamp.pseudo_inputs) + Normal(
            loc, scale
        ).log_prob(z[..., top:]).sum(-1)
        got = model.prior.log_prob(z)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_vampprior_refuses_a_guide_without_a_gaussian_top():
    with pytest.raises(UnsupportedCombinationError, match="vampprior"):
        vamp_model(iaf_guide(3, 1), VampPrior(3, SHAPE, num_pseudo_inputs=4), 3)
    two_layer = TwoLayerGuide(iaf_guide(2, 1), mlp_encoder(4), ConditionalGaussian(6, 2, (8,)))
    prior = TwoLayerPrior(VampPrior(2, SHAPE, num_pseudo_inputs=4), ConditionalGaussian(2, 2))
    with pytest.raises(UnsupportedCombinationError, match="vampprior"):
        vamp_model(two_layer, prior, 4)


def test_mixture_samples_have_the_mixture_distribution():
    prior = random_mixture(2, 3, seed=5).double()
    n = 200_000
    noise = torch.randn(n, prior.noise_dims, generator=torch.Generator().manual_seed(6), dtype=F64)
    with torch.no_grad():
        z = prior.sample(noise)
        means, scales, log_weights = (part.detach() for part in prior.components())
    weights = log_weights.exp()
    mean = weights @ means
    second = weights @ (scales**2 + means**2)  # E[z_l^2]
    variance = second - mean**2
    assert z.shape == (n, 2)
    torch.testing.assert_close(z.mean(0), mean, rtol=0, atol=float(5 * (variance.max() / n) ** 0.5))
    torch.testing.assert_close(z.var(0), variance, rtol=0.02, atol=0)
    # per dimension the marginal is a 1-D mixture: its CDF (the DKW bound: 0.005 is ~10 sigma)
    points = torch.linspace(-4, 4, 41, dtype=F64)
    for dim in range(2):
        empirical = (z[:, dim].unsqueeze(1) <= points).double().mean(0)
        cdf = Normal(means[:, dim].unsqueeze(1), scales[:, dim].unsqueeze(1)).cdf(points)
        assert (empirical - weights @ cdf).abs().max() < 0.005
    # the same noise in a batch of another shape gives the same draws
    with torch.no_grad():
        reshaped = prior.sample(noise[:600].reshape(20, 30, -1))
    torch.testing.assert_close(reshaped.reshape(600, 2), z[:600])


# --------------------------------------------------------------------------------------------
# 5 and 6. Every guide: K = 1 is the hand-made single-sample ELBO; chunks and batches
# --------------------------------------------------------------------------------------------

GUIDES = ["diagonal", "iaf", "hierarchical", "hierarchical_iaf"]
TOP2, LOWER2, FEATURES2 = 2, 2, 8


def two_layer(top_guide, top_prior) -> tuple[TwoLayerGuide, TwoLayerPrior]:
    guide = TwoLayerGuide(
        top_guide,
        mlp_encoder(FEATURES2),
        ConditionalGaussian(FEATURES2 + TOP2, LOWER2, hidden=(16,)),
    )
    return guide, TwoLayerPrior(top_prior, ConditionalGaussian(TOP2, LOWER2, hidden=(16,)))


def model_with_guide(kind: str, seed: int = 0) -> VAE:
    """A small Bernoulli VAE with the named guide (IAF flows perturbed away from identity)."""
    torch.manual_seed(seed)
    if kind == "diagonal":
        latent = 3
        guide = DiagonalGaussianGuide(mlp_encoder(2 * latent), latent)
        prior = VampPrior(latent, SHAPE, num_pseudo_inputs=5)
        with torch.no_grad():
            prior.pseudo_inputs.uniform_(0.0, 1.0)
    elif kind == "iaf":
        guide, prior = iaf_guide(3, 2, perturb=0.5, seed=seed), MixturePrior(3, 4)
    elif kind == "hierarchical":
        guide, prior = two_layer(
            DiagonalGaussianGuide(mlp_encoder(2 * TOP2), TOP2), StandardNormal(TOP2)
        )
    else:
        guide, prior = two_layer(iaf_guide(TOP2, 2, perturb=0.5, seed=seed), MixturePrior(TOP2, 3))
    decoder = MLPDecoder(guide.latent_dim, SHAPE, hidden=(16,), activation="tanh")
    with torch.no_grad():
        decoder.net[-1].weight.mul_(3.0)
    return VAE(guide, prior, decoder, BernoulliHead(data_channels=1)).eval()


NOISE_DIMS = {
    "diagonal": 3,
    "iaf": 3,
    "hierarchical": TOP2 + LOWER2,
    "hierarchical_iaf": TOP2 + LOWER2,
}


@pytest.mark.parametrize("kind", GUIDES)
@pytest.mark.parametrize("seed", [0, 3])
def test_one_draw_is_the_single_sample_elbo_of_the_documented_stream(kind, seed):
    model = model_with_guide(kind)
    x, index = images(10), torch.arange(40, 50)
    estimate = estimate_with(
        ImportanceSampling(num_samples=1, seed=seed), model, x, index, EncoderProposal()
    )
    with torch.no_grad():
        posterior = model.posterior(x)
        dims = posterior.noise_dims
        assert dims == NOISE_DIMS[kind]
        noise = Draws(example_keys(seed, index), 0, 1).normal(dims)[0]
        z, log_q = posterior.sample(noise[None])
        log_px_z, log_pz = model.joint_terms(x, z)
    single = (log_px_z + log_pz - log_q)[0].double()
    torch.testing.assert_close(estimate.log_px, single, rtol=0, atol=1e-5)
    assert torch.all(estimate.ess == 1) and torch.all(estimate.log_weight_var == 0)
    assert z.shape == (1, 10, model.latent_dim)
    if model.guide.can_score:  # scoring the draw agrees with drawing it
        torch.testing.assert_close(posterior.log_prob(z), log_q, rtol=0, atol=1e-5)
    else:
        with pytest.raises(UnsupportedCombinationError):
            posterior.log_prob(z)
    if kind == "diagonal":  # and with an independent computation of log q
        expected_q = Normal(posterior.loc, posterior.scale).log_prob(z).sum(-1)
        torch.testing.assert_close(log_q, expected_q, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", GUIDES)
@pytest.mark.parametrize(
    "proposal", [EncoderProposal(), StudentTProposal(4.0)], ids=["encoder", "student_t"]
)
def test_results_do_not_depend_on_chunks_or_batches(kind, proposal):
    # in float64, so that the batch shapes of the matrix products cost no visible precision:
    # any difference is a different draw
    model = model_with_guide(kind, seed=1).double()
    x, index = images(12).double(), torch.arange(100, 112)
    k = 20

    def log_weights(estimator, rows=slice(None)):
        return plan_for(model, estimator, proposal).log_weights(x[rows], index[rows])

    reference = log_weights(ImportanceSampling(num_samples=k, chunk_size=10_000))
    for chunk_size in (1, 7, 100):
        other = log_weights(ImportanceSampling(num_samples=k, chunk_size=chunk_size))
        torch.testing.assert_close(other, reference, rtol=0, atol=1e-9)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    parts = [
        log_weights(ImportanceSampling(num_samples=k, chunk_size=5), rows)
        for rows in (order[:5], order[5:])
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1), reference[:, order], rtol=0, atol=1e-9)
    # the first draws of a longer run are the draws of a shorter one; another seed differs
    shorter = log_weights(ImportanceSampling(num_samples=8))
    torch.testing.assert_close(shorter, reference[:8], rtol=0, atol=1e-9)
    reseeded = log_weights(ImportanceSampling(num_samples=k, seed=1))
    assert (reseeded - reference).abs().min() > 0
