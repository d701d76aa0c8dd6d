"""The public face of ``import vaelik``: every type in its signatures exported, name lists that
match the registry, ``examples=`` that says what it takes, and an evaluation library free of
Hydra."""

from __future__ import annotations

import ast
import inspect
import re
import types
import typing
from pathlib import Path

import pytest
import torch

import vaelik
from models import SHAPE, tiny_bernoulli_vae
from vaelik.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vaelik"


def classes_in(hint: object) -> set[type]:
    """Every class a type hint names, through unions, generics and aliases."""
    found: set[type] = set()
    origin = typing.get_origin(hint)
    if origin is not None or isinstance(hint, types.UnionType):
        for argument in typing.get_args(hint):
            found |= classes_in(argument)
        if isinstance(origin, type):
            found.add(origin)
    elif isinstance(hint, type):
        found.add(hint)
    return found


def public_callables() -> list[tuple[str, object]]:
    """Every exported function, class and public method of an exported class."""
    members = []
    for name in vaelik.__all__:
        exported = getattr(vaelik, name)
        if inspect.isclass(exported):
            members.append((name, exported))
            members += [
                (f"{name}.{attribute}", value)
                for attribute, value in vars(exported).items()
                if (not attribute.startswith("_") or attribute == "__init__") and callable(value)
            ]
        elif callable(exported) and not typing.get_origin(exported):
            members.append((name, exported))
    return members


def test_every_vaelik_type_in_a_public_signature_is_exported():
    unexported = set()
    for name, member in public_callables():
        for hint in typing.get_type_hints(member).values():
            for cls in classes_in(hint):
                if (
                    cls.__module__.startswith("vaelik")
                    and getattr(vaelik, cls.__name__, None) is not cls
                ):
                    unexported.add(f"{cls.__module__}.{cls.__name__} (in {name})")
    assert not unexported, sorted(unexported)


def test_the_api_page_shows_every_export():
    page = (PACKAGE.parents[1] / "docs" / "reference" / "api.md").read_text()
    missing = [name for name in vaelik.__all__ if f"vaelik.{name}" not in page]
    assert not missing, f"docs/reference/api.md does not show {missing}"


def test_the_public_functions_type_model_and_data():
    for function in (vaelik.estimate, vaelik.convergence, vaelik.resolve, vaelik.bdmc):
        hints = typing.get_type_hints(function)
        assert hints["model"] is vaelik.MeasurableModel, function.__name__
        if "data" in hints:
            assert hints["data"] == vaelik.EstimationData, function.__name__
        if "examples" in hints:
            assert hints["examples"] == vaelik.ExampleChoice, function.__name__


def named(text: str) -> set[str]:
    return set(re.findall(r"``([a-z_]+)``", text))


@pytest.mark.parametrize(
    "names, documented",
    [
        (vaelik.estimator_names, [vaelik.make_estimator, vaelik.estimate, vaelik]),
        (vaelik.proposal_names, [vaelik.make_proposal, vaelik.estimate, vaelik]),
    ],
    ids=["estimators", "proposals"],
)
def test_the_documented_name_lists_are_the_registry(names, documented):
    registry = set(names())
    assert "refined" in vaelik.proposal_names() and "quadrature" in vaelik.estimator_names()
    for owner in documented:
        missing = registry - named(owner.__doc__)
        assert not missing, f"{getattr(owner, '__name__', owner)} does not list {missing}"


def test_the_registry_is_the_config_tree_in_use(tmp_path, monkeypatch):
    tree = tmp_path / "conf"
    (tree / "proposal").mkdir(parents=True)
    (tree / "estimator").mkdir()
    (tree / "train.yaml").write_text("seed: 0\n")
    (tree / "proposal" / "mine.yaml").write_text(
        "_target_: vaelik.inference.proposals.StudentTProposal\ndf: 7.0\n"
    )
    monkeypatch.setenv("VAELIK_CONFIG_DIR", str(tree))
    assert vaelik.proposal_names() == ["mine"]
    assert vaelik.make_proposal("mine").df == 7.0
    with pytest.raises(ConfigError, match="unknown proposal 'encoder': choose one of mine"):
        vaelik.make_proposal("encoder")


@pytest.fixture(scope="module")
def sorted_data():
    """A tiny model and 10 examples whose first half are all zeros, the second all ones: data
    sorted by class."""
    model = tiny_bernoulli_vae(latent_dim=2)
    x = torch.cat([torch.zeros(5, *SHAPE), torch.ones(5, *SHAPE)])
    return model, x


def test_examples_take_indices_or_a_spread_and_refuse_a_bare_number(sorted_data):
    model, x = sorted_data
    whole = vaelik.estimate(model, x, num_samples=4)
    first = vaelik.estimate(model, x, num_samples=4, examples=range(3))
    spread = vaelik.estimate(model, x, num_samples=4, examples=vaelik.Spread(3))
    assert first.results.index.tolist() == [0, 1, 2]
    assert spread.results.index.tolist() == [0, 3, 6]  # floor(i * 10 / 3)
    assert torch.equal(spread.log_px, whole.log_px[[0, 3, 6]])
    assert vaelik.Spread(30).indices(10) == list(range(10))
    with pytest.raises(ConfigError, match=r"examples=3 is ambiguous: pass examples=range\(3\)"):
        vaelik.estimate(model, x, num_samples=4, examples=3)
    with pytest.raises(ConfigError, match="examples must be None, a sequence of indices"):
        vaelik.estimate(model, x, num_samples=4, examples="first")
    for count in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="Spread\\(count\\) needs an integer count >= 1"):
            vaelik.Spread(count)


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_the_evaluation_library_has_no_hydra():
    """Results tables, comparisons and estimates are typed functions: the commands adapt their
    configs to them."""
    for path in sorted((PACKAGE / "evaluation").glob("*.py")):
        assert not imported_modules(path) & {"hydra", "omegaconf"}, path.name
        assert "DictConfig" not in path.read_text(), path.name


@pytest.mark.parametrize("name", ["importance", "ais", "prior", "quadrature"])
def test_estimators_are_values_their_repr_rebuilds(name):
    from vaelik.inference.ais import AnnealedImportanceSampling
    from vaelik.inference.estimators import ImportanceSampling
    from vaelik.inference.proposals import PriorProposal
    from vaelik.inference.quadrature import Quadrature

    estimator = vaelik.make_estimator(name)
    assert estimator == vaelik.make_estimator(name)
    assert len({estimator, vaelik.make_estimator(name)}) == 1
    classes = {
        cls.__name__: cls
        for cls in (AnnealedImportanceSampling, ImportanceSampling, PriorProposal, Quadrature)
    }
    assert eval(repr(estimator), classes) == estimator
    other = estimator.replace(seed=estimator.seed + 1)
    assert other != estimator and repr(other) != repr(estimator)


def test_proposals_are_values():
    assert vaelik.make_proposal("student_t") == vaelik.make_proposal("student_t")
    assert vaelik.make_proposal("student_t") != vaelik.make_proposal("student_t", df=3.0)
    assert vaelik.make_proposal("encoder") != vaelik.make_proposal("prior")
    assert repr(vaelik.make_proposal("inflated", scale=2.0)) == "InflatedProposal(scale=2.0)"
