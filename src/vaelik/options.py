"""The config tree's option files, ``conf/<group>/<option>.yaml``, read without Hydra.

The config tree is the top-level ``conf/`` folder of the repository (the only place defaults
live). A wheel carries a copy of it inside the package (``vaelik/conf``, put there by
``setup.py``), so an installed vaelik finds its configs from any directory. ``VAELIK_CONFIG_DIR``
points elsewhere: a private config tree, or an edited copy of the packaged one.

This module is the one loader of option files: the classes read their constructor defaults from
it (:func:`option_defaults`), and :func:`vaelik.make_estimator` / :func:`vaelik.make_proposal`
build objects from it. It reads YAML with PyYAML alone, so that ``import vaelik`` and
``vaelik.estimate`` load neither Hydra nor OmegaConf; the commands compose the same files with
Hydra (:mod:`vaelik.config`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from vaelik.errors import ConfigError

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # in an installed wheel
CHECKOUT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"  # editable install, checkout


def config_tree() -> Path:
    """Absolute path of the config tree in use: ``$VAELIK_CONFIG_DIR``, else the installed
    package's copy, else the checkout's ``conf/``."""
    override = os.environ.get("VAELIK_CONFIG_DIR")
    if override:
        path = Path(override).resolve()
    elif (PACKAGED_CONFIG_DIR / "train.yaml").is_file():
        path = PACKAGED_CONFIG_DIR
    else:
        path = CHECKOUT_CONFIG_DIR
    if not (path / "train.yaml").is_file():
        where = " (from VAELIK_CONFIG_DIR)" if override else ""
        raise ConfigError(
            f"vaelik's config tree was not found at {path}{where}: no train.yaml there. "
            "Point VAELIK_CONFIG_DIR at a folder holding train.yaml and eval.yaml, or reinstall "
            "vaelik (`pip install .` ships the tree inside the package)."
        )
    return path


def shipped_config_dir() -> Path:
    """The config tree vaelik ships (the package's copy, else the checkout's ``conf/``),
    whatever ``VAELIK_CONFIG_DIR`` says: the one source of the defaults of the Python API."""
    return (
        PACKAGED_CONFIG_DIR
        if (PACKAGED_CONFIG_DIR / "train.yaml").is_file()
        else (CHECKOUT_CONFIG_DIR)
    )


def option_names(group: str, tree: Path | None = None) -> list[str]:
    """The options of config group ``group`` (``estimator`` -> ``['ais', 'importance', ...]``)
    in the config ``tree`` (default: the shipped one)."""
    return sorted(path.stem for path in ((tree or shipped_config_dir()) / group).glob("*.yaml"))


def option_config(group: str, option: str, tree: Path | None = None) -> dict:
    """The settings of ``<tree>/<group>/<option>.yaml`` (default: the shipped tree) as written,
    unresolved (interpolations such as ``${seed}`` stay text). A ConfigError lists the options
    for an unknown name."""
    path = (tree or shipped_config_dir()) / group / f"{option}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown {group} {option!r}: choose one of {', '.join(option_names(group, tree))}"
        )
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds no settings: an option file is a mapping of keys")
    return config


def option_defaults(group: str, option: str) -> dict:
    """The default settings that ``conf/<group>/<option>.yaml`` gives its class: every key but
    ``_target_`` and those that refer to the run's config (``seed: ${seed}``). Classes read their
    constructor defaults from here, so the configs and the Python API cannot disagree."""
    return {
        key: value
        for key, value in option_config(group, option).items()
        if key != "_target_" and not (isinstance(value, str) and "${" in value)
    }


class OptionLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-3`` as a number (YAML 1.1, which PyYAML
    follows, wants ``1.0e-3``), as Hydra's loader does, so both read a config file alike."""


OptionLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> Any:
    """The content of the YAML file ``path``, interpolations (``${seed}``) left as text."""
    with open(path) as handle:
        return yaml.load(handle, Loader=OptionLoader)
