"""Only the project's own components may be built from a checkpoint's stored config.

``vaelik-eval``, ``vaelik-convergence`` and ``vaelik-results`` rebuild a model from the config
inside a checkpoint file, a file that may come from anyone. ``hydra.utils.instantiate`` calls
whatever a ``_target_`` names, so a crafted config (``_target_: torch.load`` with
``weights_only: false``, ``builtins.open`` with mode ``w``) would run code or truncate files.
Every ``_target_`` in the stored ``data``, ``likelihood`` and ``model`` sections is therefore
checked, before anything is instantiated, against an allow-list: the data sources and the
datamodule that ``vaelik.data`` exports, and the ``torch.nn.Module`` and likelihood-head
classes defined under ``vaelik.models``. Anything else is a
:class:`~vaelik.errors.CheckpointError`, and so is any interpolation (``${...}``): a stored
config is resolved when it is written, and a resolver could read the environment or create
folders.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch import nn

import vaelik.data
from vaelik.errors import CheckpointError, ConfigError
from vaelik.models.likelihoods.base import LikelihoodHead

DATA_CLASSES = frozenset(
    f"vaelik.data.{name}"
    for name in vaelik.data.__all__
    if inspect.isclass(getattr(vaelik.data, name))
    and not issubclass(getattr(vaelik.data, name), BaseException)
)
MODEL_PACKAGE = "vaelik.models."
SECTIONS = ("data", "likelihood", "model")


def nodes(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every ``(config path, value)`` at or below ``node``, containers included (pre-order)."""
    yield where, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from nodes(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from nodes(value, f"{where}[{index}]")


def located(target: str) -> Any:
    """What ``target`` (``module.name``) names: attribute ``name`` of the module, importing
    only that module; None where there is no such module or attribute."""
    module_name, _, name = target.rpartition(".")
    if not module_name or not name.isidentifier():
        return None
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None


def is_component_class(found: Any) -> bool:
    """A ``torch.nn.Module`` or likelihood-head class."""
    return inspect.isclass(found) and issubclass(found, (nn.Module, LikelihoodHead))


def is_model_component(target: str) -> bool:
    """A class defined in a ``vaelik.models`` module that is a ``torch.nn.Module`` or a
    likelihood head. Only the module named by the prefix is imported (importing vaelik modules
    has no side effect)."""
    if not target.startswith(MODEL_PACKAGE):
        return False
    found = located(target)
    return is_component_class(found) and found.__module__.startswith(MODEL_PACKAGE)


def in_packages(target: str, packages: Sequence[str]) -> bool:
    """Whether ``target`` names, at the path where it is defined, a model component class
    (``torch.nn.Module`` or likelihood head) defined inside one of ``packages``: ``mypkg``
    allows ``mypkg.models.MyVAE``, not ``mypkg_evil.X``, and not ``mypkg.models.os.system`` or
    ``mypkg.models.torch.load`` (objects a trusted module merely imports). The module the path
    names is imported: the user trusted that package."""
    if not any(target.startswith(f"{package}.") for package in packages):
        return False
    found = located(target)
    return is_component_class(found) and f"{found.__module__}.{found.__qualname__}" == target


def check_trusted_config(
    config: Mapping[str, Any], path: object, trusted_packages: Sequence[str] = ()
) -> None:
    """Raise ``CheckpointError`` if the stored config of the checkpoint at ``path`` names any
    ``_target_`` outside the allow-list (see the module's docstring), or outside
    ``trusted_packages``: the user's explicit opt-in on the command line
    (``trusted_packages=[mypackage]``, never read from a checkpoint), for their own classes."""
    for package in trusted_packages:
        if not str(package).isidentifier() and not all(
            part.isidentifier() for part in str(package).split(".")
        ):
            raise ConfigError(
                f"trusted_packages holds {package!r}, which is not a package name: give "
                "importable names, e.g. trusted_packages=[mypackage]"
            )
    for where, text in nodes(config, "config"):
        if not (isinstance(text, str) and "${" in text):
            continue
        raise CheckpointError(
            f"{path}: its stored config holds an interpolation at {where} ({text!r}); vaelik "
            "stores resolved configs, so this checkpoint was altered. Use only checkpoints from "
            "vaelik-train."
        )
    for section in SECTIONS:
        for where, target in nodes(config.get(section), section):
            if not where.endswith("._target_") or (
                isinstance(target, str)
                and (
                    target in DATA_CLASSES
                    or is_model_component(target)
                    or in_packages(target, trusted_packages)
                )
            ):
                continue
            raise CheckpointError(
                f"{path}: its stored config sets {where} to {target!r}, which is not "
                "one of vaelik's data sources or model components, so it is not built. A "
                "checkpoint can run code through its config: use only checkpoints from "
                "vaelik-train or from yourself; for your own model classes, opt in on the "
                "command line with trusted_packages=[their top-level package]."
            )
    check_structure(config, path)
    check_schema(config, path, trusted_packages)


#: settings of a data source that decide whether and from where vaelik downloads (and so
#: writes): never taken from a checkpoint; the command line decides (``download=true``)
WRITE_SETTINGS = ("download", "base_url")
#: Hydra's own keys a stored config may hold (``_args_`` would pass unnamed arguments: refused)
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_")


def target_class(target: str) -> type:
    """The class a vetted ``_target_`` names (vaelik's own, or a trusted package's)."""
    found = located(target)
    assert inspect.isclass(found), target
    return found


def check_structure(config: Mapping[str, Any], path: object) -> None:
    """Raise ``CheckpointError`` where the stored config lacks what a vaelik run stores: a
    ``data`` section with a ``source``, and a ``model`` and a ``likelihood``, each built from a
    ``_target_``."""
    for where in ("data", "data.source", "model", "likelihood"):
        node: Any = config
        for key in where.split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        if not (isinstance(node, Mapping) and isinstance(node.get("_target_"), str)):
            raise CheckpointError(
                f"{path}: its stored config has no {where} with a _target_, which every run of "
                "vaelik-train stores: the checkpoint was altered or comes from another program"
            )


def check_schema(config: Mapping[str, Any], path: object, trusted_packages: Sequence[str]) -> None:
    """Raise ``CheckpointError`` naming the key where a stored ``_target_`` node carries a
    setting its class does not take (its constructor's parameters are its schema; ``_args_``,
    unnamed arguments, is never taken), for the classes of ``trusted_packages`` too."""
    for section in SECTIONS:
        for where, node in nodes(config.get(section), section):
            target = node.get("_target_") if isinstance(node, Mapping) else None
            if not isinstance(target, str):
                continue
            parameters = inspect.signature(target_class(target)).parameters
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            allowed = (set(parameters) if not takes_any else set(node) - {"_args_"}) | set(
                HYDRA_KEYS
            )
            for key in node:
                if key not in allowed:
                    raise CheckpointError(
                        f"{path}: its stored config sets {where}.{key}, which {target} does not "
                        "take, so this checkpoint was altered or comes from another program; it "
                        "is not built. Use only checkpoints from vaelik-train."
                    )


def without_write_settings(
    config: dict[str, Any], download: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``config`` whose data source downloads nothing and from nowhere the checkpoint
    chose: its stored ``download`` and ``base_url`` are dropped (the class's own mirror, always
    checked against the published digests) and ``download`` is ``download``, the command line's
    choice. Also returns what was ignored, as ``key=value`` texts."""
    cleaned = copy.deepcopy(config)
    ignored = []
    source = cleaned.get("data", {}).get("source")
    if isinstance(source, dict):
        for key in WRITE_SETTINGS:
            if key in source:
                value = source.pop(key)
                if not (key == "download" and value is False):
                    ignored.append(f"data.source.{key}={value!r}")
        parameters = inspect.signature(target_class(source["_target_"])).parameters
        if "download" in parameters:
            source["download"] = download
    return cleaned, ignored
