"""The public API: vaelik.estimate / convergence / bdmc on a user's own model, immutable
estimators resolved once, one source of defaults, the model contract and its errors."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaelik
from conftest import plan_for, run_cli_failing, user_error
from models import linear_gaussian_log_px, orthogonal_columns, tiny_bernoulli_vae
from vaelik.adapters import from_functions
from vaelik.cli import bdmc as bdmc_cli
from vaelik.cli import evaluate as evaluate_cli
from vaelik.cli import results as results_cli
from vaelik.errors import ConfigError, SettingError
from vaelik.inference.ais import AnnealedImportanceSampling
from vaelik.inference.estimators import ImportanceSampling
from vaelik.inference.proposals import EncoderProposal
from vaelik.models.contract import MeasurableModel, ModelContractError
from vaelik.models.trusted_config import check_trusted_config
from vaelik.options import option_config, option_defaults, option_names

SRC = Path(vaelik.__file__).parent


class UserVAE(nn.Module):
    """A VAE as a user writes it: an MLP encoder giving (mean, log variance), an MLP decoder
    giving Bernoulli logits for flat binary vectors."""

    def __init__(self, data_dim: int = 16, hidden: int = 32, latent_dim: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, data_dim)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


@pytest.fixture(scope="module")
def user_model():
    """The user VAE fitted for a few hundred steps on binary vectors, and 12 test vectors."""
    torch.manual_seed(0)
    net = UserVAE()
    data = (torch.rand(256, 16) < torch.linspace(0.1, 0.9, 16)).float()
    model = from_functions(net.encode, net.decode, "bernoulli", latent_dim=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        mean, log_var = net.encode(data)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        logits = net.decode(z)
        nll = nn.functional.binary_cross_entropy_with_logits(logits, data, reduction="sum")
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum()
        optimizer.zero_grad()
        ((nll + kl) / len(data)).backward()
        optimizer.step()
    return model, data[:12]


@pytest.mark.slow
def test_a_user_vae_is_measured_by_is_ais_and_quadrature(user_model):
    model, x = user_model
    assert isinstance(model, MeasurableModel)
    exact = vaelik.estimate(model, x, estimator="quadrature")
    assert exact.summary["estimator"] == "quadrature" and exact.summary["num_samples"] == 400**2
    assert exact.summary["flagged_share"] == 0  # the grid converged on every example
    sampled = vaelik.estimate(model, x, num_samples=2000)
    annealed = vaelik.estimate(model, x, estimator="ais", num_samples=8)
    assert annealed.summary["proposal"] == "prior"  # a 2-D latent: AIS starts from the prior
    for estimates, tolerance in ((sampled, 0.05), (annealed, 0.1)):
        error = estimates.log_px - exact.log_px
        assert error.abs().max() < tolerance, error
    # the per-example Monte Carlo standard error says how far IS may be from the exact value
    stderr = sampled.results.mc_stderr
    assert torch.all(stderr > 0) and torch.all(stderr < 0.05)
    assert ((sampled.log_px - exact.log_px).abs() < 5 * stderr + 1e-3).all()
    assert torch.isnan(exact.results.mc_stderr).all()


def test_a_linear_gaussian_user_model_gives_its_closed_form():
    """x = W z + b + noise eps: log p(x) = log N(x; b, W W^T + noise^2 I), exactly."""
    gen = torch.Generator().manual_seed(1)
    weight, bias, noise = orthogonal_columns(6, 3), torch.randn(6, generator=gen) * 0.3, 0.7
    z = torch.randn(40, 3, generator=gen)
    x = z @ weight.T + bias + noise * torch.randn(40, 6, generator=gen)
    exact = linear_gaussian_log_px(weight, bias, noise, x.reshape(40, 1, 1, 6))
    # an encoder that is close to the exact posterior but not equal to it
    precision = torch.eye(3) + weight.T @ weight / noise**2
    covariance = torch.linalg.inv(precision)

    def encode(x):
        mean = (x - bias) @ weight @ covariance.T / noise**2
        return 0.9 * mean, torch.log(1.3 * covariance.diagonal()).expand_as(mean)

    def decode(z):  # Gaussian head: D means, then D log-scales
        return torch.cat([z @ weight.T + bias, torch.full((len(z), 6), math.log(noise))], -1)

    model = from_functions(encode, decode, "gaussian", latent_dim=3)
    estimates = vaelik.estimate(model, x, num_samples=500, batch_size=16)
    error = estimates.log_px - exact
    stderr = estimates.results.mc_stderr
    total = stderr.pow(2).sum().sqrt() / len(x)
    assert abs(error.mean()) < 3 * total + 1e-4, (error.mean(), total)
    assert (error.abs() < 5 * stderr + 1e-3).all()


def test_the_numbers_do_not_depend_on_the_form_of_the_data_or_the_batching(user_model):
    model, x = user_model
    labels = torch.arange(len(x))
    forms = [
        dict(data=x, batch_size=5),
        dict(data=TensorDataset(x, labels), batch_size=2),
        dict(data=DataLoader(TensorDataset(x, labels), batch_size=7, shuffle=True)),
        dict(data=x.numpy()),
    ]
    runs = [vaelik.estimate(model, num_samples=50, **form) for form in forms]
    # the same draws for every example; only float32 rounding of other matrix shapes differs
    for run in runs[1:]:
        torch.testing.assert_close(run.log_px, runs[0].log_px, rtol=0, atol=1e-5)
    # a subset keeps each example's own stream: the same values for the same indices
    subset = vaelik.estimate(model, x, num_samples=50, examples=[3, 7], batch_size=5)
    torch.testing.assert_close(subset.log_px, runs[0].log_px[[3, 7]], rtol=0, atol=1e-5)
    assert subset.results.index.tolist() == [3, 7]
    # another seed, other draws
    assert not torch.equal(vaelik.estimate(model, x, num_samples=50, seed=1).log_px, runs[0].log_px)


def test_estimates_write_and_convert(user_model, tmp_path):
    model, x = user_model
    estimates = vaelik.estimate(model, x, num_samples=30)
    estimates.write(tmp_path)
    lines = (tmp_path / "per_example.csv").read_text().splitlines()
    assert lines[0].split(",") == list(estimates.rows()[0])
    assert len(lines) == len(x) + 1
    assert '"log_px_mean"' in (tmp_path / "summary.json").read_text()
    arrays = estimates.to_numpy()
    assert arrays["log_px"].shape == (len(x),) and arrays["index"].tolist() == list(range(len(x)))
    summary = estimates.summary
    assert summary["bpd"] == pytest.approx(-summary["log_px_mean"] / (16 * math.log(2)))
    assert (summary["estimator"], summary["proposal"], summary["num_samples"]) == (
        "importance",
        "encoder",
        30,
    )


def test_convergence_and_bdmc_on_a_user_model(user_model):
    model, x = user_model
    table = vaelik.convergence(
        model, x, ks=[1, 10, 100], estimators=["importance", "prior"], proposals=["encoder"]
    )
    lines = {(row["estimator"], row["proposal"]) for row in table.rows}
    assert lines == {("importance", "encoder"), ("prior", "prior")}
    nested = [row for row in table.rows if row["estimator"] == "importance"]
    again = vaelik.estimate(model, x, num_samples=10)
    assert nested[1]["log_px_mean"] == pytest.approx(again.summary["log_px_mean"], abs=1e-12)
    result = vaelik.bdmc(model, num_examples=6, num_steps=[5, 50], num_samples=4)
    short, long = result.rows
    assert short["gap_mean"] > long["gap_mean"] > -0.05  # the sandwich closes with more steps
    assert result.columns["lower_50"].shape == (6,)


def test_estimators_are_immutable_and_resolved_once():
    model = tiny_bernoulli_vae(latent_dim=2)
    ais = AnnealedImportanceSampling(num_samples=8, num_steps=3)
    with pytest.raises(AttributeError, match="replace"):
        ais.num_samples = 2
    plan = plan_for(model, ais, EncoderProposal())
    assert plan.proposal.name == "prior" and plan.num_samples == 8  # 2-D: chains from the prior
    report = plan.report()
    assert [report[key] for key in ("estimator", "proposal", "num_samples")] == ["ais", "prior", 8]
    other = ais.replace(num_samples=4, prior_share=0.5)
    assert (ais.num_samples, other.num_samples, other.num_steps) == (8, 4, 3)
    assert (
        plan_for(model, other, EncoderProposal()).proposal.name == "prior (2 of 4 chains) + encoder"
    )
    with pytest.raises(SettingError, match="^num_samples must be an integer >= 1, got 0$"):
        ais.replace(num_samples=0)
    quadrature = vaelik.make_estimator("quadrature", points=10)
    assert plan_for(model, quadrature, EncoderProposal()).num_samples == 100
    assert quadrature.num_samples == 10  # binding did not change it


def test_defaults_come_from_the_configs():
    for name in option_names("estimator"):
        built, config = vaelik.make_estimator(name), option_config("estimator", name)
        for key, value in config.items():
            if key in ("_target_", "seed", "proposal"):
                continue
            assert getattr(built, key) == value, (name, key)
    for name in option_names("proposal"):
        built = vaelik.make_proposal(name)
        for key, value in option_defaults("proposal", name).items():
            assert getattr(built, key) == value, (name, key)
    # the classes' own defaults are the configs'
    for cls, option in (
        (ImportanceSampling, "importance"),
        (AnnealedImportanceSampling, "ais"),
        (vaelik.make_estimator("quadrature").__class__, "quadrature"),
    ):
        parameters = inspect.signature(cls).parameters
        for key, value in option_defaults("estimator", option).items():
            assert parameters[key].default == value, (cls, key)
    assert vaelik.make_estimator("ais", num_steps=7, seed=3).num_steps == 7
    with pytest.raises(ConfigError, match="no setting 'num_step'.*num_steps"):
        vaelik.make_estimator("ais", num_step=7)
    with pytest.raises(ConfigError, match="unknown estimator 'is'.*importance"):
        vaelik.make_estimator("is")


def test_bad_input_is_one_clear_error(user_model):
    model, x = user_model

    class NoContract:
        latent_dim = 2

    missing = "lacks posterior.*log_joint.*prior.*from_functions"
    with pytest.raises(ModelContractError, match=missing):
        vaelik.estimate(NoContract(), x)
    with pytest.raises(SettingError, match="^num_samples must be an integer >= 1, got 0$"):
        vaelik.estimate(model, x, num_samples=0)
    with pytest.raises(ConfigError, match="empty"):
        vaelik.estimate(model, x[:0])
    with pytest.raises(ConfigError, match="give a tensor"):
        vaelik.estimate(model, {"x": x})
    net = UserVAE()
    wrong_shape = from_functions(net.encode, lambda z: net.decode(z)[:, :10], "bernoulli", 2)
    with pytest.raises(ModelContractError, match="10 values, the data has 16"):
        vaelik.estimate(wrong_shape, x, num_samples=4)
    wrong_latent = from_functions(lambda x: (x[:, :3], x[:, :3]), net.decode, "bernoulli", 2)
    with pytest.raises(ModelContractError, match=r"mean of shape \(\d+, 3\).*\[\d+, 2\]"):
        vaelik.estimate(wrong_latent, x, num_samples=4)
    broken = UserVAE()
    with torch.no_grad():
        broken.decoder[0].weight.fill_(math.nan)
    nan_model = from_functions(broken.encode, broken.decode, "bernoulli", 2)
    with pytest.raises(ModelContractError, match="decode.*NaN"):
        vaelik.estimate(nan_model, x, num_samples=4)
    with pytest.raises(ConfigError, match="unknown likelihood 'bernouli'"):
        from_functions(net.encode, net.decode, "bernouli", 2)


def test_a_bad_k_names_the_key_the_user_set(tmp_path, monkeypatch, capsys):
    """The estimator checks K under its own name; each command names its own config key."""
    for main, argv, key in (
        (evaluate_cli.main, ["ckpt_path=x.ckpt", "estimator.num_samples=0"], "estimator"),
        (bdmc_cli.main, ["ckpt_path=x.ckpt", "ais.num_samples=0"], "ais"),
        (results_cli.main, ["checkpoints=[x.ckpt]", "importance.num_samples=0"], "importance"),
        (results_cli.main, ["checkpoints=[x.ckpt]", "ais.num_samples=-1"], "ais"),
    ):
        output = run_cli_failing(main, [*argv, f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
        assert f"error: {key}.num_samples must be an integer >= 1" in user_error(output)


def test_the_commands_and_the_callback_estimate_only_through_the_api():
    """No command module, and not the training callback, runs an estimator on data itself: no
    DataLoader, no estimator or plan call, no log-weights; each imports the API."""
    modules = [*(SRC / "cli").glob("*.py"), SRC / "evaluation/table.py"]
    modules.append(SRC / "training/callbacks.py")
    api = {"vaelik.evaluation.estimate", "vaelik.evaluation.convergence", "vaelik.evaluation.bdmc"}
    forbidden_names = {"DataLoader", "Subset", "log_weights", "run_plan", "visit_batches"}
    users = 0
    for path in modules:
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not used & forbidden_names, (path.name, used & forbidden_names)
        assert "estimate" not in {  # plan.estimate(x, index): an estimation loop of its own
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }, path.name
        users += bool(imported & api)
    assert users == 5  # eval, convergence, bdmc, the results table, the callback


def stored_config(model_target: str, **model_settings) -> dict:
    """The sections a vaelik run stores, with the model built by ``model_target``."""
    return {
        "data": {
            "_target_": "vaelik.data.ImageDataModule",
            "source": {"_target_": "vaelik.data.EmbeddedMNIST"},
            "shape": [1, 28, 28],
        },
        "likelihood": {"_target_": "vaelik.models.likelihoods.BernoulliHead", "data_channels": 1},
        "model": {"_target_": model_target, **model_settings},
    }


def test_own_model_classes_need_an_explicit_opt_in(tmp_path, monkeypatch):
    (tmp_path / "usermodels.py").write_text(USER_MODULE + "\nimport os\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = stored_config("usermodels.MyVAE")
    with pytest.raises(Exception, match="trusted_packages=\\[their top-level package\\]"):
        check_trusted_config(config, "x.ckpt")
    check_trusted_config(config, "x.ckpt", trusted_packages=["usermodels"])
    with pytest.raises(Exception, match="not one of vaelik's"):  # a prefix is not a package
        check_trusted_config(config, "x.ckpt", trusted_packages=["usermodel"])
    with pytest.raises(ConfigError, match="not a package name"):
        check_trusted_config(config, "x.ckpt", trusted_packages=["my package"])
    # what a trusted module merely imports is not trusted: only its own model classes
    for target in ("usermodels.os.system", "usermodels.VAE", "usermodels.torch.load"):
        with pytest.raises(Exception, match="not one of vaelik's"):
            check_trusted_config(stored_config(target), "x.ckpt", trusted_packages=["usermodels"])
    # and a trusted class takes only its own settings, never unnamed arguments
    for extra in ({"_args_": ["rm -rf /"]}, {"shell": "rm -rf /"}):
        with pytest.raises(Exception, match="does not take"):
            check_trusted_config(
                stored_config("usermodels.MyVAE", **extra), "x.ckpt", ["usermodels"]
            )


def test_review_findings_stay_fixed(user_model, tmp_path, monkeypatch):
    """Quadrature's K is its grid: a callback or a call that sets K leaves it (or says so); the
    callback's convergence plot keeps every K asked for; two
    estimators of one name are two lines; a mixed AIS start names one line at every K;
    repeated examples and a batch of 0 are refused; a private config tree is read by name."""
    from vaelik.inference.quadrature import Quadrature
    from vaelik.training.callbacks import LogLikelihoodCallback

    model, x = user_model
    callback = LogLikelihoodCallback(Quadrature(points=10), EncoderProposal(), num_samples=128)
    assert callback.estimator.points == 10
    wide = LogLikelihoodCallback(
        vaelik.make_estimator("importance"), EncoderProposal(), convergence_ks=[1, 10, 1000]
    )
    assert wide.plotted_ks() == [1, 10, 128, 1000]  # a K above the per-epoch one is kept
    with pytest.raises(ConfigError, match="'quadrature' has no setting 'num_samples'"):
        vaelik.estimate(model, x, estimator="quadrature", num_samples=4)
    with pytest.raises(SettingError, match="num_samples is not a setting of estimator"):
        Quadrature(points=10).replace(num_samples=4)
    short, long = (vaelik.make_estimator("ais", num_steps=n, num_samples=4) for n in (2, 3))
    table = vaelik.convergence(model, x[:2], ks=[1, 4], estimators=[short, long])
    assert len(table.rows) == 4
    mixed = vaelik.make_estimator("ais", num_steps=2, num_samples=8, prior_share=0.5)
    table = vaelik.convergence(model, x[:2], ks=[1, 2, 8], estimators=[mixed])
    assert {row["proposal"] for row in table.rows} == {"prior (4 of 8 chains) + encoder"}
    with pytest.raises(ConfigError, match="example 2 is chosen twice"):
        vaelik.estimate(model, x, examples=[2, 2], num_samples=4)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        vaelik.estimate(model, x, batch_size=0, num_samples=4)
    import shutil

    from vaelik.options import shipped_config_dir

    private = tmp_path / "conf"
    shutil.copytree(shipped_config_dir(), private)
    ais_yaml = private / "estimator" / "ais.yaml"
    ais_yaml.write_text(ais_yaml.read_text().replace("num_steps: 500", "num_steps: 7"))
    monkeypatch.setenv("VAELIK_CONFIG_DIR", str(private))
    assert vaelik.make_estimator("ais").num_steps == 7


USER_MODULE = '''
from vaelik.models.vae import VAE


class MyVAE(VAE):
    """A user's own model class: vaelik's VAE with a method of its own."""

    def describe(self) -> str:
        return "mine"
'''


def test_the_commands_measure_a_users_model_class_only_with_the_opt_in(
    tmp_path, monkeypatch, capsys
):
    from conftest import run_cli
    from test_composition import TINY_RUN
    from vaelik.checkpoint import CONFIG_KEY
    from vaelik.cli import train

    run = tmp_path / "run"
    run_cli(train.main, [*TINY_RUN, f"hydra.run.dir={run}"], monkeypatch)
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    raw[CONFIG_KEY]["model"]["_target_"] = "usermodels.MyVAE"
    mine = tmp_path / "mine.ckpt"
    torch.save(raw, mine)
    common = [f"ckpt_path={mine}", "num_examples=4", "estimator.num_samples=8"]
    refused = run_cli_failing(
        evaluate_cli.main, [*common, f"hydra.run.dir={tmp_path}/no"], monkeypatch, capsys
    )
    assert "usermodels.MyVAE" in refused and "trusted_packages=[" in user_error(refused)
    assert not (tmp_path / "no" / "summary.json").exists()
    run_cli(
        evaluate_cli.main,
        [*common, "trusted_packages=[usermodels]", f"hydra.run.dir={tmp_path}/yes"],
        monkeypatch,
    )
    assert '"num_examples": 4' in (tmp_path / "yes" / "summary.json").read_text()
