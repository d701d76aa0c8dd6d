"""Entry points (console scripts). Nothing in the library imports this package."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vaelik.config import config_dir
from vaelik.errors import ConfigError, VaelikError, user_error_in

#: exit status of a command stopped by a user error (Hydra's own errors exit with 1)
USER_ERROR_EXIT = 2


def run_hydra_app(
    task: Callable[[DictConfig], Any], config_name: str, config_path: str | None = None
) -> Any:
    """Compose ``config_name`` from the config tree (or ``config_path``) with the command line's
    overrides and run ``task`` on it as a Hydra application (multirun, sweeps, run folders).

    A :class:`~vaelik.errors.VaelikError` (bad value, missing data, incompatible head, bad
    checkpoint) is printed as one message and the command exits with status 2; with
    ``HYDRA_FULL_ERROR=1`` it keeps its whole traceback, as every other exception does."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    command = f"vaelik-{config_name}"
    try:
        check_output_folders(sys.argv[1:])
        path = config_path or config_dir()
    except VaelikError as error:
        if full_traceback_wanted():
            raise
        exit_with_message(command, error)
    return hydra.main(version_base="1.3", config_path=path, config_name=config_name)(
        reporting_user_errors(task, command)
    )()


#: the command-line keys that name folders Hydra creates before the task runs
OUTPUT_FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_output_folders(arguments: list[str]) -> None:
    """Raise a ConfigError where a run or sweep folder given on the command line cannot be made
    because one of its parents is a file (Hydra would fail with its own traceback)."""
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key.lstrip("+") not in OUTPUT_FOLDER_KEYS or not value or "${" in value:
            continue
        for parent in [Path(value), *Path(value).parents]:
            if parent.exists() and not parent.is_dir():
                raise ConfigError(
                    f"{key}={value}: {parent} is a file, not a folder, so the run folder cannot "
                    f"be made there: choose another {key}"
                )


def reporting_user_errors(
    task: Callable[[DictConfig], Any], command: str
) -> Callable[[DictConfig], Any]:
    """``task``, with a user error (itself or the cause of what it raised) turned into one
    message and exit status 2, unless ``HYDRA_FULL_ERROR=1`` asks for tracebacks. In a multirun
    the message is printed and the error raised on, so that Hydra marks that job failed and
    goes on with the others."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as error:
            user_error = user_error_in(error)
            if user_error is None or full_traceback_wanted():
                raise
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                print_message(command, user_error)
                raise
            exit_with_message(command, user_error)

    return run


def user_named(key: str, value: str | None = None) -> bool:
    """Whether the command line sets config key ``key`` or anything under it (``proposal=...``,
    ``proposal.df=3``, ``+proposal.x=...``), to ``value`` where one is given: what the user
    asked for, as opposed to a default."""
    if not HydraConfig.initialized():
        return False
    for override in HydraConfig.get().overrides.task:
        name, _, given = override.lstrip("+~").partition("=")
        if (name == key or name.startswith(key + ".")) and value in (None, given):
            return True
    return False


def full_traceback_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def print_message(command: str, error: VaelikError) -> None:
    """The error as one line, on standard error, from the first process only (DDP, torchrun)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0:
        print(f"{command}: error: {error}", file=sys.stderr)
        print("(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)


def exit_with_message(command: str, error: VaelikError) -> NoReturn:
    print_message(command, error)
    sys.exit(USER_ERROR_EXIT)
