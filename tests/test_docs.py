"""The docs keep their promises: the README stays short, the configuration reference is conf/,
the Python examples and the Getting-started commands run as written, and no page refers to a
file outside the repository."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: a python block right after this line is a template naming objects of the reader's own
NOT_RUN = "<!-- not run: it names a model of your own -->"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture
def reference():
    return load_tool("config_reference")


def test_readme_is_at_most_ten_thousand_bytes():
    assert len((ROOT / "README.md").read_bytes()) <= 10_000


def test_configuration_reference_is_generated_from_conf(reference):
    assert reference.PAGE.read_text() == reference.render(), (
        "docs/reference/configuration.md is out of date: run python tools/config_reference.py"
    )
    assert reference.main(["--check"]) == 0


@pytest.mark.parametrize("change", ["a new option", "a new key", "a changed default"])
def test_the_reference_check_fails_when_conf_changes_without_it(reference, tmp_path, change):
    conf = tmp_path / "conf"
    shutil.copytree(reference.CONF, conf)
    if change == "a new option":
        (conf / "prior" / "laplace.yaml").write_text("# a Laplace prior\nscale: 1.0\n")
    elif change == "a new key":
        with open(conf / "estimator" / "ais.yaml", "a") as handle:
            handle.write("# leapfrog steps between two adaptations\nadapt_every: 10\n")
    else:
        path = conf / "estimator" / "importance.yaml"
        path.write_text(path.read_text().replace("num_samples: 5000", "num_samples: 4000"))
    reference.CONF = conf
    assert reference.main(["--check"]) == 1


def test_the_reference_shows_every_option_key_default_and_comment(reference):
    page = reference.PAGE.read_text()
    assert "#### `estimator=ais`" in page and "#### `prior=vampprior`" in page
    ais = page.split("#### `estimator=ais`", 1)[1].split("####", 1)[0]
    assert re.search(r"\| `num_steps` \| `500` \| intermediate distributions", ais)
    assert "| `num_samples` | `32` | chains per example |" in ais
    # a group no command chooses by default is shown as Hydra takes it, with its + keys
    assert "#### `+sweep=paper_ablation`" in page and "#### `experiment=bmnist_vae`" in page
    assert "| `hydra.sweeper.params.+ablation` | `none,optimizer," in page


def test_every_key_in_the_reference_is_described(reference):
    configs = {
        ("", command): reference.read_config_file(reference.CONF / name)
        for command, name in reference.COMMANDS.items()
    }
    for group, options in reference.group_options().items():
        configs.update({(group, p.stem): reference.read_config_file(p) for p in options})
    reference.describe_missing(configs)
    undescribed = [
        f"{group or command}/{command if group else ''}: {entry.path}"
        for (group, command), config in configs.items()
        for entry in config.entries
        if not entry.description
    ]
    assert not undescribed, "keys without a comment in conf/: " + ", ".join(undescribed)


def fenced_blocks(text: str, language: str) -> list[str]:
    """The ``language`` code blocks of a markdown text, in order, without the ones marked as
    templates (NOT_RUN on the line before)."""
    blocks = re.finditer(rf"(?P<before>[^\n]*)\n```{language}\n(?P<code>.*?)\n```", text, re.S)
    return [block["code"] for block in blocks if block["before"].strip() != NOT_RUN]


@pytest.mark.parametrize("page", ["README.md", "docs/how-to/own-model.md"])
def test_the_python_examples_run_as_written(page, tmp_path, monkeypatch):
    """Every python block of the page, in order, in one namespace (a later block uses what an
    earlier one made), in an empty folder: each prints and writes what it says."""
    monkeypatch.chdir(tmp_path)
    blocks = fenced_blocks((ROOT / page).read_text(), "python")
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{page} example", "exec"), namespace)
    assert (tmp_path / "results" / "per_example.csv").is_file()
    summary = namespace["estimates"].summary
    assert summary["num_examples"] == 20 and summary["log_px_mean"] < 0


def test_every_page_names_nothing_outside_the_repository():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.rglob("*.md"), ROOT / "mkdocs.yml"]
    outside = re.compile(r"\.\./shared|PERFORMANCE\.md|DESIGN\.md|seed-importance|/work/")
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in pages
        for match in outside.finditer(path.read_text())
    ]
    assert not found


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a 30-epoch training and 500 estimates with K = 5000
def test_getting_started_commands_run_as_written(tmp_path):
    """The Getting-started page's commands, in order, in an empty folder, with this
    environment's commands for ``.venv/bin/`` (the install line is the README's quick start,
    which CI runs in a fresh clone)."""
    text = (DOCS / "getting-started.md").read_text()
    commands = [
        line.strip()
        for block in fenced_blocks(text, "bash")
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("python3 -m venv")
    ]
    assert [command.split()[0] for command in commands] == [
        ".venv/bin/vaelik-train",
        ".venv/bin/vaelik-eval",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    outputs = []
    for command in commands:
        command = command.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
        result = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        outputs.append(result.stdout + result.stderr)
    assert (tmp_path / "runs/first/checkpoints/last.ckpt").is_file()
    assert (tmp_path / "runs/first-eval/per_example.csv").is_file()
    assert re.search(r"epoch 30/30 .*val/log_px -\d+", outputs[0])
    assert re.search(
        r"test: log p\(x\) = -\d+\.\d\d \+- \d\.\d\d nats .* over 500 examples", outputs[1]
    )


def test_the_readme_results_table_is_the_results_csv():
    """Each README row's figure is the row of its experiment in the docs' results.csv (the
    rows vaelik-results wrote, named after the experiment, with a suffix where the README gives
    overrides beside it), as results.md rounds it."""
    from vaelik.evaluation.table import read_rows

    rows = read_rows(DOCS / "results/binarized_mnist/results.csv")
    section = (ROOT / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    figure = r"-\d+\.\d\d \+- \d\.\d\d"
    readme_rows = re.findall(
        rf"^\| [^|]+ \| `(\w+)`[^|]* \| ({figure}) \| ({figure})? *\|", section, re.M
    )
    assert len(readme_rows) == 9
    assert any(ais for _, _, ais in readme_rows)
    for experiment, importance, ais in readme_rows:
        mine = [row for row in rows if row["model"].startswith(experiment)]
        measured = {f"{row['log_px']:.2f} +- {row['log_px_stderr']:.2f}" for row in mine}
        assert importance in measured, (experiment, importance, measured)
        if ais:  # an AIS figure over the whole split, as that row recorded it
            whole = {
                f"{row['ais_log_px']:.2f} +- {row['ais_log_px_stderr']:.2f}"
                for row in mine
                if row["ais_examples"] == row["num_examples"]
            }
            assert ais in whole, (experiment, ais, whole)


#: the contributing page's rows, by the config group whose options they add
COMPONENT_ROWS = {
    "prior": "a prior p(z)",
    "posterior": "a guide q(z\\|x)",
    "objective": "an objective",
    "proposal": "a proposal",
    "estimator": "an estimator",
    "likelihood": "a likelihood head",
}


def component_rows() -> dict[str, str]:
    """The contributing page's "Adding a component" table: the first cell of each row and the
    whole row."""
    text = (DOCS / "contributing.md").read_text()
    table = text.split("## Adding a component", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    return {row.split(" | ")[0].removeprefix("| "): row for row in rows}


def test_the_contributing_page_names_files_that_exist():
    """Every file or folder the table names is there (``NAME`` standing for the new one's
    name: its folder is there)."""
    for first, row in component_rows().items():
        for path in re.findall(r"`((?:src|conf|tests)/[^`]*)`", row):
            target = ROOT / path
            if "NAME" in path:
                target = target.parent
            assert target.exists(), f"{first}: {path}"


@pytest.mark.parametrize("group", list(COMPONENT_ROWS))
def test_every_option_s_class_lives_where_the_contributing_page_says(group):
    """Each ``conf/<group>/*.yaml``'s class is in a module the page's row names, or in the
    folder it names: a new component of that kind needs the files the row lists."""
    row = component_rows()[COMPONENT_ROWS[group]]
    named = re.findall(r"`((?:src/vaelik|inference|models)/[^`]*)`", row)
    assert named, row
    for option in sorted((ROOT / "conf" / group).glob("*.yaml")):
        target = re.search(r"^_target_: (\S+)", option.read_text(), re.M)
        assert target, option
        module = importlib.import_module(target.group(1).rsplit(".", 1)[0])
        where = Path(module.__file__).resolve().relative_to(ROOT / "src" / "vaelik")
        places = [path.removeprefix("src/vaelik/").replace("NAME.py", "") for path in named]
        assert any(
            str(where) == place or (place.endswith("/") and str(where).startswith(place))
            for place in places
        ), f"{option.name}: {where} is not among {named}"
