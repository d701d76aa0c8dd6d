"""The documentation's tables and figures come from files that exist and read back.

Every ``{{ csv_table(...) }}`` or ``{{ results_table(...) }}`` line in ``docs/`` names a file
that the MkDocs hook (``tools/docs_hooks.py``) renders; the binarized-MNIST ``results.csv`` is in
the schema ``vaelik-results`` writes; ``tools/draw_learning_curves.py`` draws a PNG for every
folder of learning curves.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest

from vaelik.evaluation.table import COLUMNS, markdown_table, read_rows

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def load(relative: str):
    """The module at ``ROOT / relative``, imported from its path (``tools/`` is no package)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hooks():
    return load("tools/docs_hooks.py")


def directives(hooks) -> list[tuple[Path, str, str]]:
    """``(page, renderer, path)`` for every table directive of every page."""
    return [
        (page, *match.groups())
        for page in PAGES
        for match in hooks.DIRECTIVE.finditer(page.read_text(encoding="utf-8"))
    ]


def test_every_directive_names_a_file_that_renders(hooks):
    found = directives(hooks)
    for page, name, relative in found:
        assert name in hooks.RENDERERS, f"{page}: unknown directive {name}"
        path = DOCS / relative
        assert path.is_file(), f"{page}: {name}({relative!r}) names no file"
        table = hooks.RENDERERS[name](path).splitlines()
        assert table[0].startswith("| ") and table[1].startswith("| ---"), f"{page}: {relative}"
    for page in PAGES:  # a line that starts like a directive but is not one (a typo) is left
        expanded = hooks.expand(page.read_text(encoding="utf-8"), DOCS)
        left = re.findall(r"^[ \t]*\{\{.*$", expanded, re.MULTILINE)
        assert not left, f"{page}: directives the hook cannot read: {left}"


def test_the_text_after_a_directive_stays_out_of_its_table(hooks):
    # a markdown table runs on to the next blank line: if the directive's match ate the blank
    # line after it, the paragraph below would be drawn as one more row of the table
    page = 'Before.\n\n{{ csv_table("results/bdmc_gap.csv") }}\n\n*After.*\n'
    expanded = hooks.expand(page, DOCS)
    assert expanded.startswith("Before.\n\n| ")
    assert expanded.endswith(" |\n\n*After.*\n"), expanded[-60:]


def test_every_csv_table_has_a_cell_per_column(hooks):
    for page, name, relative in directives(hooks):
        if name != "csv_table":
            continue
        with open(DOCS / relative, newline="") as handle:
            header, *rows = list(csv.reader(handle))
        assert rows, f"{page}: {relative} has no rows"
        for number, row in enumerate(rows, start=2):
            assert len(row) == len(header), (
                f"{relative}:{number}: {len(row)} cells, not {len(header)}"
            )


def test_the_published_models_table_is_in_the_results_schema():
    path = DOCS / "results" / "binarized_mnist" / "results.csv"
    with open(path, newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == COLUMNS
    rows = read_rows(path)
    assert [row["model"] for row in rows] == [
        "bmnist_vae",
        "bmnist_hvae_vampprior_warmup10",
        "bmnist_hvae_vampprior_warmup100",
        "bmnist_vampprior",
        "bmnist_iaf",
        "bmnist_vae_paper",
        "bmnist_hvae_vampprior_paper",
        "bmnist_vampprior_paper",
        "bmnist_hvae_vampprior_paper_3layers",
        "bmnist_vampprior_paper_seed1",
    ]
    for row in rows:
        assert set(row) == set(COLUMNS)
        for column in ("log_px", "log_px_stderr", "bpd", "khat_share_above_0.7", "ais_gap"):
            assert isinstance(row[column], float), (row["model"], column)
        assert row["num_examples"] == 10_000 and row["num_samples"] == 5000
        assert (DOCS / "results" / "binarized_mnist" / "curves" / f"{row['model']}.csv").is_file()
    table = markdown_table(rows)
    assert "| bmnist_vae | -87.57 +- 0.23 | n/a | -88.56 | 0.1611 | 97.1% |" in table


def test_learning_curves_are_drawn_for_every_curves_folder(tmp_path):
    draw = load("tools/draw_learning_curves.py")
    folders = draw.curve_folders(DOCS)
    assert DOCS / "results" / "binarized_mnist" / "curves" in folders
    written = draw.draw_all(DOCS, tmp_path)
    assert written == [
        tmp_path / folder.parent.relative_to(DOCS) / "learning_curves.png" for folder in folders
    ]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    first = written[0].read_bytes()
    draw.draw_all(DOCS, tmp_path)
    assert written[0].read_bytes() == first, "the drawing is not deterministic"
    for folder in folders:  # and the docs hold the PNG beside its CSVs
        committed = folder.parent / "learning_curves.png"
        assert committed.is_file(), f"run tools/draw_learning_curves.py: {committed} is missing"


def test_a_curve_with_gaps_reads_only_its_measured_points(tmp_path):
    draw = load("tools/draw_learning_curves.py")
    folder = tmp_path / "docs" / "results" / "toy" / "curves"
    folder.mkdir(parents=True)
    (folder / "m.csv").write_text("epoch,val/log_px,train_val_elbo_gap\n9,-90,1\n19,,2\n29,-88,\n")
    assert draw.read_curve(folder / "m.csv") == {
        "val/log_px": [(9, -90.0), (29, -88.0)],
        "train_val_elbo_gap": [(9, 1.0), (19, 2.0)],
    }
    (written,) = draw.draw_all(tmp_path / "docs")
    assert written == folder.parent / "learning_curves.png" and written.is_file()


def test_a_model_keeps_its_colour_in_both_panels_when_another_lacks_the_gap():
    draw = load("tools/draw_learning_curves.py")
    with_gap = {"val/log_px": [(9, -90.0)], "train_val_elbo_gap": [(9, 1.0)]}
    curves = {"a": {"val/log_px": [(9, -91.0)]}, "b": with_gap, "c": dict(with_gap)}
    fig = draw.figure(curves, "toy")
    left, right = fig.axes
    colour = {line.get_label(): line.get_color() for line in left.get_lines()}
    assert len(set(colour.values())) == 3
    assert [line.get_label() for line in right.get_lines()] == ["b", "c"]
    for line in right.get_lines():
        assert line.get_color() == colour[line.get_label()]
    draw.plt.close(fig)
