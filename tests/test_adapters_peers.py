"""Models from pythae and Pyro, wrapped by vaelik.adapters, measured as their own libraries do.

- a pythae VAE trained by pythae's own trainer: ``vaelik.estimate(from_pythae(model))`` agrees
  with pythae's ``model.get_nll`` within Monte Carlo error, and a vaelik-side model carrying the
  same weights gives the same per-example values on the same random streams;
- a Pyro model and guide: ``vaelik.estimate(from_pyro(...))`` agrees with
  ``pyro.infer.Importance``'s log normalizer within Monte Carlo error;
- objects that are not what an adapter reads are refused with a ModelContractError that says so.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pythae.models import AE, SVAE, VAE, VAMP, AEConfig, SVAEConfig, VAEConfig, VAMPConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from torch import nn

import vaelik
from vaelik.adapters import from_functions, from_pyro, from_pythae
from vaelik.models.contract import ModelContractError

IMAGE = (1, 28, 28)
PIXELS = math.prod(IMAGE)
LATENT = 8
#: importance samples per example for the pythae comparisons
K_PYTHAE = 256
#: independent repeats of each side's estimate in the get_nll comparison
REPLICATES = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: one thread per process is several times faster than several
    threads fighting over two cores (and far faster on a loaded machine). Module-scoped and
    autouse, so it is set before the module's other fixtures and restored after its tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prototype_data(count: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Binary examples ``[count, *shape]``: one of 6 random binary prototypes each, with 5% of
    the pixels flipped, so that a VAE learns a latent structure in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((6, *shape), 0.5), generator=generator)
    data = prototypes[torch.randint(6, (count,), generator=generator)]
    flips = torch.rand(data.shape, generator=generator) < 0.05
    return torch.where(flips, 1 - data, data)


class Encoder(BaseEncoder):
    """x [B, 1, 28, 28] -> q(z|x) = N(embedding, exp(log_covariance)), pythae's way."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(PIXELS, 128), nn.Tanh(), nn.Linear(128, 2 * LATENT)
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.net(x)
        return ModelOutput(embedding=h[:, :LATENT], log_covariance=h[:, LATENT:])


class Decoder(BaseDecoder):
    """z [N, L] -> Bernoulli probabilities [N, 1, 28, 28]; ``net`` gives their logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(LATENT, 128), nn.Tanh(), nn.Linear(128, PIXELS), nn.Unflatten(1, IMAGE)
        )

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))


@pytest.fixture(scope="module")
def pythae_vae(tmp_path_factory) -> tuple[VAE, torch.Tensor]:
    """A pythae VAE (bce) trained 3 epochs by pythae's TrainingPipeline on 256 binary 28 x 28
    images, in eval mode, and 64 held-out images."""
    data = prototype_data(320, IMAGE, seed=0)
    train, test = data[:256], data[256:]
    torch.manual_seed(0)
    model = VAE(
        VAEConfig(input_dim=IMAGE, latent_dim=LATENT, reconstruction_loss="bce"),
        encoder=Encoder(),
        decoder=Decoder(),
    )
    before = [p.detach().clone() for p in model.parameters()]
    output_dir = tmp_path_factory.mktemp("pythae")
    config = BaseTrainerConfig(
        output_dir=str(output_dir),
        num_epochs=3,
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        no_cuda=True,
        seed=0,
    )
    TrainingPipeline(model=model, training_config=config)(train_data=train, eval_data=test)
    assert list(output_dir.glob("*/final_model")), "pythae's trainer did not finish"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    return model.eval(), test


def test_from_pythae_agrees_with_pythae_get_nll(pythae_vae):
    """vaelik's IS estimate of the mean log p(x) of a trained pythae VAE and pythae's own
    ``get_nll`` (K-sample IS with the encoder, one example at a time; despite its name it
    returns the mean log-likelihood) agree within Monte Carlo error."""
    model, x = pythae_vae
    wrapped, ours, theirs = from_pythae(model), [], []
    for replicate in range(REPLICATES):
        estimates = vaelik.estimate(wrapped, x, num_samples=K_PYTHAE, seed=replicate)
        ours.append(estimates.summary["log_px_mean"])
        torch.manual_seed(1000 + replicate)
        with torch.no_grad():
            theirs.append(float(model.get_nll(x, n_samples=K_PYTHAE, batch_size=K_PYTHAE)))
    # Both are the same estimator (K-sample IS with the encoder as proposal, so the same bias
    # of about -var/2 too) on independent draws. A 3-epoch VAE's weights are heavy-tailed
    # (PSIS khat ~0.9 on most examples), where the delta-method stderr (results.mc_stderr)
    # underestimates the error ~1.6 times; so each side's stderr comes from the spread of its
    # replicates. 8 of each and 5 stderrs: a two-sided p of ~1e-4 at 14 degrees of freedom.
    ours_t, theirs_t = (torch.tensor(side, dtype=torch.float64) for side in (ours, theirs))
    stderr = math.sqrt((ours_t.var() + theirs_t.var()) / REPLICATES)
    bound = 5 * stderr
    # the bound must be able to catch a wrong model: below a twentieth of a dropped
    # 0.5 L log(2 pi) per example (7.4 nats for L = 8); measured: 0.11
    assert bound < 0.05 * 0.5 * LATENT * math.log(2 * math.pi)
    difference = float(ours_t.mean() - theirs_t.mean())
    assert abs(difference) < bound, (ours, theirs, bound)


def test_same_weights_in_a_vaelik_model_give_the_same_values(pythae_vae):
    """The pythae VAE's networks given to from_functions (the decoder's logits, vaelik's
    Bernoulli head) give the same per-example log p(x) as from_pythae on the same streams."""
    model, x = pythae_vae

    def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = model.encoder(images)
        return output.embedding, output.log_covariance

    twin = from_functions(encode, model.decoder.net, "bernoulli", LATENT, modules=model)
    pythae_side = vaelik.estimate(from_pythae(model), x, num_samples=K_PYTHAE, seed=3)
    vaelik_side = vaelik.estimate(twin, x, num_samples=K_PYTHAE, seed=3, batch_size=16)
    # Same z (same per-example streams, same encoder), so only float32 rounding differs:
    # pythae's BCE of sigmoid probabilities against vaelik's logit form, each summed over 784
    # pixels of log-weights ~ -200 (a float32 ulp there is 1.5e-5; measured max 1.4e-5).
    torch.testing.assert_close(vaelik_side.log_px, pythae_side.log_px, rtol=0, atol=1e-4)
    # ...and that tolerance is far below what other draws change (Monte Carlo error)
    other_draws = vaelik.estimate(twin, x, num_samples=K_PYTHAE, seed=4)
    assert (other_draws.log_px - pythae_side.log_px).abs().max() > 100 * 1e-4


PYRO_LATENT, PYRO_PIXELS = 2, 16


def pyro_vae() -> tuple:
    """A small Bernoulli VAE in Pyro (model, guide, encoder, decoder) over 16-pixel vectors."""
    decoder = nn.Sequential(nn.Linear(PYRO_LATENT, 32), nn.Tanh(), nn.Linear(32, PYRO_PIXELS))
    encoder = nn.Sequential(nn.Linear(PYRO_PIXELS, 32), nn.Tanh(), nn.Linear(32, 2 * PYRO_LATENT))

    def model(x: torch.Tensor) -> None:
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], PYRO_LATENT)
            z = pyro.sample("z", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            h = encoder(x)
            loc, log_var = h[:, :PYRO_LATENT], h[:, PYRO_LATENT:]
            pyro.sample("z", dist.Normal(loc, torch.exp(0.5 * log_var)).to_event(1))

    return model, guide, encoder, decoder


def test_from_pyro_agrees_with_pyro_importance():
    """A Pyro VAE trained briefly by SVI: the sum over a batch of vaelik's per-example log p(x)
    agrees with pyro.infer.Importance's estimate of log p(x_1, ..., x_B) (one joint weight per
    draw) within their Monte Carlo errors."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    data = prototype_data(200, (PYRO_PIXELS,), seed=1)
    model, guide, encoder, decoder = pyro_vae()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    for _ in range(300):
        svi.step(data)

    x, draws = data[:4], 2000
    ours = vaelik.estimate(
        from_pyro(model, guide, PYRO_LATENT, modules=[encoder, decoder]), x, num_samples=draws
    )
    with torch.no_grad():
        importance = pyro.infer.Importance(model, guide, num_samples=draws).run(x)
        theirs = float(importance.get_log_normalizer())
    # Pyro's standard error by the delta method from its own weights: with normalised weights
    # w_k, var(mean w) / mean(w)^2 = sum w_k^2 - 1/K; vaelik's from its per-example ones.
    # Measured over 20 (vaelik) and 6 (Pyro) repeats, the delta method underestimates both
    # sides' errors ~1.35 times here (one example has PSIS khat ~0.75), so 5 of these stderrs
    # are ~3.7 real ones (two-sided p ~2e-4).
    log_weights = torch.stack([torch.as_tensor(w) for w in importance.log_weights]).double()
    normalised = torch.softmax(log_weights, 0)
    pyro_stderr = math.sqrt(max(float(normalised.pow(2).sum()) - 1 / draws, 0.0))
    assert pyro_stderr > 0
    stderr = math.sqrt(pyro_stderr**2 + float(ours.results.mc_stderr.pow(2).sum()))
    bound = 5 * stderr
    # able to fail: below a quarter of a 0.5 L log(2 pi) (1.8 nats) dropped on one example
    # only, far below a dropped log p(z) (measured bound: 0.31)
    assert bound < 0.5 * PYRO_LATENT * math.log(2 * math.pi) / 4
    difference = float(ours.log_px.sum()) - theirs
    assert abs(difference) < bound, (float(ours.log_px.sum()), theirs, bound)


class PlainVAE(nn.Module):
    """A plain PyTorch VAE with the attribute names of pythae's, but no pythae model."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = nn.Linear(6, 4), nn.Linear(2, 6), 2


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (object, "object is not a pythae VAE-family model"),
        (lambda: nn.Linear(4, 4), "Linear is not a pythae VAE-family model"),
        (PlainVAE, "PlainVAE is not a pythae VAE-family model"),
        (lambda: AE(AEConfig(input_dim=IMAGE, latent_dim=2)), "AE is not a VAE-family"),
        (
            lambda: VAMP(VAMPConfig(input_dim=IMAGE, latent_dim=2, reconstruction_loss="bce")),
            "VAMP has a VampPrior",
        ),
        (
            lambda: SVAE(SVAEConfig(input_dim=IMAGE, latent_dim=2, reconstruction_loss="bce")),
            "SVAE has a uniform prior on the hypersphere",
        ),
    ],
    ids=["object", "linear", "plain_vae", "pythae_ae", "pythae_vamp", "pythae_svae"],
)
def test_from_pythae_refuses_what_it_cannot_measure(make, words):
    with pytest.raises(ModelContractError, match=words):
        from_pythae(make())


def test_from_pythae_refuses_an_encoder_without_log_covariance():
    """A pythae VAE whose encoder gives no log_covariance is refused on the first batch."""

    class MeanOnly(Encoder):
        def forward(self, x: torch.Tensor) -> ModelOutput:
            return ModelOutput(embedding=self.net(x)[:, :LATENT])

    torch.manual_seed(0)
    model = VAE(
        VAEConfig(input_dim=IMAGE, latent_dim=LATENT, reconstruction_loss="bce"),
        encoder=MeanOnly(),
        decoder=Decoder(),
    )
    with pytest.raises(ModelContractError, match="no log_covariance"):
        vaelik.estimate(from_pythae(model), prototype_data(2, IMAGE, seed=2), num_samples=2)


def test_from_pyro_refuses_a_guide_without_the_site_or_of_other_dimensions():
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    model, guide, *_ = pyro_vae()
    x = prototype_data(3, (PYRO_PIXELS,), seed=3)

    def guide_of_w(x: torch.Tensor) -> None:  # its latent site is named w, not z
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], PYRO_LATENT)
            pyro.sample("w", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))

    with pytest.raises(ModelContractError, match="no sample site 'z'.*site="):
        vaelik.estimate(from_pyro(model, guide_of_w, PYRO_LATENT), x, num_samples=2)
    with pytest.raises(ModelContractError, match="no sample site 'w'.*site="):
        vaelik.estimate(from_pyro(model, guide, PYRO_LATENT, site="w"), x, num_samples=2)
    with pytest.raises(ModelContractError, match="latent_dim=3"):
        vaelik.estimate(from_pyro(model, guide, PYRO_LATENT + 1), x, num_samples=2)
