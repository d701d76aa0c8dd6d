"""Hand-written gradients for AIS: the same numbers as autograd, fewer evaluations, and models
that have no hand-written pass still measured by autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import compose_config, plan_for
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.joint_gradient import JointGradient, gradient_of
from vaelik.inference.proposals import EncoderProposal
from vaelik.models.factory import build_model
from vaelik.models.folding import TanhMLP
from vaelik.models.frozen import frozen
from vaelik.models.networks import Branches, mlp
from vaelik.models.reverse_mode import ReverseMLP, reverse_mlp


def autograd_input_gradient(net: nn.Module, x: torch.Tensor, weights: torch.Tensor):
    """net(x) and d/dx sum(weights * net(x)), by autograd."""
    leaf = x.clone().requires_grad_(True)
    output = net(leaf)
    (gradient,) = torch.autograd.grad((output * weights).sum(), leaf)
    return output.detach(), gradient


NETWORKS = {
    "gated": lambda: mlp([5, 7, 6, 4], "gated"),
    "tanh": lambda: mlp([5, 7, 6, 4], "tanh"),  # folded into its sigmoid form
    "tanh, not folded": lambda: nn.Sequential(
        mlp([5, 7], "tanh", activate_last=True), nn.Linear(7, 4)
    ),
    "relu": lambda: mlp([5, 7, 6, 4], "relu"),
    "one linear layer": lambda: nn.Linear(5, 4),
}


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_the_hand_written_pass_is_the_network_and_its_gradient(kind):
    torch.manual_seed(0)
    net = NETWORKS[kind]().double()
    x = torch.randn(9, 5, dtype=torch.float64)
    weights = torch.randn(9, 4, dtype=torch.float64)
    reverse = reverse_mlp(net)
    assert isinstance(reverse, ReverseMLP)
    for _ in range(2):  # the backward consumes what the forward kept, and nothing else
        output, saved = reverse.forward(x)
        gradient = reverse.backward(saved, weights)
        expected_output, expected_gradient = autograd_input_gradient(net, x, weights)
        assert torch.allclose(output, expected_output, rtol=1e-12, atol=1e-12)
        assert torch.allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "net",
    [
        mlp([5, 7, 4], "elu"),
        nn.Sequential(Branches([2, 3], 4, "gated"), mlp([8, 4], "gated")),
        nn.Conv2d(1, 1, 3),
    ],
    ids=["elu", "branch and join", "convolution"],
)
def test_networks_with_other_layers_have_no_hand_written_pass(net):
    assert reverse_mlp(net) is None


def vae(*overrides: str, kind: str = "binary"):
    torch.manual_seed(3)
    cfg = compose_config(overrides=["latent_dim=3", "encoder.hidden=[9]", *overrides])
    return build_model(cfg, kind).double().eval()


def binary_images(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (count, 1, 28, 28), generator=generator).double()


HAND_WRITTEN = {
    "gated, standard normal": ["decoder.hidden=[8,6]", "decoder.activation=gated"],
    "tanh, VampPrior": ["decoder.hidden=[8]", "prior=vampprior", "prior.num_pseudo_inputs=5"],
    "relu, mixture": ["decoder.hidden=[8]", "decoder.activation=relu", "prior=mixture"],
}


@pytest.mark.parametrize("kind", list(HAND_WRITTEN))
def test_log_joint_and_its_gradient_are_autograd_s(kind):
    model = vae(*HAND_WRITTEN[kind])
    x, z = binary_images(4), torch.randn(6, 4, 3, dtype=torch.float64)
    with frozen(model):
        joint = JointGradient(model)
        assert joint.hand_written
        log_joint, gradient = joint(x, z)
        without_value, same_gradient = joint(x, z, value=False)
    expected, expected_gradient = gradient_of(lambda leaf: model.log_joint(x, leaf), z)
    assert without_value is None and torch.equal(gradient, same_gradient)
    assert torch.allclose(log_joint, expected, rtol=1e-12, atol=1e-9)
    assert torch.allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "overrides, hand_written",
    [
        (["likelihood=gaussian"], False),
        (["decoder.activation=elu"], False),
        (["model=hvae", "decoder.branches=2"], False),
        (["model=hvae"], True),  # its prior scores the hierarchy, its decoder reads [z2, z1]
        (["posterior=iaf"], True),  # the guide plays no part in log p(x, z)
    ],
    ids=["gaussian head", "elu decoder", "branch and join", "hierarchy", "iaf guide"],
)
def test_every_model_gets_autograd_s_numbers(overrides, hand_written):
    continuous = "likelihood=gaussian" in overrides
    model = vae(*overrides, kind="continuous" if continuous else "binary")
    x = torch.rand(3, 1, 28, 28).double() if continuous else binary_images(3)
    z = torch.randn(5, 3, model.latent_dim, dtype=torch.float64)
    with frozen(model):
        joint = JointGradient(model)
        log_joint, gradient = joint(x, z)
    assert joint.hand_written == hand_written
    expected, expected_gradient = gradient_of(lambda leaf: model.log_joint(x, leaf), z)
    assert torch.allclose(log_joint, expected, rtol=1e-12, atol=1e-9)
    assert torch.allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-10)


def test_a_vampprior_runs_its_guide_once_while_frozen():
    model = vae("decoder.hidden=[8]", "prior=vampprior", "prior.num_pseudo_inputs=5")
    calls = []
    model.guide.register_forward_hook(lambda *_: calls.append(1))
    z = torch.randn(4, 2, 3, dtype=torch.float64)
    outside = [model.prior.log_prob(z) for _ in range(3)]
    assert len(calls) == 3
    calls.clear()
    with frozen(model):
        inside = [model.prior.log_prob(z) for _ in range(3)]
    assert len(calls) == 1 and model.prior._held is None
    assert all(torch.equal(a, b) for a, b in zip(outside, inside, strict=True))


def test_frozen_scopes_nest():
    """An estimate inside an estimate (an inner ``frozen``) keeps the outer scope's held values:
    the VampPrior's guide still runs once, the tanh MLP stays folded, and both let go at the
    outer scope's end."""
    model = vae(
        "decoder.hidden=[8]",
        "decoder.activation=tanh",
        "prior=vampprior",
        "prior.num_pseudo_inputs=5",
    )
    calls = []
    model.guide.register_forward_hook(lambda *_: calls.append(1))
    tanh_mlps = [m for m in model.modules() if isinstance(m, TanhMLP) and m.alternates()]
    assert tanh_mlps
    z = torch.randn(4, 2, 3, dtype=torch.float64)
    with frozen(model):
        held = model.prior._held
        with frozen(model):
            model.prior.log_prob(z)
            assert model.prior._held is held
        assert model.prior._held is held and all(m._folding for m in tanh_mlps)
        model.prior.log_prob(z)
    assert len(calls) == 1
    assert model.prior._held is None and not any(m._folding for m in tanh_mlps)


def ais(**settings) -> AnnealedImportanceSampling:
    return AnnealedImportanceSampling(
        num_samples=4, num_steps=6, leapfrog_steps=3, prior_share=0, **settings
    )


def test_a_transition_costs_its_leapfrog_steps_and_no_more(monkeypatch):
    model = vae("decoder.hidden=[8]", "decoder.activation=gated")
    x = binary_images(3)
    estimator = ais()
    plan = plan_for(model, estimator, EncoderProposal())
    evaluations = []
    call = JointGradient.__call__
    monkeypatch.setattr(
        JointGradient,
        "__call__",
        lambda self, x, z, value=True: evaluations.append(value) or call(self, x, z, value),
    )
    estimator.log_weights(plan, x, torch.arange(3))
    # the start, then per step 3 leapfrog steps of which only the last computes densities
    assert len(evaluations) == 1 + 6 * 3
    assert evaluations.count(True) == 1 + 6


def test_hand_written_and_autograd_chains_give_the_same_estimates(monkeypatch):
    model = vae("decoder.hidden=[8,6]", "decoder.activation=gated").float()
    x = binary_images(5).float()
    estimator = ais(chunk_size=8)
    plan = plan_for(model, estimator, EncoderProposal())
    hand_written = estimator.log_weights(plan, x, torch.arange(5))
    monkeypatch.setattr(JointGradient, "__init__", autograd_only)
    by_autograd = estimator.log_weights(plan, x, torch.arange(5))
    assert torch.allclose(hand_written, by_autograd, atol=1e-4)
    assert not torch.equal(hand_written[:, 0], hand_written[:, 1])  # the check can fail


def autograd_only(self, model):
    self.model, self.reverse = model, None


def test_the_log_weight_is_unchanged_by_where_the_gradient_comes_from():
    """An exact check on the bookkeeping of the cached gradients: with one step the AIS weight
    is log p(x, z) - log r(z|x) at the start, whatever the HMC move does."""
    model = vae("decoder.hidden=[8]", "decoder.activation=gated")
    x = binary_images(2)
    estimator = AnnealedImportanceSampling(num_samples=3, num_steps=1, prior_share=0)
    plan = plan_for(model, estimator, EncoderProposal())
    log_w = estimator.log_weights(plan, x, torch.arange(2))
    posterior = model.posterior(x)
    from vaelik.inference.log_weights import batch_chunks

    chunk = next(batch_chunks(model, x, torch.arange(2), 2, estimator.seed))
    z, log_r = EncoderProposal().sample(
        model, posterior, chunk.noise(model, EncoderProposal(), 0, 3)
    )
    expected = (model.log_joint(x, z) - log_r).double()
    assert torch.allclose(log_w, expected.detach(), atol=1e-9)
    assert math.isfinite(log_w.sum().item())
