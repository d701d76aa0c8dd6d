"""An example's value is a pure function of (weights, plan, seed, index), bit for bit: the
batch it comes in, the other examples estimated with it and their order change nothing, for
every estimator, on an MLP and on a convolutional VAE (:mod:`vaelik.inference.blocks`)."""

from __future__ import annotations

import pytest
import torch

import vaelik
from conftest import compose_config
from vaelik.errors import ConfigError
from vaelik.models.factory import build_model

NUM_EXAMPLES = 21

#: every estimator, small enough to run in seconds (AIS from the prior, its automatic start for
#: two latent dimensions, and from the encoder)
ESTIMATORS = {
    "importance": ("importance", {"num_samples": 8}, None),
    "prior": ("prior", {"num_samples": 8}, None),
    "quadrature": ("quadrature", {"points": 12}, None),
    "ais from the prior": ("ais", {"num_samples": 2, "num_steps": 4, "leapfrog_steps": 2}, None),
    "ais from the encoder": (
        "ais",
        {"num_samples": 2, "num_steps": 4, "leapfrog_steps": 2, "prior_share": 0.0},
        "encoder",
    ),
    "importance, refined proposal": ("importance", {"num_samples": 4}, "refined"),
}


@pytest.fixture(scope="module", params=["mlp", "conv"])
def model_and_data(request):
    arch = request.param
    overrides = [f"encoder={arch}", f"decoder={arch}", "latent_dim=2", "seed=3"]
    if arch == "conv":
        overrides += ["encoder.channels=[4,8]", "decoder.channels=[8,4]"]
    else:
        overrides += ["encoder.hidden=[32]", "decoder.hidden=[32]"]
    torch.manual_seed(3)
    model = build_model(compose_config("train", overrides), "binary")
    x = (torch.rand(NUM_EXAMPLES, 1, 28, 28) < 0.3).float()
    return model, x


def planned(model, name, settings, proposal):
    estimator = vaelik.make_estimator(name, **settings)
    if proposal == "refined":
        proposal = vaelik.make_proposal("refined", steps=2)
    return vaelik.resolve(model, estimator, proposal, accept_rules=True)


@pytest.mark.parametrize("name, settings, proposal", ESTIMATORS.values(), ids=list(ESTIMATORS))
def test_values_do_not_depend_on_the_batch_or_the_subset(model_and_data, name, settings, proposal):
    model, x = model_and_data
    plan = planned(model, name, settings, proposal)
    whole = vaelik.estimate(model, x, plan=plan, batch_size=NUM_EXAMPLES).results
    for batch_size in (1, 5, 16, 40):
        again = vaelik.estimate(model, x, plan=plan, batch_size=batch_size).results
        for column in ("log_px", "ess", "khat", "grid_error"):
            assert torch.equal(
                getattr(again, column).nan_to_num(7.0), getattr(whole, column).nan_to_num(7.0)
            ), (batch_size, column)
    # other subsets, in another order: every example at another place in its block
    for chosen in (
        [17, 2, 9],
        list(range(NUM_EXAMPLES - 1, 0, -2)),
        [i for i in range(21) if i % 3],
    ):
        subset = vaelik.estimate(model, x, plan=plan, examples=chosen, batch_size=2).results
        assert subset.index.tolist() == sorted(chosen)
        assert torch.equal(subset.log_px, whole.log_px[sorted(chosen)]), chosen
        assert torch.equal(subset.ess, whole.ess[sorted(chosen)]), chosen


def test_the_block_is_a_value_of_the_plan(model_and_data):
    model, _ = model_and_data
    default = vaelik.resolve(model, "importance", num_samples=4)
    other = vaelik.resolve(model, "importance", num_samples=4, block=64)
    assert default.block == 32 and default.values()["block"] == 32
    assert other.digest != default.digest and "blocks of 64" in other.describe()
    # chunk_size shapes the decoder's calls: a value too
    assert vaelik.resolve(model, "importance", chunk_size=64).digest != default.digest
    for bad in (0, -1, 2.5, True, 20, 48):
        with pytest.raises(ConfigError, match="block must be 1 or a multiple of 32"):
            vaelik.resolve(model, "importance", block=bad)


def test_a_batch_is_rounded_up_to_whole_blocks(model_and_data):
    """A batch of 1 would fill 31 of every 32 rows with copies: batches are whole blocks."""
    model, x = model_and_data
    plan = vaelik.resolve(model, "importance", num_samples=2)
    calls = []
    original = plan.estimator.log_weights

    def counting(plan_, xb, index):
        calls.append(xb.shape[0])
        return original(plan_, xb, index)

    object.__setattr__(plan.estimator, "log_weights", counting)
    vaelik.estimate(model, x, plan=plan, batch_size=1)
    assert calls == [32]  # 21 examples: one block, filled up
