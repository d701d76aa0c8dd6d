"""The project's own promises: CI runs the README's test command, the code is ruff-clean, the
dependency list is what the code uses, and a built wheel is a working vaelik."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The shell lines of the README's quick-start code block."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [
        line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_ci_runs_the_readme_test_command_exactly():
    train_command, test_command = readme_commands()
    assert "vaelik-train" in train_command and "pytest" in test_command
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    assert test_command in ci_lines


@pytest.mark.slow
def test_code_is_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    result = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_numeric_core_type_checks():
    mypy = shutil.which("mypy") or str(Path(sys.executable).with_name("mypy"))
    result = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


#: runtime dependencies that vaelik uses through another package instead of importing them
USED_WITHOUT_IMPORT = {"tensorboard"}
#: distribution name -> the module it installs, where they differ
MODULE_OF = {
    "hydra-core": "hydra",
    "scikit-learn": "sklearn",
    "pillow": "PIL",
    "pyro-ppl": "pyro",
    "pyyaml": "yaml",
}
#: extras whose packages vaelik imports only where a user asks for them (vaelik.adapters)
OPTIONAL_EXTRAS = ("pythae", "pyro")


def imported_packages(folder: Path) -> set[str]:
    """Top-level names of every module imported anywhere in ``folder``'s Python files."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"vaelik", "__future__"}


def test_every_dependency_is_used_and_every_import_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def modules(specs: list[str]) -> set[str]:
        names = (re.split(r"[<>=!~ \[]", spec)[0] for spec in specs)
        return {MODULE_OF.get(name, name.replace("-", "_")) for name in names}

    declared = modules(project["dependencies"])
    extras = project["optional-dependencies"]
    optional = modules([spec for extra in OPTIONAL_EXTRAS for spec in extras[extra]])
    imported = imported_packages(ROOT / "src" / "vaelik")
    assert imported <= declared | optional, f"imported but not declared: {imported - declared}"
    assert declared - USED_WITHOUT_IMPORT <= imported, (
        f"declared but never imported: {declared - USED_WITHOUT_IMPORT - imported}"
    )
    assert "scipy" not in declared and "scipy" in imported_packages(ROOT / "tests")


def run_python(code: str, cwd: Path, **env: str) -> str:
    """Run ``code`` in a fresh interpreter in ``cwd``; return its last line of output."""
    environment = {k: v for k, v in os.environ.items() if k != "VAELIK_CONFIG_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_installed_wheel_carries_the_config_tree_and_runs_from_any_folder(tmp_path):
    # the sdist (what a package index serves), then the wheel pip builds from it
    sdist = run_python(
        f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))",
        ROOT,
    )
    with tarfile.open(tmp_path / sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    source = next((tmp_path / "unpacked").iterdir())
    wheel = run_python(
        f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path)!r}))",
        source,
    )
    configs = {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        packaged = {n.removeprefix("vaelik/conf/") for n in archive.namelist() if "/conf/" in n}
    assert configs and packaged == configs
    # installed (without the checkout on the path), run from an unrelated folder
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"),
            *("--target", str(site), str(tmp_path / wheel)),
        ],
        check=True,
        timeout=300,
    )
    composed = run_python(
        "from hydra import compose, initialize_config_dir\n"
        "from vaelik.config import config_dir\n"
        "for folder, name in [('', 'train'), ('', 'eval'), ('', 'convergence'),\n"
        "                     ('', 'results'), ('', 'bdmc'), ('deadline', 'deadline')]:\n"
        "    tree = f'{config_dir()}/{folder}'\n"
        "    with initialize_config_dir(config_dir=tree, version_base='1.3'):\n"
        "        compose(name, overrides=['paths.output_dir=out'])\n"
        "print(config_dir())",
        elsewhere,
        PYTHONPATH=str(site),
    )
    assert composed == str(site / "vaelik" / "conf")
    run_python(
        "import sys\n"
        "from vaelik.cli import train\n"
        "sys.argv = ['vaelik-train', 'debug=fast', 'trainer.enable_progress_bar=false']\n"
        "train.main()",
        elsewhere,
        PYTHONPATH=str(site),
        OMP_NUM_THREADS="1",
    )
    assert list(elsewhere.glob("outputs/train/runs/*/metrics.json"))
