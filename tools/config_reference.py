"""Write the configuration reference page, docs/reference/configuration.md, from ``conf/``.

Every command's config (the YAML files at the top of ``conf/``) and every option of every config
group (``conf/<group>/<option>.yaml``, nested groups included) becomes a table of its keys, each
with its default as written in the file and its description: the comment block directly above
the key, or the comment after it on its line. A comment block that opens a file describes the
option itself. A key without a comment of its own takes the description of the same key in
another option of its group, or in the group it sets (``trainer.max_epochs`` in an experiment is
``max_epochs`` of ``conf/trainer/``), or the same key in any file (``model.init`` of
``conf/model/``), or of ``vaelik-train``'s config; Hydra's own keys
(``_target_``, ``_partial_``, ``defaults``) are described once here. The page is generated,
never edited by hand:

    python tools/config_reference.py           # rewrite the page
    python tools/config_reference.py --check   # exit 1 if the page and conf/ disagree

``tests/test_docs.py`` runs the check, so an option added to ``conf/`` without regenerating the
page fails the tests.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGE = ROOT / "docs" / "reference" / "configuration.md"

KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>\+?[A-Za-z_][\w.\-/@]*|\"[^\"]+\"):(?P<rest>.*)$")
INLINE_COMMENT = re.compile(r"\s+#\s?(?P<text>.*)$")

#: each command's own config, relative to conf/ (the deadline example has a tree of its own)
COMMANDS = {
    "vaelik-train": "train.yaml",
    "vaelik-eval": "eval.yaml",
    "vaelik-convergence": "convergence.yaml",
    "vaelik-results": "results.yaml",
    "vaelik-bdmc": "bdmc.yaml",
    "vaelik-deadline": "deadline/deadline.yaml",
}


#: Hydra's own keys, the same in every file
HYDRA_KEYS = {
    "_target_": "the class (or function) this config builds",
    "_partial_": "built as a function that still takes its remaining arguments",
    "defaults": "the options this config composes, in order",
}


@dataclass
class Entry:
    """One key of a config file: its dotted path, its default as written, its description."""

    path: str
    default: str
    description: str


@dataclass
class ConfigFile:
    """A config file's description (its opening comment block) and its keys in file order."""

    description: str
    entries: list[Entry] = field(default_factory=list)


def read_config_file(path: Path) -> ConfigFile:
    """Parse ``path``'s keys, defaults and comments (see the module's docstring)."""
    lines = path.read_text().splitlines()
    values = yaml.safe_load("\n".join(lines)) or {}
    opening: list[str] = []
    position = 0
    while position < len(lines) and lines[position].lstrip().startswith("#"):
        text = lines[position].strip().lstrip("#").strip()
        if not text.startswith("@package"):
            opening.append(text)
        position += 1
    config = ConfigFile(description=" ".join(opening))
    pending: list[str] = []
    stack: list[tuple[int, str]] = []
    for line in lines[position:]:
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:  # a list item or a continuation: part of the value above
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match["key"].strip('"')
        stack.append((indent, key))
        inline = INLINE_COMMENT.search(match["rest"])
        description = " ".join([*pending, inline["text"]] if inline else pending)
        pending = []
        keys = [name for _, name in stack]
        value = lookup(values, keys)
        if isinstance(value, dict) and value and not description:
            continue  # a mapping without a comment of its own: its keys carry the information
        config.entries.append(Entry(".".join(keys), shown(value), description))
    return config


def lookup(values: dict, keys: list[str]):
    for key in keys:
        values = values[key]
    return values


def shown(value) -> str:
    """A default as a reader would type it on the command line; a defaults list as the
    choices it makes (``group=option``)."""
    if isinstance(value, dict) and value:
        return "(below)"
    if (
        isinstance(value, list)
        and value
        and all(item == "_self_" or isinstance(item, dict) for item in value)
    ):
        choices = [item for item in value if isinstance(item, dict)]
        return ", ".join(
            f"{key}={'null' if option is None else option}"
            for item in choices
            for key, option in item.items()
        )
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(config: ConfigFile) -> list[str]:
    if not config.entries:
        return ["(no keys)", ""]
    lines = ["| key | default | description |", "| --- | --- | --- |"]
    for entry in config.entries:
        default = f"`{cell(entry.default)}`" if entry.default else ""
        lines.append(f"| `{entry.path}` | {default} | {cell(entry.description)} |")
    return [*lines, ""]


def group_folders() -> list[Path]:
    """Every folder of ``conf/`` that holds options, nested groups included, sorted."""
    return sorted(
        folder
        for folder in CONF.rglob("*")
        if folder.is_dir() and any(folder.glob("*.yaml")) and folder.name != "__pycache__"
    )


def group_options() -> dict[str, list[Path]]:
    """Each group's option files (command configs excluded), by the group's path in conf/."""
    commands = {CONF / name for name in COMMANDS.values()}
    groups = {
        folder.relative_to(CONF).as_posix(): sorted(set(folder.glob("*.yaml")) - commands)
        for folder in group_folders()
    }
    return {group: options for group, options in groups.items() if options}


def describe_missing(configs: dict[tuple[str, str], ConfigFile]) -> None:
    """Give every key without a comment the description found for it elsewhere (see the
    module's docstring), in place; ``configs`` maps (group, option) to its parsed file, the
    commands under the group ``""``."""
    known: dict[tuple[str, str], str] = {}
    for (group, _), config in configs.items():
        for entry in config.entries:
            if entry.description:
                known.setdefault((group, entry.path), entry.description)
    by_path: dict[str, str] = {}
    for (_, path), description in known.items():
        by_path.setdefault(path, description)
    train = ("", "vaelik-train")
    for (group, _), config in configs.items():
        for entry in config.entries:
            if entry.description:
                continue
            head, _, rest = entry.path.partition(".")
            entry.description = (
                known.get((group, entry.path))
                or known.get((head, rest))
                or by_path.get(entry.path)
                or next((e.description for e in configs[train].entries if e.path == entry.path), "")
                or HYDRA_KEYS.get(entry.path.rsplit(".", 1)[-1], "")
            )


def chosen_groups(tree: str = "") -> set[str]:
    """The groups some command's defaults list chooses (``estimator@ais`` is ``estimator``),
    for vaelik-train's tree or, with ``tree``, for ``conf/<tree>/``'s own command. Any other
    group is added on the command line with ``+`` (``+sweep=paper_ablation``)."""
    names = [name for name in COMMANDS.values() if name.rpartition("/")[0] == tree]
    groups = set()
    for name in names:
        for item in yaml.safe_load((CONF / name).read_text()).get("defaults", []):
            if isinstance(item, dict):
                key = next(iter(item)).removeprefix("override ").lstrip("/")
                groups.add(key.partition("@")[0])
    return groups


def render() -> str:
    configs = {("", command): read_config_file(CONF / name) for command, name in COMMANDS.items()}
    groups = group_options()
    for group, options in groups.items():
        configs.update({(group, path.stem): read_config_file(path) for path in options})
    describe_missing(configs)
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by tools/config_reference.py from conf/: do not edit by hand -->",
        "",
        "Every key of every config in `conf/`, with its default as written there and its",
        "comment. Set a key on the command line (`vaelik-train trainer.max_epochs=50`), choose an",
        "option of a group by name (`vaelik-train prior=vampprior`), and add a key a config does",
        "not have with `+` (`+trainer.max_time=00:01:00:00`). `${...}` is an interpolation: the",
        "value of another key, resolved when the config is composed. `???` must be given.",
        "A group that no command chooses by default is added with `+` too",
        "(`vaelik-train -m +sweep=paper_ablation`); its options are listed that way below.",
        "",
        "## Commands",
        "",
    ]
    for command, name in COMMANDS.items():
        config = configs[("", command)]
        lines += [f"### {command}", "", f"`conf/{name}`. {config.description}", ""]
        lines += table(config)
    lines += ["## Config groups", ""]
    trees = {group.rpartition("/")[0] for group in groups}
    chosen = {tree: chosen_groups(tree) for tree in trees}  # each command's YAML read once
    for group, options in groups.items():
        tree, _, choice_group = group.rpartition("/")  # deadline/proposal: vaelik-deadline's
        heading = f"{choice_group} (vaelik-{tree})" if tree else group
        names = ", ".join(f"`{path.stem}`" for path in options)
        lines += [f"### {heading}", "", f"Options: {names}.", ""]
        added = "" if choice_group in chosen[tree] else "+"
        for path in options:
            config = configs[(group, path.stem)]
            lines += [f"#### `{added}{choice_group}={path.stem}`", ""]
            if config.description:
                lines += [config.description, ""]
            lines += table(config)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python tools/config_reference.py")
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
