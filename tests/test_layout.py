"""The package's layers: entry points apart and imported by nothing, imports without effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vaelik"
# from the ground up: a module imports only from its own layer and the ones below it
LAYERS = ("data", "models", "inference", "evaluation", "training", "examples", "cli")
GROUND = (  # import no other vaelik module but the ground
    "vaelik.config",
    "vaelik.checkpoint",
    "vaelik.metrics",
    "vaelik.errors",
    "vaelik.progress",
    "vaelik.options",
    "vaelik.subsets",
)


#: the public face: ``import vaelik`` (the API it exports) and the adapters, above every library
#: layer and below the entry points
PUBLIC = ("vaelik", "vaelik.adapters")


def layer_of(module: str) -> float:
    """-1 for the ground modules, else the index of the module's layer in LAYERS (the public
    face between the last library layer and the entry points)."""
    if module in GROUND:
        return -1
    if module in PUBLIC:
        return LAYERS.index("cli") - 0.5
    return LAYERS.index(module.split(".")[1])


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_every_layer_is_a_folder():
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_no_layer_imports_a_layer_above_it():
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for imported in imported_modules(path):
            if imported.startswith("vaelik.") and imported != module:
                assert layer_of(imported) <= layer_of(module), f"{module} imports {imported}"


def test_nothing_in_the_library_imports_an_entry_point():
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        reaching = {m for m in imported_modules(path) if m.startswith("vaelik.cli")}
        assert not reaching, f"{path.relative_to(PACKAGE)} imports {reaching}"


def test_the_vae_core_does_not_import_the_deadline_example():
    for path in PACKAGE.rglob("*.py"):
        if "examples" in path.relative_to(PACKAGE).parts or path.parent.name == "cli":
            continue
        assert not {m for m in imported_modules(path) if "examples" in m}, path


@pytest.mark.slow
def test_importing_any_module_has_no_side_effect():
    """In a fresh interpreter, after the third-party modules the package uses: importing every
    module of the package (entry points included) adds no warning filter, registers no
    OmegaConf resolver and runs no Hydra application."""
    third_party = sorted(
        {
            name
            for path in PACKAGE.rglob("*.py")
            for name in imported_modules(path)
            if not name.startswith(("vaelik", "__future__"))
        }
    )
    script = f"""
import importlib, sys, warnings
from omegaconf import OmegaConf
for name in {third_party!r}:  # their own import-time effects are not ours
    importlib.import_module(name)
filters = list(warnings.filters)
resolvers = dict(OmegaConf._get_resolver.__globals__.get("BaseContainer")._resolvers)
for name in {modules()!r}:
    importlib.import_module(name)
assert list(warnings.filters) == filters, "a module changed the warning filters at import"
after = OmegaConf._get_resolver.__globals__.get("BaseContainer")._resolvers
added = set(after) - set(resolvers)
assert not added, f"resolvers registered at import: {{added}}"
from hydra.core.global_hydra import GlobalHydra
assert not GlobalHydra.instance().is_initialized(), "a module initialised Hydra at import"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_the_library_loads_no_training_or_config_machinery():
    """``import vaelik`` and ``vaelik.estimate`` on a plain PyTorch model load neither
    Lightning, Hydra, OmegaConf, torchvision nor wandb (``benchmarks/import_cost.py`` times
    them): the library is usable, and quick to import, where only torch is."""
    program = (
        "import sys, json, torch; from torch import nn; import vaelik; "
        "from vaelik.adapters import from_functions; "
        "enc, dec = nn.Linear(6, 4), nn.Linear(2, 6); "
        "model = from_functions(lambda x: enc(x).chunk(2, -1), dec, 'bernoulli', latent_dim=2); "
        "vaelik.estimate(model, (torch.rand(5, 6) < 0.5).float(), num_samples=3); "
        "vaelik.resolve(model, 'ais', num_steps=3); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    heavy = {"lightning", "pytorch_lightning", "hydra", "omegaconf", "torchvision", "wandb"}
    assert "vaelik" in loaded and not loaded & heavy, sorted(loaded & heavy)
