"""Where the Hydra config tree lives and the OmegaConf resolvers it uses.

The config tree is the top-level ``conf/`` folder of the repository (the only place defaults
live). A wheel carries a copy of it inside the package (``vaelik/conf``, put there by
``setup.py``), so an installed vaelik finds its configs from any directory. ``VAELIK_CONFIG_DIR``
points elsewhere: a private config tree, or an edited copy of the packaged one.
"""

from __future__ import annotations

import itertools
import math
import os
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from vaelik.errors import ConfigError

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # in an installed wheel
CHECKOUT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"  # editable install, checkout


def config_dir() -> str:
    """Absolute path of the config tree: ``$VAELIK_CONFIG_DIR``, else the installed package's
    copy, else the checkout's ``conf/``. Registers the ``vaelik.*`` resolvers the tree uses, so
    that it can be composed."""
    register_resolvers()
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
    return str(path)


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
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(config, dict)
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


def register_resolvers() -> None:
    """Register the ``vaelik.*`` resolvers used by interpolations in ``conf/`` (idempotent).

    - ``${vaelik.mul:a,b,...}``: product of integers, e.g. the encoder's ``2 * latent_dim`` outputs.
    - ``${vaelik.dlm_channels:C,K}``: decoder channels of a K-component logistic mixture.
    - ``${vaelik.prod:list}``: product of a list, e.g. the number of dimensions ``D = C * H * W``.
    - ``${vaelik.sum:a,b,...}``: sum of integers, e.g. IAF's ``2 * latent_dim + context`` outputs.
    - ``${vaelik.new_dir:parent}``: a run folder of its own under ``parent`` (see
      :func:`new_run_dir`); cached per config, so one run resolves it once.
    """
    if not OmegaConf.has_resolver("vaelik.mul"):
        OmegaConf.register_new_resolver("vaelik.mul", lambda *xs: math.prod(int(x) for x in xs))
    if not OmegaConf.has_resolver("vaelik.dlm_channels"):
        OmegaConf.register_new_resolver(
            "vaelik.dlm_channels",
            lambda c, k: int(k) * (1 + 2 * int(c) + int(c) * (int(c) - 1) // 2),
        )
    if not OmegaConf.has_resolver("vaelik.sum"):
        OmegaConf.register_new_resolver("vaelik.sum", lambda *xs: sum(int(x) for x in xs))
    if not OmegaConf.has_resolver("vaelik.prod"):
        OmegaConf.register_new_resolver("vaelik.prod", lambda xs: math.prod(int(x) for x in xs))
    if not OmegaConf.has_resolver("vaelik.new_dir"):
        OmegaConf.register_new_resolver("vaelik.new_dir", new_run_dir, use_cache=True)


def new_run_dir(parent: str) -> str:
    """Create and return ``parent/<date_time>`` (``..._2``, ``..._3``, ... if taken): the folder
    is made with ``os.mkdir``, which fails if it exists, so two runs started in the same second
    never share a folder (and overwrite each other's checkpoints and results)."""
    os.makedirs(parent, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in itertools.count(1):
        path = os.path.join(parent, stamp if attempt == 1 else f"{stamp}_{attempt}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")
