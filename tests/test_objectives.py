"""Training objectives: the KL weight schedule, beta, free bits, the IWAE bound, bad values."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from models import all_binary_images, tiny_bernoulli_vae
from vaelik.cli import train
from vaelik.inference.diagnostics import log_mean_exp
from vaelik.inference.objectives import Elbo, Iwae


def on_same_noise(objective, model, x, seed: int = 3):
    torch.manual_seed(seed)
    return objective(model, x)


def test_warm_up_is_linear_from_zero_to_beta():
    objective = Elbo(beta=0.5, kl_warmup_epochs=4)
    weights = [objective.kl_weight(e) for e in (0, 1, 2.5, 4, 10)]
    assert weights == pytest.approx([0.0, 0.125, 0.3125, 0.5, 0.5])
    assert Elbo().kl_weight(0) == 1.0


def test_beta_and_warm_up_change_the_loss_not_the_reported_elbo():
    model = tiny_bernoulli_vae(latent_dim=2)
    x = all_binary_images()[:16]
    plain = on_same_noise(Elbo(), model, x)
    half = on_same_noise(Elbo(beta=0.5), model, x)
    torch.testing.assert_close(half.elbo, plain.elbo)
    torch.testing.assert_close(plain.loss - half.loss, 0.5 * plain.kl.mean())
    warming = on_same_noise(Elbo(kl_warmup_epochs=10), model, x)  # epoch 0: weight 0
    torch.testing.assert_close(warming.loss, -plain.log_px_z.mean())
    assert warming.kl_weight == 0.0


def test_free_bits_clamp_the_batch_mean_kl():
    model = tiny_bernoulli_vae(latent_dim=2)
    x = all_binary_images()[:16]
    plain = on_same_noise(Elbo(), model, x)
    kl = plain.kl.mean().item()
    above = on_same_noise(Elbo(free_bits=kl + 3.0), model, x)
    torch.testing.assert_close(above.loss, plain.loss + 3.0)
    below = on_same_noise(Elbo(free_bits=kl / 2), model, x)  # inactive below the KL
    torch.testing.assert_close(below.loss, plain.loss)


def test_iwae_bound_is_the_log_mean_of_the_weights_of_its_draws():
    model = tiny_bernoulli_vae(latent_dim=2)
    x = all_binary_images()[:8]
    objective = Iwae(num_samples=7)
    torch.manual_seed(4)
    _, terms = objective.draw(model, x)
    torch.manual_seed(4)
    result = objective(model, x)
    expected = log_mean_exp(terms.log_weights())
    torch.testing.assert_close(result.bound, expected.to(result.bound.dtype))
    torch.testing.assert_close(result.loss, -expected.mean().to(result.loss.dtype))
    # the plain ELBO it reports is the mean log-weight of the same draws, below the bound
    torch.testing.assert_close(result.elbo, terms.log_weights().mean(0))
    assert torch.all(result.bound >= result.elbo - 1e-6)


def test_iwae_gradients_reach_encoder_and_decoder():
    model = tiny_bernoulli_vae(latent_dim=2).train()
    Iwae(num_samples=5)(model, all_binary_images()[:8]).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Elbo(num_samples=0), "num_samples"),
        (lambda: Iwae(num_samples=-2), "num_samples"),
        (lambda: Elbo(beta=-1), "beta"),
        (lambda: Elbo(kl_warmup_epochs=-1), "kl_warmup_epochs"),
        (lambda: Elbo(free_bits=-0.5), "free_bits"),
        (lambda: Iwae(free_bits=1.0), "free_bits is defined for objective=elbo"),
    ],
)
def test_bad_values_fail_clearly(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_warm_up_runs_step_by_step_in_training(tmp_path, monkeypatch):
    """debug=fast: 2 epochs of 5 batches; at the last step (epoch 1, batch 4) the weight of a
    2-epoch warm-up is (1 + 4/5) / 2 = 0.9; val/elbo is still the plain ELBO."""
    run_cli(
        train.main,
        [
            "debug=fast",
            "objective.kl_warmup_epochs=2",
            "logger=none",
            "callbacks.log_likelihood.convergence_ks=null",
            f"hydra.run.dir={tmp_path}",
        ],
        monkeypatch,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train/kl_weight"] == pytest.approx(0.9)
    assert metrics["val/elbo"] == pytest.approx(metrics["val/log_px_z"] - metrics["val/kl"])
    assert metrics["val/bound"] > metrics["val/elbo"]  # the KL is weighted below 1
