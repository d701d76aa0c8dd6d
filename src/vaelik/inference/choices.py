"""Estimators and proposals by the names the configs use, with the configs' defaults.

``make_estimator("ais", num_steps=100)`` builds what ``estimator=ais estimator.num_steps=100``
builds on the command line: the settings of ``conf/estimator/ais.yaml``, changed by the given
ones. The configs are the one source of defaults (the classes read theirs from them too, see
:func:`vaelik.options.option_defaults`).
"""

from __future__ import annotations

import importlib
from typing import Any

from vaelik.errors import ConfigError
from vaelik.inference.estimators import LogWeightEstimator
from vaelik.inference.proposals import Proposal, is_plain
from vaelik.options import config_tree, option_config, option_names


def from_option(group: str, name: str, settings: dict[str, Any], /) -> Any:
    """The object of ``<group>/<name>.yaml`` in the config tree in use (``VAELIK_CONFIG_DIR``,
    else the shipped one, as for the commands) with ``settings`` replacing its own."""
    config = option_config(group, name, config_tree())
    unknown = sorted(set(settings) - set(config) - {"seed"})
    if unknown:
        known = ", ".join(sorted(key for key in config if key != "_target_"))
        raise ConfigError(
            f"{group} {name!r} has no setting {unknown[0]!r}: its settings are {known or 'none'}"
        )
    if "seed" in config:
        config["seed"] = settings.pop("seed", 0)
    objects = {key: value for key, value in settings.items() if not is_plain(value)}
    for key, value in settings.items():
        if key not in objects:
            config[key] = value
    return construct(config, **objects)


def construct(node: Any, **objects: Any) -> Any:
    """The object an option file's node describes: a mapping with ``_target_`` (a class's
    dotted path) is that class called with its other keys, built first where they are nodes
    too, and with ``objects``; lists are built item by item; anything else is itself. Option
    files come from vaelik's config tree (or ``VAELIK_CONFIG_DIR``), never from a checkpoint."""
    if isinstance(node, dict) and "_target_" in node:
        module, _, name = str(node["_target_"]).rpartition(".")
        target = getattr(importlib.import_module(module), name)
        settings = {key: construct(value) for key, value in node.items() if key != "_target_"}
        return target(**settings, **objects)
    if isinstance(node, list):
        return [construct(item) for item in node]
    return node


def make_estimator(name: str, /, **settings: Any) -> LogWeightEstimator:
    """The estimator ``estimator=<name>`` builds (``ais``, ``importance``, ``prior``,
    ``quadrature``), with ``settings`` replacing the config's (``seed`` 0 unless given)."""
    return from_option("estimator", name, settings)


def make_proposal(name: str, /, **settings: Any) -> Proposal:
    """The proposal ``proposal=<name>`` builds (``defensive``, ``encoder``, ``inflated``,
    ``prior``, ``refined``, ``student_t``), with ``settings`` replacing the config's."""
    return from_option("proposal", name, settings)


def estimator_names() -> list[str]:
    """The names :func:`make_estimator` (and ``estimator=`` everywhere) accepts: the option
    files of ``conf/estimator/`` in the config tree in use, sorted."""
    return option_names("estimator", config_tree())


def proposal_names() -> list[str]:
    """The names :func:`make_proposal` (and ``proposal=`` everywhere) accepts: the option files
    of ``conf/proposal/`` in the config tree in use, sorted."""
    return option_names("proposal", config_tree())
