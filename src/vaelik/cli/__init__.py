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
from omegaconf import DictConfig

from vaelik.config import config_dir
from vaelik.errors import VaelikError

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
    try:
        path = config_path or config_dir()
    except VaelikError as error:
        exit_with_message(error)
    return hydra.main(version_base="1.3", config_path=path, config_name=config_name)(
        reporting_user_errors(task)
    )()


def reporting_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """``task``, with a user error (anywhere in the chain of causes of what it raised) turned
    into one message and exit status 2, unless ``HYDRA_FULL_ERROR=1`` asks for tracebacks."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as error:
            user_error = user_error_in(error)
            if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            exit_with_message(user_error)

    return run


def user_error_in(error: BaseException) -> VaelikError | None:
    """The first :class:`VaelikError` among ``error`` and its causes (Hydra's ``instantiate``
    wraps what a constructor raised in an ``InstantiationException``), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, VaelikError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def exit_with_message(error: VaelikError) -> NoReturn:
    command = Path(sys.argv[0]).name or "vaelik"
    print(f"{command}: error: {error}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)
