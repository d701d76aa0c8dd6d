"""The config groups compose: every prior x posterior x model x likelihood trains and estimates
log p(x); every proposal x estimator x posterior x model either runs or fails with an
UnsupportedCombinationError naming the choices before any work; two combinations end to end
through ``vaelik-train``."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.distributions import Independent, Normal, StudentT

from conftest import compose_config, estimate_with, plan_for, run_cli, run_cli_failing, user_error
from test_image_data import random_batch
from vaelik.cli import convergence as convergence_cli
from vaelik.cli import train
from vaelik.errors import UnsupportedCombinationError
from vaelik.evaluation import convergence as convergence_module
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.proposals import EncoderProposal, InflatedProposal, StudentTProposal
from vaelik.models.factory import build_model
from vaelik.models.likelihoods import IncompatibleDataError

PRIORS = ["standard_normal", "mixture", "vampprior"]
POSTERIORS = ["diagonal_gaussian", "iaf"]
MODELS = ["vae", "hvae"]
LIKELIHOODS = [
    "bernoulli",
    "categorical",
    "discretized_logistic",
    "discretized_logistic_mixture",
    "gaussian",
]
PROPOSALS = ["encoder", "student_t", "inflated", "defensive", "refined", "prior"]
ESTIMATORS = {
    "importance": ["estimator=importance", "estimator.num_samples=8"],
    "prior": ["estimator=prior", "estimator.num_samples=8"],
    # prior_share: auto, which starts an IAF guide's chains from the prior
    "ais": [
        "estimator=ais",
        "estimator.num_samples=2",
        "estimator.num_steps=3",
        "estimator.leapfrog_steps=2",
    ],
    "ais_from_proposal": [
        "estimator=ais",
        "estimator.num_samples=2",
        "estimator.num_steps=3",
        "estimator.leapfrog_steps=2",
        "estimator.prior_share=0",
    ],
}
BATCH = 2
MNIST_SHAPE = (1, 28, 28)
# 8x8 patches of the embedded photographs: real 8-bit RGB, with a decoder a 16th of 32x32's
SMALL_RGB = ["data=embedded_rgb", "data.source.size=8", "data.shape=[3,8,8]"]


def choices(prior: str, posterior: str, model: str, likelihood: str = "bernoulli") -> list[str]:
    """Overrides for one combination, every network small."""
    overrides = [
        f"prior={prior}",
        f"posterior={posterior}",
        f"model={model}",
        f"likelihood={likelihood}",
        *(["data=embedded_mnist"] if likelihood == "bernoulli" else SMALL_RGB),
        "latent_dim=3",
        "encoder.hidden=[16]",
        "decoder.hidden=[16]",
    ]
    if prior == "vampprior":
        overrides.append("prior.num_pseudo_inputs=4")
    if posterior == "iaf":
        overrides += ["posterior.hidden=[16]", "posterior.context_features=4"]
    if model == "hvae":
        overrides += ["model.lower.hidden=[8]", "model.conditional.hidden=[8]"]
    return overrides


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The networks here are tiny: a second intra-op thread only adds synchronisation (several
    times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def composed(*overrides: str):
    """A composed train config (cached: composing costs more than building a tiny model)."""
    return compose_config("train", list(overrides), output_dir="unused")


@pytest.fixture(scope="module")
def objectives():
    """objective=elbo and objective=iwae with 3 draws each (neither group reads another)."""
    return [
        instantiate(composed(f"objective={name}", "objective.num_samples=3").objective)
        for name in ("elbo", "iwae")
    ]


def combination_error(raised: BaseException | None) -> UnsupportedCombinationError | None:
    """The UnsupportedCombinationError among ``raised`` and its chained causes, if any."""
    while raised is not None:
        if isinstance(raised, UnsupportedCombinationError):
            return raised
        raised = raised.__cause__
    return None


def assert_names(error: object, *names: str) -> None:
    """The message (an exception, or a command's output) names every choice in ``names``."""
    for name in names:
        assert name in str(error), (name, str(error))


def train_one_step(model, x: torch.Tensor, objective, optimizer) -> None:
    """One optimiser step on ``objective``: a finite loss, and every parameter gets a finite
    gradient (no part of the composition is left out of training)."""
    model.zero_grad(set_to_none=True)
    loss = objective(model, x).loss
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss), (objective.name, loss)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, (objective.name, name, "has no gradient")
        assert torch.isfinite(parameter.grad).all(), (objective.name, name)
    optimizer.step()


def assert_finite_estimate(estimator, model, x: torch.Tensor, proposal) -> None:
    result = estimate_with(estimator, model, x, torch.arange(x.shape[0]), proposal)
    assert result.log_px.shape == (x.shape[0],), result.log_px.shape
    assert torch.isfinite(result.log_px).all(), result.log_px


# 1. every prior x posterior x model x likelihood


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("posterior", POSTERIORS)
@pytest.mark.parametrize("prior", PRIORS)
def test_every_prior_posterior_model_and_likelihood_composes(
    prior, posterior, model, likelihood, objectives
):
    torch.manual_seed(0)
    cfg = compose_config("train", choices(prior, posterior, model, likelihood), output_dir="unused")
    datamodule = instantiate(cfg.data)  # loads nothing: only its kind and shape are used
    kind = datamodule.kind
    if likelihood == "gaussian":
        # no data config is continuous: the head refuses the 8-bit patches by name, and
        # composes with every structure on continuous data of the same shape
        assert "continuous" in instantiate(cfg.likelihood).accepts
        with pytest.raises(IncompatibleDataError, match="likelihood=gaussian"):
            build_model(cfg, kind)
        kind = "continuous"
    if (prior, posterior) == ("vampprior", "iaf"):
        # see test_vampprior_with_iaf_fails_at_build for the type build_model raises
        with pytest.raises(Exception) as raised:
            build_model(cfg, kind)
        error = combination_error(raised.value)
        assert error is not None, repr(raised.value)
        assert_names(error, "posterior=iaf", "prior=vampprior")
        return
    vae = build_model(cfg, kind)
    if kind == "continuous":
        x = torch.rand(BATCH, *datamodule.shape)
    else:
        x = random_batch(kind, datamodule.shape, n=BATCH)
    optimizer = instantiate(cfg.optim.optimizer)(vae.parameters())
    for objective in objectives:
        train_one_step(vae, x, objective, optimizer)
    assert_finite_estimate(ImportanceSampling(num_samples=8), vae, x, EncoderProposal())


# 2. the combinations that must not compose, and the neighbours that must


@pytest.mark.parametrize("model", MODELS)
def test_vampprior_with_iaf_fails_at_build(model):
    """The VampPrior mixes q(z|u) over pseudo-inputs, which needs a diagonal-Gaussian top layer."""
    cfg = composed(*choices("vampprior", "iaf", model))
    with pytest.raises(Exception) as raised:
        build_model(cfg, "binary")
    error = combination_error(raised.value)
    assert error is not None, repr(raised.value)
    assert_names(error, "posterior=iaf", "prior=vampprior", "posterior=diagonal_gaussian")
    # build_model's callers (and its docstring) expect the UnsupportedCombinationError itself
    assert isinstance(raised.value, UnsupportedCombinationError), (
        f"build_model raised {type(raised.value).__name__}, not UnsupportedCombinationError: "
        "hydra.utils.instantiate wraps the error VAE.__init__ raises"
    )


# (posterior, estimator, proposal) -> names the message must carry besides proposal= and
# posterior=; the same for model=vae and model=hvae (whose guide's top layer is the posterior).
# estimator=prior draws from its own fixed prior proposal, so it runs whatever proposal is set.
EXPECTED_FAILURES = {
    ("iaf", "importance", "defensive"): ["defensive mixture", "use proposal=prior"],
    ("iaf", "importance", "refined"): ["one diagonal Gaussian"],
    ("iaf", "ais_from_proposal", "encoder"): [
        "AIS",
        "use proposal=prior or AIS's prior_share=1",
    ],
    ("iaf", "ais_from_proposal", "student_t"): ["AIS", "use proposal=prior"],
    ("iaf", "ais_from_proposal", "inflated"): ["AIS", "use proposal=prior"],
    ("iaf", "ais_from_proposal", "defensive"): ["defensive mixture", "use proposal=prior"],
    ("iaf", "ais_from_proposal", "refined"): ["AIS", "use proposal=prior"],
}


def expected_failure(posterior: str, model: str, estimator: str, proposal: str) -> list | None:
    """What the error of a refused combination names, or None where it runs."""
    if (posterior, estimator, proposal) in EXPECTED_FAILURES:
        return [f"posterior={posterior}", *EXPECTED_FAILURES[posterior, estimator, proposal]]
    # AIS's auto start is the prior for an IAF guide, the proposal otherwise
    uses_proposal = estimator != "prior" and (estimator != "ais" or posterior != "iaf")
    if proposal == "refined" and model == "hvae" and uses_proposal:
        return ["model=hvae", "one diagonal Gaussian"]
    return None


def count_forward_calls(*modules) -> list[str]:
    """A list that records every forward pass of ``modules`` from now on."""
    calls: list[str] = []
    for module in modules:
        module.register_forward_hook(lambda m, args, out: calls.append(type(m).__name__))
    return calls


# 3. every proposal x estimator x posterior x model


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("proposal", PROPOSALS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("posterior", POSTERIORS)
def test_every_proposal_and_estimator_runs_or_fails_before_any_work(
    posterior, model, proposal, estimator
):
    """prior=mixture: its noise (a component choice, then L normals) is not the latent's size,
    which every proposal that draws from the prior must lay out right."""
    torch.manual_seed(0)
    vae = build_model(composed(*choices("mixture", posterior, model)), "binary")
    chosen = instantiate(composed(f"proposal={proposal}").proposal)
    runner = instantiate(composed(*ESTIMATORS[estimator]).estimator)
    x = random_batch("binary", MNIST_SHAPE, n=BATCH)
    index = torch.arange(BATCH)
    expected = expected_failure(posterior, model, estimator, proposal)
    if expected is None:
        try:
            plan_for(vae, runner, chosen)
        except UnsupportedCombinationError as error:
            pytest.fail(
                f"estimator={estimator} proposal={proposal} posterior={posterior} model={model} "
                f"should run, but was refused: {error}"
            )
        assert_finite_estimate(runner, vae, x, chosen)
        return
    calls = count_forward_calls(vae.guide, vae.decoder)
    with pytest.raises(UnsupportedCombinationError) as checked:
        plan_for(vae, runner, chosen)
    with pytest.raises(UnsupportedCombinationError) as estimated:
        estimate_with(runner, vae, x, index, chosen)
    assert calls == [], f"the guide or decoder ran before the error: {calls}"
    for error in (checked.value, estimated.value):
        assert_names(error, f"proposal={proposal}", *expected)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("posterior", POSTERIORS)
def test_base_replacing_proposals_push_the_new_base_through_the_guide(posterior, model):
    """student_t and inflated replace the guide's Gaussian base and keep the rest (IAF steps, the
    lower layer of model=hvae): from a base the encoder would also draw they give the encoder's
    latent, and log r(z|x) - log q(z|x) is the difference of the two base densities alone."""
    torch.manual_seed(0)
    vae = build_model(composed(*choices("standard_normal", posterior, model)), "binary")
    x = random_batch("binary", MNIST_SHAPE, n=BATCH)
    encoder, index = EncoderProposal(), torch.arange(BATCH)
    with torch.no_grad():
        q = vae.posterior(x)
        base_dims = q.base_dims
        eps = torch.randn(8, BATCH, q.noise_dims)
        base = q.loc + q.scale * eps[..., :base_dims]
        z_q, log_q = encoder.sample(vae, q, eps)
        gaussian = Independent(Normal(q.loc, q.scale), 1)

        # Student-t noise is the guide's normals, then chi-square values: chi2 = nu gives t = eps
        student = StudentTProposal(df=5.0)
        chi2 = torch.full((8, BATCH, base_dims), student.df)
        z_t, log_t = student.sample(vae, q, torch.cat([eps, chi2], dim=-1))
        t = Independent(StudentT(student.df, q.loc, q.scale), 1)
        torch.testing.assert_close(z_t, z_q)
        torch.testing.assert_close(log_t - log_q, t.log_prob(base) - gaussian.log_prob(base))

        # the inflated base is loc + c scale eps: the encoder's base at noise c eps
        inflated = InflatedProposal(scale=1.5)
        z_c, log_c = inflated.sample(vae, q, eps)
        wide_eps = torch.cat([1.5 * eps[..., :base_dims], eps[..., base_dims:]], dim=-1)
        z_q, log_q = encoder.sample(vae, q, wide_eps)
        wide_base = q.loc + 1.5 * q.scale * eps[..., :base_dims]
        wide = Independent(Normal(q.loc, 1.5 * q.scale), 1)
        torch.testing.assert_close(z_c, z_q)
        torch.testing.assert_close(
            log_c - log_q, wide.log_prob(wide_base) - gaussian.log_prob(wide_base)
        )

    # and with c = 1 the inflated proposal is the encoder, estimate for estimate
    estimator = ImportanceSampling(num_samples=8)
    torch.testing.assert_close(
        plan_for(vae, estimator, InflatedProposal(scale=1.0)).log_weights(x, index),
        plan_for(vae, estimator, encoder).log_weights(x, index),
    )


# 4. end to end through vaelik-train

TINY_RUN = [
    "debug=fast",
    "latent_dim=3",
    "encoder.hidden=[16]",
    "decoder.hidden=[16]",
    "data.source.val_size=40",
    "data.source.test_size=20",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "+trainer.num_sanity_val_steps=0",
    "data.batch_size=20",
    "data.eval_batch_size=20",
    "callbacks.log_likelihood.num_examples=8",
    "callbacks.log_likelihood.convergence_ks=null",
    "callbacks.image_grid.num_samples=4",
]


def test_hvae_with_vampprior_and_iwae_trains_through_the_cli(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_cli(
        train.main,
        [
            "model=hvae",
            "prior=vampprior",
            "objective=iwae",
            *TINY_RUN,
            "prior.num_pseudo_inputs=4",
            "model.lower.hidden=[8]",
            "model.conditional.hidden=[8]",
            "objective.num_samples=3",
            f"hydra.run.dir={run_dir}",
        ],
        monkeypatch,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train/loss", "val/elbo", "val/log_px", "val/bpd"):
        assert math.isfinite(metrics[key]), key
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.model._target_ == "vaelik.models.hierarchical.HierarchicalVAE"
    assert config.model.prior._target_ == "vaelik.models.priors.VampPrior"
    assert config.objective._target_ == "vaelik.inference.objectives.Iwae"
    assert (run_dir / "checkpoints/last.ckpt").is_file()


def test_defensive_proposal_with_iaf_fails_before_training(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    output = run_cli_failing(
        train.main,
        [
            "posterior=iaf",
            "proposal=defensive",
            *TINY_RUN,
            "posterior.hidden=[16]",
            "posterior.context_features=4",
            f"hydra.run.dir={run_dir}",
        ],
        monkeypatch,
        capsys,
    )
    assert_names(user_error(output), "proposal=defensive", "posterior=iaf")
    assert not (run_dir / "checkpoints").exists()  # failed before any training
    assert not (run_dir / "metrics.json").exists()


def test_vampprior_refuses_an_encoder_with_batch_norm():
    """Pseudo-inputs through batch norm would train one prior and evaluate another."""
    cfg = compose_config(
        "train",
        ["prior=vampprior", "prior.num_pseudo_inputs=4", "encoder=resnet", "latent_dim=3"],
        output_dir="unused",
    )
    with pytest.raises(UnsupportedCombinationError, match="prior=vampprior.*batch norm"):
        build_model(cfg, "binary")


def test_convergence_checks_every_pair_before_estimating(tmp_path, monkeypatch, capsys):
    """An IAF checkpoint with proposals=[encoder,defensive]: vaelik-convergence refuses before
    the encoder rows run (hours at K = 5000), not after them."""
    run_dir = tmp_path / "run"
    run_cli(
        train.main,
        [
            "posterior=iaf",
            *TINY_RUN,
            "posterior.hidden=[16]",
            "posterior.context_features=4",
            f"hydra.run.dir={run_dir}",
        ],
        monkeypatch,
    )
    calls = []
    monkeypatch.setattr(
        convergence_module, "plan_rows", lambda *args, **kwargs: calls.append(args) or []
    )
    output = run_cli_failing(
        convergence_cli.main,
        [
            f"ckpt_path={run_dir}/checkpoints/last.ckpt",
            "proposals=[encoder,defensive]",
            "ks=[1,2]",
            "num_examples=2",
            f"hydra.run.dir={tmp_path}/convergence",
        ],
        monkeypatch,
        capsys,
    )
    assert_names(output, "proposal=defensive", "posterior=iaf")
    assert calls == []


@pytest.mark.parametrize("network", ["conv", "resnet"])
def test_hvae_with_convolutional_networks_trains_and_estimates(network):
    """model=hvae reads x through the encoder group for both layers and decodes [z2, z1]
    through the decoder group: convolutional networks compose as MLPs do."""
    cfg = compose_config(
        "train",
        [
            "model=hvae",
            f"encoder={network}",
            f"decoder={network}",
            "encoder.channels=[8,8]",
            "decoder.channels=[8,8]",
            "latent_dim=3",
            "model.lower.hidden=[8]",
            "model.conditional.hidden=[8]",
        ],
        output_dir="unused",
    )
    torch.manual_seed(0)
    model = build_model(cfg, "binary")
    x = random_batch("binary", MNIST_SHAPE, n=BATCH)
    optimizer = instantiate(cfg.optim.optimizer)(model.parameters())
    train_one_step(model, x, instantiate(cfg.objective), optimizer)
    assert_finite_estimate(ImportanceSampling(num_samples=8), model.eval(), x, EncoderProposal())
