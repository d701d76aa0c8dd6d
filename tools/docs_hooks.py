"""MkDocs hooks: tables in the docs are read from CSV files when the site is built.

A page writes, on a line of its own,

- ``{{ csv_table("results/accuracy_2d.csv") }}``: the CSV file (a path under ``docs/``) as a
  markdown table, its header row as the table's header and every cell as written;
- ``{{ results_table("results/binarized_mnist/results.csv") }}``: a ``results.csv`` written by
  ``vaelik-results``, shown as the ``results.md`` that ``vaelik-results`` writes beside it.

So a figure lives in one file, the CSV, and a page cannot show another. A missing file or an
unknown directive fails the build.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

#: a directive on a line of its own (the line break after it stays, so text below is a paragraph)
DIRECTIVE = re.compile(r'^\{\{\s*(\w+)\("([^"]+)"\)\s*\}\}[ \t]*$', re.MULTILINE)


def csv_table(path: Path) -> str:
    """The CSV file at ``path`` as a markdown table."""
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(path: Path) -> str:
    """A ``vaelik-results`` table, formatted by vaelik itself."""
    from vaelik.evaluation.table import markdown_table, read_rows

    return markdown_table(read_rows(path))


RENDERERS = {"csv_table": csv_table, "results_table": results_table}


def expand(markdown: str, docs_dir: Path) -> str:
    """``markdown`` with every directive replaced by its table."""

    def table(match: re.Match[str]) -> str:
        name, relative = match.groups()
        if name not in RENDERERS:
            raise ValueError(f"unknown docs directive {name!r}; use one of {sorted(RENDERERS)}")
        path = docs_dir / relative
        if not path.is_file():
            raise FileNotFoundError(f"{match.group(0)}: no file {path}")
        return RENDERERS[name](path)

    return DIRECTIVE.sub(table, markdown)


def on_page_markdown(markdown, page, config, files):  # MkDocs hook: the page's text, expanded
    return expand(markdown, Path(config["docs_dir"]))
