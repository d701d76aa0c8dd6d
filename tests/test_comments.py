"""Comments and docstrings explain the code as it is, with nothing outside the repository.

The history of a change and its measurements belong in CHANGELOG.md; the documentation in docs/.
A comment of ``src/vaelik`` or ``conf`` may not name the machine something was measured on, a
date, "an earlier session", a file outside the repository, or equations and sections of a
document that is not in it. Only comments and docstrings are read: a string that is code (an
error message, a default) is not.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: what no comment or docstring may say, each with the reason given on failure
FORBIDDEN = (
    (re.compile(r"AMD\s+EPYC|\bXeon\b|development\s+machine", re.IGNORECASE), "a machine"),
    (re.compile(r"\b20\d\d-\d\d-\d\d\b"), "a date"),
    (re.compile(r"\ban\s+earlier\s+session\b", re.IGNORECASE), "a session"),
    (re.compile(r"\.\./shared|\bPERFORMANCE\b|\bDESIGN\.md\b"), "a file outside the repository"),
    (re.compile(r"\bseed\s+eq\b|\bthe\s+seed's\b", re.IGNORECASE), "a document not in it"),
)

#: nodes whose docstring ``ast.get_docstring`` reads
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

#: a YAML comment: ``#`` at the start of a line or after a space, to the end of the line
YAML_COMMENT = re.compile(r"(?:^|\s)#(.*)$")


def python_comments(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and every module, class and function docstring."""
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, DOCUMENTED):
            continue
        docstring = ast.get_docstring(node, clean=False)
        if docstring is None:
            continue
        first = node.body[0].lineno
        found.extend((first + i, line) for i, line in enumerate(docstring.splitlines()))
    return sorted(found)


def yaml_comments(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment of a YAML file."""
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        match = YAML_COMMENT.search(line)
        if match:
            found.append((number, match.group(1)))
    return found


def offences(path: Path, comments: list[tuple[int, str]]) -> list[str]:
    """``path:line: text (what it names)`` for every comment that names something forbidden.
    A phrase broken over two consecutive lines (of a docstring or a comment block) is seen whole
    and reported at its first line."""
    lines = []
    for (number, text), (next_number, following) in pairwise([*comments, (0, "")]):
        if next_number != number + 1:
            following = ""
        joined = f"{text.strip()} {following.strip().lstrip('#').strip()}"
        for pattern, what in FORBIDDEN:
            match = pattern.search(joined)
            if match and match.start() <= len(text.strip()):
                lines.append(f"{path}:{number}: {text.strip()}  ({what}: {match.group(0)!r})")
                break
    return lines


def scan(root: Path) -> list[str]:
    """Every offence in ``root``'s ``src/vaelik/**/*.py`` and ``conf/**/*.yaml``."""
    found = []
    for path in sorted((root / "src" / "vaelik").rglob("*.py")):
        relative = path.relative_to(root)
        found += offences(relative, python_comments(path.read_text(encoding="utf-8")))
    for path in sorted((root / "conf").rglob("*.yaml")):
        relative = path.relative_to(root)
        found += offences(relative, yaml_comments(path.read_text(encoding="utf-8")))
    return found


def test_comments_name_nothing_outside_the_code():
    found = scan(ROOT)
    assert not found, (
        "comments and docstrings must explain the code, not its history or the machine it was "
        "measured on (that goes in CHANGELOG.md), and refer to nothing outside the repository "
        "(point to docs/ instead):\n" + "\n".join(found)
    )


def test_the_scan_reads_comments_and_docstrings_only(tmp_path):
    module = tmp_path / "src" / "vaelik" / "planted.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        '"""A module (seed eq. 10)."""\n'
        "\n"
        "DATE = '2026-11-30'  # measured on the development\n"
        "# machine\n"
        "\n"
        "\n"
        "def f():\n"
        '    """Timed on an AMD EPYC."""\n'
        "    return 'AMD EPYC, an earlier session, ../shared'\n"
    )
    config = tmp_path / "conf" / "planted.yaml"
    config.parent.mkdir()
    config.write_text("# see PERFORMANCE.md\nkey: 'the seed\\'s 128'\ncolour: '#fff'\n")
    found = scan(tmp_path)
    assert [line.split("  (")[0] for line in found] == [
        "src/vaelik/planted.py:1: A module (seed eq. 10).",
        "src/vaelik/planted.py:3: # measured on the development",
        "src/vaelik/planted.py:8: Timed on an AMD EPYC.",
        "conf/planted.yaml:1: see PERFORMANCE.md",
    ]
