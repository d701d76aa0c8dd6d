"""``vaelik.resolve``: every setting decided once, a digest of what determines the values only,
every automatic choice reported, and what the user asked for never silently replaced."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import vaelik
from models import all_binary_images, tiny_bernoulli_vae
from vaelik.errors import ConfigError, UnsupportedCombinationError
from vaelik.evaluation.estimate import placed_on
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.plan import PLAN_FORMAT, resolve
from vaelik.inference.quadrature import Quadrature


@pytest.fixture(scope="module")
def two_d():
    """A model with a 2-D latent, where AIS's automatic rule starts the chains from the prior."""
    return tiny_bernoulli_vae(latent_dim=2, seed=1)


@pytest.fixture(scope="module")
def three_d():
    return tiny_bernoulli_vae(latent_dim=3, seed=2)


def test_the_digest_is_the_sha256_of_the_documented_canonical_values(three_d):
    """The values and their canonical JSON written out by hand: the digest is their sha256,
    so it depends on nothing else (no vaelik version, no path, no machine)."""
    plan = resolve(three_d, "importance", num_samples=500, seed=3)
    expected = {
        "format": PLAN_FORMAT,
        "estimator": "importance",
        "settings": {"chunk_size": None},
        "num_samples": 500,
        "proposal": {"name": "encoder", "settings": {}},
        "seed": 3,
        "dtype": "float32",
        "block": 32,
    }
    assert plan.values() == expected
    text = (
        '{"block":32,"dtype":"float32","estimator":"importance","format":2,"num_samples":500,'
        '"proposal":{"name":"encoder","settings":{}},"seed":3,"settings":{"chunk_size":null}}'
    )
    assert plan.digest == hashlib.sha256(text.encode()).hexdigest()


def test_the_digest_is_equal_in_another_process(three_d):
    plan = resolve(three_d, "ais", num_samples=7, num_steps=20)
    program = (
        "import sys; sys.path.insert(0, 'tests'); import vaelik; from models import "
        "tiny_bernoulli_vae; m = tiny_bernoulli_vae(latent_dim=3, seed=9); "
        "print(vaelik.resolve(m, 'ais', num_samples=7, num_steps=20).digest)"
    )
    other = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == plan.digest  # other weights: the digest is the plan's only


IMPORTANCE = {"estimator": "importance", "num_samples": 500, "seed": 3}
AIS = {"estimator": "ais", "num_samples": 8, "num_steps": 100, "seed": 3}


@pytest.mark.parametrize(
    ("base", "change"),
    [
        (IMPORTANCE, {"num_samples": 501}),
        (IMPORTANCE, {"seed": 4}),
        (IMPORTANCE, {"estimator": "ais"}),
        (IMPORTANCE, {"estimator": "prior"}),
        (IMPORTANCE, {"proposal": "student_t"}),
        (IMPORTANCE, {"proposal": "inflated"}),
        (AIS, {"num_steps": 101}),
        (AIS, {"step_size": 0.07}),
        (AIS, {"leapfrog_steps": 3}),
        (AIS, {"schedule": "linear"}),
        (AIS, {"prior_share": 0.5}),
        (AIS, {"chunk_size": 16}),
        (AIS, {"block": 64}),
    ],
    ids=lambda value: "-".join(f"{k}={v}" for k, v in value.items()),
)
def test_every_value_setting_changes_the_digest(three_d, base, change):
    assert resolve(three_d, **{**base, **change}).digest != resolve(three_d, **base).digest


def test_a_proposal_s_settings_change_the_digest(three_d):
    digests = {
        resolve(three_d, proposal=vaelik.make_proposal("student_t", df=df)).digest for df in (3, 5)
    }
    assert len(digests) == 2


def test_execution_settings_and_report_names_leave_the_digest_alone(three_d):
    plan = resolve(three_d, "ais", num_samples=8)
    same = [
        resolve(three_d, "ais", num_samples=8, batch_size=3, device="cpu"),
        resolve(three_d, "ais", num_samples=8, name="my ais"),
        resolve(three_d, vaelik.make_estimator("ais", num_samples=8)),
    ]
    assert {other.digest for other in same} == {plan.digest}
    assert same[0].execution.batch_size == 3


def test_the_model_dtype_is_a_value(three_d):
    double = tiny_bernoulli_vae(latent_dim=3, seed=2).double()
    assert resolve(double).values()["dtype"] == "float64"
    assert resolve(double).digest != resolve(three_d).digest


def test_ais_s_automatic_start_is_reported_and_gives_the_digest_of_the_same_explicit_start(two_d):
    automatic = resolve(two_d, "ais", num_samples=4)
    assert automatic.proposal.name == "prior"
    (choice,) = automatic.choices
    assert (choice.setting, choice.value) == ("ais.start", "prior")
    assert "latents of 2 <= 2 dimensions" in choice.reason
    assert "chosen: ais.start = prior" in automatic.describe()
    explicit = resolve(two_d, "ais", num_samples=4, prior_share=1)
    assert explicit.choices == () and explicit.digest == automatic.digest
    assert automatic.values()["settings"]["prior_share"] == 1.0


def test_a_proposal_asked_for_is_never_replaced_silently(two_d):
    with pytest.raises(UnsupportedCombinationError) as refused:
        resolve(two_d, "ais", "student_t")
    message = str(refused.value)
    assert "proposal=student_t" in message and "prior_share=0" in message
    assert "prior_share=auto" in message and "\n" not in message
    # the rule asked for by name, or accepted: the choice is made and reported
    for plan in (
        resolve(two_d, "ais", "student_t", prior_share="auto"),
        resolve(two_d, "ais", "student_t", accept_rules=True),
    ):
        assert plan.proposal.name == "prior" and plan.requested.name == "student_t"
        assert plan.choices[0].value == "prior"
        assert plan.to_dict()["requested_proposal"]["name"] == "student_t"
    assert resolve(two_d, "ais", "student_t", prior_share=0).proposal.name == "student_t"
    # the default proposal may be replaced: nobody asked for it
    assert resolve(two_d, "ais").proposal.name == "prior"


@pytest.mark.parametrize("estimator", ["prior", "quadrature"])
def test_an_estimator_with_its_own_draws_refuses_a_proposal_asked_for(two_d, estimator):
    with pytest.raises(UnsupportedCombinationError, match="proposal=inflated would not be used"):
        resolve(two_d, estimator, "inflated")
    accepted = resolve(two_d, estimator, "inflated", accept_rules=True)
    assert accepted.choices[0].setting == "proposal"
    assert resolve(two_d, estimator).choices == ()


def test_quadrature_s_k_is_the_grid_and_a_third_dimension_is_refused_before_any_work(
    two_d, three_d
):
    assert resolve(two_d, "quadrature", points=10).num_samples == 100
    with pytest.raises(UnsupportedCombinationError, match="this model has 3"):
        resolve(three_d, "quadrature")


def test_unknown_names_and_settings_name_the_alternatives(three_d):
    with pytest.raises(ConfigError, match="importance") as error:
        resolve(three_d, "bogus")
    assert "bogus" in str(error.value)
    with pytest.raises(ConfigError, match="refined"):
        resolve(three_d, "importance", "bogus")
    with pytest.raises(ConfigError, match="num_steps"):
        resolve(three_d, "importance", num_steps=3)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        resolve(three_d, batch_size=0)


def test_estimate_runs_a_plan_and_reports_it(three_d, tmp_path):
    x = all_binary_images()[:12]
    plan = resolve(three_d, "importance", "student_t", num_samples=20, seed=5)
    by_plan = vaelik.estimate(three_d, x, plan=plan, batch_size=5)
    by_names = vaelik.estimate(three_d, x, proposal="student_t", num_samples=20, seed=5)
    assert torch.equal(by_plan.log_px, by_names.log_px)
    assert by_plan.plan is not None and by_plan.plan.digest == plan.digest
    assert by_plan.summary["plan_digest"] == plan.digest == by_names.summary["plan_digest"]
    by_plan.write(tmp_path)
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["plan"]["digest"] == plan.digest
    assert stored["plan"]["values"] == plan.values()
    assert stored["plan"]["execution"]["batch_size"] == 5


def test_a_plan_and_the_settings_it_decides_are_not_given_together(three_d, two_d):
    x = all_binary_images()[:4]
    plan = resolve(three_d)
    with pytest.raises(ConfigError, match="num_samples is the plan's to decide"):
        vaelik.estimate(three_d, x, plan=plan, num_samples=5)
    with pytest.raises(ConfigError, match="resolved for another model"):
        vaelik.estimate(two_d, x, plan=plan)


def test_a_plan_with_another_k_is_resolved_afresh(two_d):
    plan = resolve(two_d, "ais", "encoder", prior_share=0.5, num_samples=4)
    assert plan.proposal.name == "prior (2 of 4 chains) + encoder"
    assert plan.with_num_samples(8).proposal.name == "prior (4 of 8 chains) + encoder"
    # a plan that accepted the rules keeps accepting them at another K
    accepting = resolve(two_d, "ais", "encoder", accept_rules=True, num_samples=4)
    assert accepting.with_num_samples(8).proposal.name == "prior"


class Placed:
    """A stand-in model on ``cuda:0`` that records where it is moved."""

    def __init__(self) -> None:
        self.moves: list[str] = []
        self.device = torch.device("cuda", 0)

    def parameters(self):
        return iter([SimpleNamespace(device=self.device)])

    def to(self, device):
        self.moves.append(str(device))
        self.device = torch.device(device)
        return self


def test_device_moves_the_model_for_the_call_and_back_after_it(three_d):
    model = Placed()
    with placed_on(model, torch.device("cpu")):
        assert model.moves == ["cpu"]
    assert model.moves == ["cpu", "cuda:0"]
    with placed_on(model, torch.device("cuda")):  # this process's CUDA device: no move
        pass
    assert model.moves == ["cpu", "cuda:0"]
    # a plan made without a device computes where the model is when it runs
    assert resolve(three_d).execution.device is None
    assert resolve(three_d, device="cpu").execution.device == torch.device("cpu")


def test_defaulted_settings_are_values_too(three_d, two_d):
    """An estimator built with its defaults and one built by name with the same settings are the
    same plan; a setting written as 1 or True is one value."""
    assert resolve(three_d, AnnealedImportanceSampling(num_samples=8)).digest == (
        resolve(three_d, "ais", num_samples=8).digest
    )
    assert resolve(two_d, Quadrature()).digest == resolve(two_d, "quadrature").digest
    assert resolve(two_d, Quadrature()).values()["settings"]["bound"] == Quadrature().bound
    assert resolve(three_d, "ais", adapt_step_size=1).digest == resolve(three_d, "ais").digest
    # an infinite setting is digested (never flag by the grid check), not an error
    assert len(resolve(two_d, "quadrature", tolerance=math.inf).digest) == 64


def test_ais_with_its_own_proposal_still_applies_its_start_rule(three_d):
    ais = AnnealedImportanceSampling(
        num_samples=4, prior_share=0.5, proposal=vaelik.make_proposal("student_t")
    )
    assert resolve(three_d, ais).proposal.name == "prior (2 of 4 chains) + student_t"


def test_a_proposal_a_plan_cannot_record_is_named(three_d):
    class Learned(vaelik.make_proposal("encoder").__class__):
        name = "learned"

        def __init__(self) -> None:
            self.shift = torch.zeros(3)

    with pytest.raises(ConfigError, match="'shift' of type Tensor"):
        resolve(three_d, proposal=Learned())


def test_bdmc_refuses_or_accepts_the_automatic_start_as_asked(two_d):
    with pytest.raises(UnsupportedCombinationError, match="prior_share=0"):
        vaelik.bdmc(two_d, num_examples=2, num_steps=[2], num_samples=2, proposal="student_t")
    result = vaelik.bdmc(
        two_d,
        num_examples=2,
        num_steps=[2],
        num_samples=2,
        proposal="student_t",
        accept_rules=True,
    )
    assert result.rows[0]["start"] == "prior"
