"""The config tree as Hydra composes it: its folder, the OmegaConf resolvers it uses, and
:func:`build`, which instantiates a composed section (the commands' and the training's path).

Where the tree lives, and its option files read without Hydra or OmegaConf (what the Python API
needs), are :mod:`vaelik.options`.
"""

from __future__ import annotations

import itertools
import math
import os
from datetime import datetime
from typing import Any

from omegaconf import OmegaConf

from vaelik.errors import SettingError, user_error_in
from vaelik.options import config_tree


def config_dir() -> str:
    """Absolute path of the config tree (:func:`vaelik.options.config_tree`:
    ``$VAELIK_CONFIG_DIR``, else the installed package's copy, else the checkout's ``conf/``),
    with the ``vaelik.*`` resolvers the tree uses registered, so that Hydra can compose it."""
    register_resolvers()
    return str(config_tree())


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


def build(node: Any, section: str = "", **settings: Any) -> Any:
    """``instantiate(node, **settings)`` of a composed config section (Hydra, imported here:
    the commands' path, not the library's); a user error raised by a constructor is raised as
    itself (not wrapped by Hydra), a bad setting's named under ``section``."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **settings)
    except Exception as error:
        found = user_error_in(error)
        if isinstance(found, SettingError):
            raise found.under(section) from None
        if found is not None:
            raise found from None
        raise
