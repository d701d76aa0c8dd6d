"""The VampPrior paper's details: AdamNormGrad against a hand computation, the log-variance
bounds of ScaleRule, He-normal initialisation, the paper experiments' structure (parameter
counts, bounds, optimiser), the pseudo-inputs' dead gradient at the code's command-line default
init, and model.num_layers (L = 2 is the two-layer model; L = 3 against a closed-form
linear-Gaussian hierarchy)."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import MultivariateNormal

from conftest import compose_config, estimate_with
from vaelik.errors import ConfigError, user_error_in
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.objectives import Elbo
from vaelik.inference.proposals import EncoderProposal
from vaelik.models.factory import build_model
from vaelik.models.guides import DiagonalGaussianGuide, ScaleRule
from vaelik.models.hierarchical import (
    ConditionalGaussian,
    HierarchicalVAE,
    TwoLayerGuide,
    TwoLayerPrior,
)
from vaelik.models.likelihoods import BernoulliHead, GaussianHead
from vaelik.models.networks import Branches, MLPDecoder, MLPEncoder
from vaelik.models.priors import StandardNormal, VampPrior
from vaelik.models.vae import VAE, he_normal
from vaelik.training.optimizers import AdamNormGrad

F64 = torch.float64
SHAPE = (1, 2, 3)  # 6 binary pixels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on a busy 2-core machine: one intra-op thread is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# 1. AdamNormGrad
# --------------------------------------------------------------------------------------------

LR, BETAS, EPS = 0.1, (0.8, 0.9), 1e-3  # unusual values, so that a swapped setting shows
INITIAL = [np.array([0.5, -1.0, 2.0]), np.array([[1.0, -0.5], [0.25, 3.0]])]
GRADS = [  # per step, per tensor: different sizes and signs each step
    [np.array([0.3, -0.4, 1.2]), np.array([[2.0, -1.0], [0.5, 0.1]])],
    [np.array([-2.0, 0.5, 0.1]), np.array([[0.01, 0.02], [-0.03, 0.04]])],
    [np.array([0.7, 0.7, -0.7]), np.array([[-5.0, 3.0], [1.0, -2.0]])],
]


def hand_adam_normgrad(weight_decay: float) -> list[list[np.ndarray]]:
    """The module docstring's formula in numpy float64: the parameters after each step."""
    b1, b2 = BETAS
    params = [p.copy() for p in INITIAL]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    history = []
    for t, grads in enumerate(GRADS, start=1):
        for i, g in enumerate(grads):
            g = g / (np.sqrt(np.sum(g * g)) + 1e-7) + weight_decay * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            size = LR * np.sqrt(1 - b2**t) / (1 - b1**t)
            params[i] = params[i] - size * m[i] / (np.sqrt(v[i]) + EPS)
        history.append([p.copy() for p in params])
    return history


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_adam_normgrad_steps_are_the_hand_computation(weight_decay):
    """Three steps on tensors [3] and [2, 2] equal the docstring's formula in float64."""
    params = [nn.Parameter(torch.tensor(p, dtype=F64)) for p in INITIAL]
    optimizer = AdamNormGrad(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay)
    expected = hand_adam_normgrad(weight_decay)
    for grads, after in zip(GRADS, expected, strict=True):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g, dtype=F64)
        optimizer.step()
        for p, e in zip(params, after, strict=True):
            np.testing.assert_allclose(p.detach().numpy(), e, rtol=0, atol=1e-9)
    # the parameters did move (by up to lr per step)
    assert np.abs(params[1].detach().numpy() - INITIAL[1]).max() > 0.1


def test_adam_normgrad_leaves_a_parameter_without_gradient_untouched():
    """A parameter whose grad is None keeps its value and gets no optimiser state."""
    moving = nn.Parameter(torch.tensor(INITIAL[0], dtype=F64))
    still = nn.Parameter(torch.tensor(INITIAL[1], dtype=F64))
    optimizer = AdamNormGrad([moving, still], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.3)
    for grads in GRADS:
        moving.grad = torch.tensor(grads[0], dtype=F64)
        optimizer.step()
    assert torch.equal(still.detach(), torch.tensor(INITIAL[1], dtype=F64))
    assert still not in optimizer.state
    assert not torch.equal(moving.detach(), torch.tensor(INITIAL[0], dtype=F64))


def test_adam_normgrad_step_does_not_depend_on_the_gradient_scale():
    """Gradients and the same times 1000 give the same steps (plain Adam would not: with
    eps = 0.1, eps matters beside sqrt(v) for the unscaled ones only)."""
    small, eps = [g[1] for g in GRADS], 0.1
    runs = []
    for scale in (1.0, 1000.0):
        p = nn.Parameter(torch.tensor(INITIAL[1], dtype=F64))
        optimizer = AdamNormGrad([p], lr=LR, betas=BETAS, eps=eps)
        history = []
        for g in small:
            p.grad = torch.tensor(scale * g, dtype=F64)
            optimizer.step()
            history.append(p.detach().clone())
        runs.append(torch.stack(history))
    # not exact: the norm's 1e-7 is relatively larger for the smaller gradients
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-6)
    assert (runs[0][-1] - torch.tensor(INITIAL[1])).abs().max() > 0.05
    # plain Adam (same eps) tells the two scales apart: the comparison above can fail
    adam_runs = []
    for scale in (1.0, 1000.0):
        p = nn.Parameter(torch.tensor(INITIAL[1], dtype=F64))
        adam = torch.optim.Adam([p], lr=LR, betas=BETAS, eps=eps)
        for g in small:
            p.grad = torch.tensor(scale * g, dtype=F64)
            adam.step()
        adam_runs.append(p.detach().clone())
    assert (adam_runs[0] - adam_runs[1]).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------
# 2. ScaleRule
# --------------------------------------------------------------------------------------------


def test_log_var_bounds_clip_sigma_to_the_range():
    """log_var_bounds (-6, 2): sigma = exp(hardtanh(h)/2), exp(-3) and exp(1) at the ends."""
    rule = ScaleRule(log_var_bounds=[-6.0, 2.0])
    assert rule.log_var_bounds == (-6.0, 2.0)
    raw = torch.linspace(-100, 100, 2001)
    sigma = rule(raw)
    low, high = torch.exp(torch.tensor(-3.0)), torch.exp(torch.tensor(1.0))
    assert sigma[0] == low and sigma[-1] == high
    assert torch.all(sigma[raw <= -6.0] == low) and torch.all(sigma[raw >= 2.0] == high)
    assert sigma.min() == low and sigma.max() == high
    inside = (raw > -6.0) & (raw < 2.0)
    torch.testing.assert_close(sigma[inside], torch.exp(raw[inside] / 2), rtol=1e-6, atol=0)
    assert torch.all(torch.diff(sigma[inside]) > 0)


def test_log_var_bounds_gradient_is_zero_outside_and_half_sigma_inside():
    """d sigma / d h is 0 outside (lo, hi) and sigma / 2 inside."""
    rule = ScaleRule(log_var_bounds=(-6.0, 2.0))
    raw = torch.cat([torch.linspace(-100, 100, 2001), torch.tensor([-6.01, -5.99, 1.99, 2.01])])
    raw = raw[((raw + 6.0).abs() > 1e-4) & ((raw - 2.0).abs() > 1e-4)].requires_grad_()
    sigma = rule(raw)
    sigma.sum().backward()
    inside = (raw > -6.0) & (raw < 2.0)
    assert inside.sum() > 50 and (~inside).sum() > 1000
    assert torch.all(raw.grad[~inside] == 0)
    torch.testing.assert_close(raw.grad[inside], 0.5 * sigma.detach()[inside], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "settings",
    [
        {"log_var_bounds": [2.0, -6.0]},
        {"log_var_bounds": [-6.0, -6.0]},
        {"log_var_bounds": [-6.0]},
        {"log_var_bounds": [-6.0, 2.0], "log_scale_bound": 5.0},
    ],
    ids=["reversed", "empty", "one_number", "with_log_scale_bound"],
)
def test_scale_rule_refuses_bad_log_var_bounds(settings):
    """Reversed or empty bounds, a single number, and both bounds at once are ConfigErrors."""
    with pytest.raises(ConfigError, match="log_var_bounds"):
        ScaleRule(**settings)


def test_scale_rule_default_and_log_scale_bound():
    """ScaleRule() is softplus(h) + 1e-4 exactly; log_scale_bound=b is exp(b tanh h)."""
    raw = torch.linspace(-30, 30, 601)
    assert torch.equal(ScaleRule()(raw), F.softplus(raw) + 1e-4)
    assert ScaleRule().log_var_bounds is None
    torch.testing.assert_close(ScaleRule(log_scale_bound=2.5)(raw), torch.exp(2.5 * raw.tanh()))


# --------------------------------------------------------------------------------------------
# 3 and 4. He init and the paper experiments, composed from conf/
# --------------------------------------------------------------------------------------------

PAPER_EXPERIMENTS = {
    "bmnist_vae_paper": 1_116_864,
    "bmnist_vampprior_paper": 1_508_864,
    "bmnist_hvae_vampprior_paper": 2_823_024,
}


@functools.cache
def composed(*overrides: str):
    """A composed train config (cached: composing costs more than building)."""
    return compose_config("train", ["paths.data_dir=/nonexistent/data", *overrides], "unused")


def paper_model(experiment: str, *overrides: str, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return build_model(composed(f"experiment={experiment}", *overrides), "binary")


def test_he_normal_redraws_linear_weights_only():
    """he_normal: Linear weights ~ N(0, 2/fan_in); biases and other layers kept."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1000, 60), nn.Conv2d(3, 4, 3), nn.Linear(60, 300))
    before = copy.deepcopy(net.state_dict())
    he_normal(net)
    after = net.state_dict()
    for key in ("0.bias", "2.bias", "1.weight", "1.bias"):
        assert torch.equal(after[key], before[key]), key
    for key, fan_in in (("0.weight", 1000), ("2.weight", 60)):
        assert not torch.equal(after[key], before[key])
        assert abs(after[key].std().item() / math.sqrt(2 / fan_in) - 1) < 0.05, key


def test_paper_model_weights_are_he_normal_and_biases_torch_default():
    """bmnist_vae_paper: every Linear weight has std sqrt(2/fan_in), mean 0; every bias within
    torch's default bound 1/sqrt(fan_in) (not redrawn)."""
    model = paper_model("bmnist_vae_paper")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 10  # 3 gated layers (2 linears each) and a linear, in two networks
    for layer in linears:
        weight, fan_in = layer.weight.detach(), layer.in_features
        expected = math.sqrt(2 / fan_in)
        assert weight.numel() >= 10_000
        assert abs(weight.std().item() / expected - 1) < 0.05, layer
        assert abs(weight.mean().item()) < 5 * expected / math.sqrt(weight.numel()), layer
        assert layer.bias.detach().abs().max() <= 1 / math.sqrt(fan_in), layer


def test_paper_vampprior_pseudo_inputs_keep_their_init():
    """He init leaves the VampPrior's pseudo-inputs at N(0.05, 0.01^2)."""
    model = paper_model("bmnist_vampprior_paper")
    pseudo = model.prior.pseudo_inputs.detach()
    assert pseudo.shape == (500, 1, 28, 28)
    assert abs(pseudo.mean().item() - 0.05) < 0.001
    assert abs(pseudo.std().item() / 0.01 - 1) < 0.05


def small_parts(seed: int = 0):
    """Guide, prior, decoder, likelihood of a small Bernoulli VAE, drawn under ``seed``."""
    torch.manual_seed(seed)
    guide = DiagonalGaussianGuide(MLPEncoder(SHAPE, 4, hidden=(16,), activation="tanh"), 2)
    prior = VampPrior(2, SHAPE, num_pseudo_inputs=3)
    decoder = MLPDecoder(2, SHAPE, hidden=(16,), activation="gated")
    return guide, prior, decoder, BernoulliHead(data_channels=1)


def test_unknown_init_is_a_config_error_naming_model_init():
    """init='xavier' raises a ConfigError naming model.init, for both model classes."""
    with pytest.raises(ConfigError, match=r"model\.init"):
        VAE(*small_parts(), init="xavier")
    guide, prior, _, likelihood = small_parts()
    lower = ConditionalGaussian(4 + 2, 2, hidden=())
    with pytest.raises(ConfigError, match=r"model\.init"):
        HierarchicalVAE(
            guide,
            MLPEncoder(SHAPE, 4, hidden=()),
            lower,
            prior,
            ConditionalGaussian(2, 2, hidden=()),
            MLPDecoder(4, SHAPE, hidden=()),
            likelihood,
            init="xavier",
        )
    # from the config: Hydra wraps it, the CLI reports the ConfigError among the causes
    with pytest.raises(Exception) as raised:
        paper_model("bmnist_vae_paper", "model.init=xavier")
    error = user_error_in(raised.value)
    assert isinstance(error, ConfigError) and "model.init" in str(error)


def test_default_init_draws_no_random_numbers():
    """init='default' leaves the parts' parameters and the torch RNG state as built; he_normal
    changes both (so the comparison can fail)."""
    parts = small_parts(seed=7)
    state_parts = torch.get_rng_state()
    reference = {f"{i}": copy.deepcopy(p.state_dict()) for i, p in enumerate(parts[:3])}
    model = VAE(*parts, init="default")
    assert torch.equal(torch.get_rng_state(), state_parts)
    for i, part in enumerate((model.guide, model.prior, model.decoder)):
        for key, value in part.state_dict().items():
            assert torch.equal(value, reference[f"{i}"][key]), key
    plain = VAE(*small_parts(seed=7))  # the constructor without the argument
    assert torch.equal(torch.get_rng_state(), state_parts)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    he = VAE(*small_parts(seed=7), init="he_normal")
    assert not torch.equal(torch.get_rng_state(), state_parts)
    assert not torch.equal(he.decoder.net[-1].weight, model.decoder.net[-1].weight)


@pytest.mark.parametrize(("experiment", "count"), PAPER_EXPERIMENTS.items())
def test_paper_experiment_structure(experiment, count):
    """Parameter counts of the authors' code, log-variance bounds (-6, 2) on every Gaussian
    layer, AdamNormGrad as the optimiser."""
    cfg = composed(f"experiment={experiment}")
    model = paper_model(experiment)
    assert sum(p.numel() for p in model.parameters()) == count
    rules = [m.scale_rule for m in model.modules() if hasattr(m, "scale_rule")]
    assert len(rules) == (3 if "hvae" in experiment else 1)
    assert all(rule.log_var_bounds == (-6.0, 2.0) for rule in rules)
    assert cfg.optim.optimizer._target_ == "vaelik.training.optimizers.AdamNormGrad"
    assert cfg.model.init == "he_normal"


def test_paper_hvae_with_three_layers_builds_and_runs():
    """model.num_layers=3 on the HVAE paper experiment: 3 decoder branches, 5 bounded Gaussian
    layers, log_joint [K, B] and posterior draws [K, B, 120]."""
    model = paper_model("bmnist_hvae_vampprior_paper", "model.num_layers=3")
    branches = [m for m in model.decoder.modules() if isinstance(m, Branches)]
    assert len(branches) == 1 and len(branches[0].branches) == 3
    assert branches[0].sizes == [40, 40, 40]
    rules = [m.scale_rule for m in model.modules() if hasattr(m, "scale_rule")]
    assert len(rules) == 5 and all(r.log_var_bounds == (-6.0, 2.0) for r in rules)
    assert model.latent_dim == 120
    x = torch.randint(0, 2, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        posterior = model.posterior(x)
        z, log_q = posterior.sample(torch.randn(3, 2, posterior.noise_dims))
        log_joint = model.log_joint(x, z)
    assert z.shape == (3, 2, 120) and log_q.shape == (3, 2)
    assert log_joint.shape == (3, 2) and torch.isfinite(log_joint).all()


# --------------------------------------------------------------------------------------------
# 5. The pseudo-inputs' gradient at the authors' command-line default init
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init_mean", [-0.05, 0.05])
def test_pseudo_inputs_get_no_gradient_below_the_hard_tanh(init_mean):
    """Pseudo-inputs from N(-0.05, 0.01^2) all sit below hardtanh(0, 1): the ELBO's gradient
    on them is exactly 0; from N(+0.05, 0.01^2) it is not."""
    torch.manual_seed(11)
    latent = 2
    prior = VampPrior(latent, SHAPE, num_pseudo_inputs=5, init_mean=init_mean, init_std=0.01)
    guide = DiagonalGaussianGuide(
        MLPEncoder(SHAPE, 2 * latent, hidden=(16,), activation="tanh"),
        latent,
        log_var_bounds=(-6.0, 2.0),
    )
    model = VAE(guide, prior, MLPDecoder(latent, SHAPE, hidden=(8,)), BernoulliHead(1))
    x = torch.randint(0, 2, (6, *SHAPE), generator=torch.Generator().manual_seed(1)).float()
    Elbo(num_samples=3)(model, x).loss.backward()
    grad = prior.pseudo_inputs.grad
    assert grad is not None and grad.shape == (5, *SHAPE)
    assert model.guide.encoder.net[0].weight.grad.abs().max() > 0
    if init_mean < 0:
        assert torch.all(prior.pseudo_inputs < 0)
        assert torch.all(grad == 0)
    else:
        assert torch.all(prior.pseudo_inputs > 0)
        assert (grad != 0).float().mean() > 0.9


# --------------------------------------------------------------------------------------------
# 6a. num_layers=2 is the two-layer model
# --------------------------------------------------------------------------------------------

TOP, FEATURES = 2, 5


def hierarchy_parts(seed: int):
    """Guide, lower encoder, lower, prior, conditional, decoder (for 2 layers), in this order."""
    torch.manual_seed(seed)
    guide = DiagonalGaussianGuide(MLPEncoder(SHAPE, 2 * TOP, hidden=(8,)), TOP)
    lower_encoder = MLPEncoder(SHAPE, FEATURES, hidden=(8,), activation="tanh")
    lower = ConditionalGaussian(FEATURES + TOP, TOP, hidden=(8,), activation="tanh")
    prior = VampPrior(TOP, SHAPE, num_pseudo_inputs=4)
    conditional = ConditionalGaussian(TOP, TOP, hidden=(8,), activation="gated")
    decoder = MLPDecoder(2 * TOP, SHAPE, hidden=(8,), activation="tanh")
    return guide, lower_encoder, lower, prior, conditional, decoder


def test_two_layer_hierarchical_vae_is_the_two_layer_model():
    """HierarchicalVAE(num_layers=2) has the state dict (keys, order, values) and the log-joint
    of VAE(TwoLayerGuide, TwoLayerPrior) from the same parts."""
    guide, lower_encoder, lower, prior, conditional, decoder = hierarchy_parts(seed=3)
    stacked = HierarchicalVAE(
        guide, lower_encoder, lower, prior, conditional, decoder, BernoulliHead(1), num_layers=2
    )
    guide, lower_encoder, lower, prior, conditional, decoder = hierarchy_parts(seed=3)
    two_layer = VAE(
        TwoLayerGuide(guide, lower_encoder, lower),
        TwoLayerPrior(prior, conditional),
        decoder,
        BernoulliHead(1),
    )
    ours, theirs = stacked.state_dict(), two_layer.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    x = torch.randint(0, 2, (3, *SHAPE), generator=torch.Generator().manual_seed(0)).float()
    z = torch.randn(4, 3, 2 * TOP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(stacked.log_joint(x, z), two_layer.log_joint(x, z))
        assert torch.equal(stacked.posterior(x).log_prob(z), two_layer.posterior(x).log_prob(z))
    # another seed gives other parameters: the comparison above can fail
    other = hierarchy_parts(seed=4)[5]
    assert not torch.equal(other.net[0].weight, decoder.net[0].weight)


def three_layer_model(seed: int = 0) -> HierarchicalVAE:
    """A small non-linear HierarchicalVAE with three layers of TOP."""
    guide, lower_encoder, lower, prior, conditional, _ = hierarchy_parts(seed)
    decoder = MLPDecoder(3 * TOP, SHAPE, hidden=(8,), activation="tanh")
    return HierarchicalVAE(
        guide, lower_encoder, lower, prior, conditional, decoder, BernoulliHead(1), num_layers=3
    )


def test_three_layer_guide_reads_only_the_layer_above():
    """q(z1|x, z2) ignores z3 (and reads z2); q(z2|x, z3) reads z3; the copied layers are drawn
    afresh."""
    model = three_layer_model()
    x = torch.randint(0, 2, (3, *SHAPE), generator=torch.Generator().manual_seed(2)).float()
    gen = torch.Generator().manual_seed(3)
    z3, z3_other, z2, z2_other = (torch.randn(4, 3, TOP, generator=gen) for _ in range(4))
    with torch.no_grad():
        posterior = model.posterior(x)
        loc, scale = posterior.lower_gaussian(torch.cat([z3, z2], -1))
        loc_z3, scale_z3 = posterior.lower_gaussian(torch.cat([z3_other, z2], -1))
        loc_z2, scale_z2 = posterior.lower_gaussian(torch.cat([z3, z2_other], -1))
        middle = posterior.top.lower_gaussian(z3)[0]
        middle_other = posterior.top.lower_gaussian(z3_other)[0]
    assert loc.shape == (4, 3, TOP)
    assert torch.equal(loc, loc_z3) and torch.equal(scale, scale_z3)
    assert (loc - loc_z2).abs().min() > 0 and (scale - scale_z2).abs().max() > 0
    assert (middle - middle_other).abs().min() > 0
    lowers = (model.guide.lower, model.guide.top.lower)
    assert not torch.equal(lowers[0].net[0].weight, lowers[1].net[0].weight)
    conditionals = (model.prior.conditional, model.prior.top.conditional)
    assert not torch.equal(
        conditionals[0].net[0].linear.weight, conditionals[1].net[0].linear.weight
    )


# --------------------------------------------------------------------------------------------
# 6b. Three linear-Gaussian layers against the closed form:
#     z3 ~ N(0, I), z2 | z3 ~ N(A z3 + a, diag s2^2), z1 | z2 ~ N(B z2 + b, diag s1^2),
#     x | z ~ N(C [z3, z2, z1] + c, diag sx^2)
# --------------------------------------------------------------------------------------------

W, D = 2, 5  # width of every latent layer, dimensions of x
_GEN = torch.Generator().manual_seed(21)
LG_A = torch.tensor([[0.8, -0.3], [0.2, 1.1]], dtype=F64)
LG_SHIFT_A = torch.tensor([0.3, -0.4], dtype=F64)
LG_S2 = torch.tensor([0.7, 0.5], dtype=F64)
LG_B = torch.tensor([[-0.6, 0.4], [0.5, 0.9]], dtype=F64)
LG_SHIFT_B = torch.tensor([-0.2, 0.1], dtype=F64)
LG_S1 = torch.tensor([0.6, 0.8], dtype=F64)
LG_C = (0.5 * torch.randn(D, 3 * W, generator=_GEN)).double()
LG_SHIFT_C = (0.3 * torch.randn(D, generator=_GEN)).double()
LG_SX = torch.tensor([0.9, 1.0, 1.1, 0.8, 1.2], dtype=F64)
INFLATE = 1.3  # the guide's standard deviations are the conditionals' times this


def latent_moments() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of z = [z3, z2, z1] = M eps + mu, eps ~ N(0, I)."""
    eye, zero = torch.eye(W, dtype=F64), torch.zeros(W, W, dtype=F64)
    s2, s1 = torch.diag(LG_S2), torch.diag(LG_S1)
    m = torch.cat(
        [
            torch.cat([eye, zero, zero], 1),
            torch.cat([LG_A, s2, zero], 1),
            torch.cat([LG_B @ LG_A, LG_B @ s2, s1], 1),
        ]
    )
    mean = torch.cat([torch.zeros(W, dtype=F64), LG_SHIFT_A, LG_B @ LG_SHIFT_A + LG_SHIFT_B])
    return mean, m @ m.T


def full_moments() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of y = [z3, z2, z1, x]."""
    mean, cov = latent_moments()
    x_mean = LG_C @ mean + LG_SHIFT_C
    x_cov = LG_C @ cov @ LG_C.T + torch.diag(LG_SX**2)
    top = torch.cat([cov, cov @ LG_C.T], 1)
    bottom = torch.cat([LG_C @ cov, x_cov], 1)
    return torch.cat([mean, x_mean]), torch.cat([top, bottom])


def conditional(target: list[int], given: list[int]):
    """p(y_target | y_given) = N(G y_given + o, S): G, o, S."""
    mean, cov = full_moments()
    gain = cov[target][:, given] @ torch.linalg.inv(cov[given][:, given])
    offset = mean[target] - gain @ mean[given]
    return gain, offset, cov[target][:, target] - gain @ cov[given][:, target]


def set_linear(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)


def gaussian_layer_weights(gain: torch.Tensor, offset: torch.Tensor, std: torch.Tensor):
    """Weight and bias of a linear layer giving [loc, softplus^-1(std)] (min_scale = 0)."""
    weight = torch.cat([gain, torch.zeros_like(gain)])
    return weight, torch.cat([offset, torch.log(torch.expm1(std))])


def linear_three_layer_model() -> HierarchicalVAE:
    """The hierarchy through HierarchicalVAE(num_layers=3), all layers linear; the guide is a
    Gaussian approximation of the posterior (each layer's conditional mean, diagonal std
    inflated by INFLATE), a good but inexact importance proposal."""
    shape = (1, 1, D)
    model = HierarchicalVAE(
        DiagonalGaussianGuide(MLPEncoder(shape, 2 * W, hidden=()), W, min_scale=0.0),
        MLPEncoder(shape, D, hidden=()),
        ConditionalGaussian(D + W, W, hidden=(), min_scale=0.0),
        StandardNormal(W),
        ConditionalGaussian(W, W, hidden=(), min_scale=0.0),
        MLPDecoder(3 * W, (2, 1, D), hidden=()),
        GaussianHead(data_channels=1),
        num_layers=3,
    ).double()
    z3, z2, z1 = (list(range(i * W, (i + 1) * W)) for i in range(3))  # indices in [z, x]
    x = list(range(3 * W, 3 * W + D))

    def guide_layer(target, given):
        gain, offset, cov = conditional(target, given)
        return gaussian_layer_weights(gain, offset, INFLATE * cov.diagonal().sqrt())

    set_linear(model.guide.top.top.encoder.net[0], *guide_layer(z3, x))
    for layer in (model.guide.top, model.guide):  # lower encoders pass x through
        set_linear(layer.lower_encoder.net[0], torch.eye(D, dtype=F64), torch.zeros(D, dtype=F64))
    set_linear(model.guide.top.lower.net[0], *guide_layer(z2, x + z3))  # reads [x, z3]
    set_linear(model.guide.lower.net[0], *guide_layer(z1, x + z2))  # reads [x, z2]
    set_linear(model.prior.top.conditional.net[0], *gaussian_layer_weights(LG_A, LG_SHIFT_A, LG_S2))
    set_linear(model.prior.conditional.net[0], *gaussian_layer_weights(LG_B, LG_SHIFT_B, LG_S1))
    decoder_weight = torch.cat([LG_C, torch.zeros_like(LG_C)])
    set_linear(model.decoder.net[0], decoder_weight, torch.cat([LG_SHIFT_C, LG_SX.log()]))
    return model.double().eval()


def test_three_layer_linear_gaussian_densities_are_the_closed_form():
    """log p(z) is the joint Gaussian of (z3, z2, z1); log p(x, z) adds log N(x; C z + c, sx^2)."""
    model = linear_three_layer_model()
    mean, cov = latent_moments()
    g = torch.Generator().manual_seed(4)
    z = 1.5 * torch.randn(7, 3, 3 * W, generator=g, dtype=F64)
    x = torch.randn(3, 1, 1, D, generator=g, dtype=F64)
    with torch.no_grad():
        log_pz = model.prior.log_prob(z)
        log_joint = model.log_joint(x, z)
    exact_pz = MultivariateNormal(mean, cov).log_prob(z)
    torch.testing.assert_close(log_pz, exact_pz, rtol=0, atol=1e-6)
    x_given_z = MultivariateNormal(z @ LG_C.T + LG_SHIFT_C, torch.diag(LG_SX**2))
    exact_joint = exact_pz + x_given_z.log_prob(x.flatten(1))
    torch.testing.assert_close(log_joint, exact_joint, rtol=0, atol=1e-6)
    # the chain's layers are correlated: a prior of independent layers would fail above
    assert cov[:W, W:].abs().max() > 0.5


def test_three_layer_importance_sampling_finds_the_closed_form_log_px():
    """20,000-draw importance sampling through the 3-layer guide is within 4 Monte Carlo
    standard errors of log N(x; C mu + c, C Sigma C^T + diag sx^2)."""
    model = linear_three_layer_model()
    mean, cov = latent_moments()
    marginal = MultivariateNormal(
        LG_C @ mean + LG_SHIFT_C, LG_C @ cov @ LG_C.T + torch.diag(LG_SX**2)
    )
    eps = torch.randn(4, D, generator=torch.Generator().manual_seed(6), dtype=F64)
    x = (marginal.loc + eps @ marginal.scale_tril.T).reshape(4, 1, 1, D)
    exact = marginal.log_prob(x.flatten(1))
    estimate = estimate_with(
        ImportanceSampling(num_samples=20_000), model, x, torch.arange(4), EncoderProposal()
    )
    # the proposal is inexact (K = 1 is off) but good (the error is small and well measured)
    one = estimate_with(
        ImportanceSampling(num_samples=1), model, x, torch.arange(4), EncoderProposal()
    )
    assert (one.log_px - exact).abs().max() > 0.01
    assert torch.all(estimate.mc_stderr < 0.01) and torch.all(estimate.mc_stderr > 0)
    error = (estimate.log_px - exact).abs()
    assert torch.all(error < 4 * estimate.mc_stderr), (error, estimate.mc_stderr)


# --- the earlier two-layer layout, checks at build time, the ablation options -----------------


def legacy_layout(model: dict) -> dict:
    """A HierarchicalVAE node (num_layers 2) as configs stored model=hvae before num_layers."""
    return {
        "_target_": "vaelik.models.vae.VAE",
        "guide": {
            "_target_": "vaelik.models.hierarchical.TwoLayerGuide",
            "top": model["guide"],
            "lower_encoder": model["lower_encoder"],
            "lower": model["lower"],
        },
        "prior": {
            "_target_": "vaelik.models.hierarchical.TwoLayerPrior",
            "top": model["prior"],
            "conditional": model["conditional"],
        },
        "decoder": model["decoder"],
    }


def hvae_config() -> dict:
    from omegaconf import OmegaConf

    cfg = compose_config("train", ["experiment=bmnist_hvae_vampprior", "paths.data_dir=/nowhere"])
    return OmegaConf.to_container(cfg, resolve=True)


def test_a_run_stored_in_the_earlier_two_layer_layout_resumes_and_builds_the_same_model():
    """A checkpoint config of model=hvae from before num_layers (VAE around TwoLayerGuide and
    TwoLayerPrior) resumes under today's config, refuses a real change, and builds the very
    same parameters under the same seed."""
    from hydra.utils import instantiate

    from vaelik.errors import CheckpointError
    from vaelik.models.likelihoods import BernoulliHead as Head
    from vaelik.training.resume import check_same_run

    today = hvae_config()
    stored = {**today, "model": legacy_layout(today["model"])}
    check_same_run(stored, today, "last.ckpt")
    changed = copy.deepcopy(stored)
    changed["model"]["guide"]["lower"]["hidden"] = [200]
    with pytest.raises(CheckpointError, match=r"model\.lower\.hidden: \[200\] -> \[300\]"):
        check_same_run(changed, today, "last.ckpt")

    models = []
    for model in (stored["model"], today["model"]):
        torch.manual_seed(0)
        models.append(instantiate(model, likelihood=Head(1)))
    old, new = (m.state_dict() for m in models)
    assert list(old) == list(new)
    assert all(torch.equal(old[key], new[key]) for key in old)


def test_he_init_keeps_an_iaf_step_the_identity_at_the_start():
    """model.init=he_normal leaves the zero output layers of IAF steps at zero, so an untrained
    flow still returns its base draw."""
    cfg = compose_config(
        "train",
        ["experiment=bmnist_vae_paper", "posterior=iaf", "paths.data_dir=/nowhere"],
    )
    model = build_model(cfg, "binary")
    for step in model.guide.steps:
        assert step.output.weight.abs().max() == 0 and step.output_context.weight.abs().max() == 0
    assert any(layer.weight.std() > 0.01 for layer in model.guide.steps[0].hidden_layers)


@pytest.mark.parametrize(
    ("ablation", "check"),
    [
        ("none", lambda c, m: c.optim.optimizer._target_.endswith("AdamNormGrad")),
        ("optimizer", lambda c, m: c.optim.optimizer._target_ == "torch.optim.Adam"),
        ("log_variance", lambda c, m: m.guide.lower.scale_rule.log_var_bounds is None),
        ("init", lambda c, m: c.model.init == "default"),
        ("layers", lambda c, m: sum(p.numel() for p in m.parameters()) != 2_823_024),
        ("pseudo_inputs", lambda c, m: float(m.prior.top.pseudo_inputs.detach().mean()) < 0),
    ],
)
def test_each_ablation_changes_its_detail_only(ablation, check):
    """Every +ablation option composes with the paper HVAE and the sweep, and changes the detail
    it names while the paper's other details stay."""
    cfg = compose_config(
        "train",
        [
            "experiment=bmnist_hvae_vampprior_paper",
            "+sweep=paper_ablation",
            f"+ablation={ablation}",
            "paths.data_dir=/nowhere",
        ],
    )
    model = build_model(cfg, "binary")
    assert check(cfg, model)
    assert cfg.trainer.max_epochs == 60 and cfg.objective.kl_warmup_epochs == 20
    if ablation != "init":
        assert cfg.model.init == "he_normal"
    if ablation != "optimizer":
        assert cfg.optim.optimizer._target_.endswith("AdamNormGrad")


@pytest.mark.parametrize("proposal", ["student_t", "inflated", "defensive", "prior"])
def test_every_proposal_and_ais_run_through_three_layers(proposal):
    """A three-layer paper HVAE is estimated by IS with every proposal and by AIS: finite
    values, and the same values for a subset of the examples (per-example streams)."""
    import vaelik

    cfg = compose_config(
        "train",
        ["experiment=bmnist_hvae_vampprior_paper", "model.num_layers=3", "paths.data_dir=/nowhere"],
    )
    torch.manual_seed(0)
    model = build_model(cfg, "binary")
    x = (torch.rand(3, 1, 28, 28) < 0.3).float()
    both = vaelik.estimate(model, x, proposal=proposal, num_samples=8)
    assert torch.isfinite(both.log_px).all()
    one = vaelik.estimate(model, x, proposal=proposal, num_samples=8, examples=[1])
    # float32 rounding of other matrix shapes only, at a few hundred nats
    torch.testing.assert_close(one.log_px, both.log_px[1:2], rtol=1e-6, atol=1e-4)
    if proposal == "prior":
        ais = vaelik.make_estimator("ais", num_samples=2, num_steps=3, leapfrog_steps=1)
        assert torch.isfinite(vaelik.estimate(model, x[:1], estimator=ais).log_px).all()


def test_stacking_needs_one_width_and_layers_that_can_be_redrawn():
    """num_layers > 2 refuses layers narrower than the top, and a layer holding parameters
    that it cannot redraw; branches must be a number or a non-empty list."""
    cfg = compose_config(
        "train",
        [
            "experiment=bmnist_hvae_vampprior_paper",
            "model.num_layers=3",
            "model.lower.latent_dim=20",
            "model.conditional.latent_dim=20",
            "paths.data_dir=/nowhere",
        ],
    )
    with pytest.raises(Exception) as raised:
        build_model(cfg, "binary")
    assert "every layer needs the top's width" in str(user_error_in(raised.value))

    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    from vaelik.models.hierarchical import fresh_copy

    with pytest.raises(ConfigError, match="Frozen has parameters and no reset_parameters"):
        fresh_copy(nn.Sequential(nn.Linear(2, 3), Frozen()))
    with pytest.raises(ConfigError, match="non-empty list"):
        ConditionalGaussian(8, 2, hidden=(4,), branches=[])
    assert ConditionalGaussian(8, 2, hidden=(4,), branches=2)(torch.zeros(5, 8))[0].shape == (5, 2)
