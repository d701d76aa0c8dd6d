"""The errors a user can fix: each message names the problem and the fix.

The command-line entry points print such an error as one message and exit with status 2; any
other exception is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of
these too (see :func:`vaelik.cli.run_hydra_app`). Each class also derives from the built-in
error a caller would expect (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations


class VaelikError(Exception):
    """An error in what the user asked for (config, data, checkpoint), not in vaelik."""


class ConfigError(VaelikError, ValueError):
    """A configured value is impossible (K < 1, a negative scale, an unknown choice)."""


class SettingError(ConfigError):
    """One setting has an impossible value. The message names the setting as the object that
    checks it knows it (``num_samples``); whoever built that object from a config section adds
    the section's key with :meth:`under` (``ais.num_samples``), so the error names the key the
    user actually set, in Python and on the command line alike."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem

    def under(self, section: str) -> SettingError:
        """The same error for the setting inside config section ``section``."""
        return SettingError(f"{section}.{self.setting}" if section else self.setting, self.problem)


class UnsupportedCombinationError(VaelikError, ValueError):
    """Two configured parts cannot be combined (e.g. a proposal that must score latents it did
    not draw, with a guide that cannot). Raised before any training or estimation starts; the
    message names both choices, says why, and what to choose instead."""


class IncompatibleDataError(VaelikError, ValueError):
    """A likelihood head was paired with data it cannot model."""


class DataNotFoundError(VaelikError, FileNotFoundError):
    """A dataset's files are missing and could not be downloaded; the message says what to do."""


class CheckpointError(VaelikError, ValueError):
    """A checkpoint is missing, unreadable, or does not match the model it should restore."""


class NonFiniteError(VaelikError, FloatingPointError):
    """A model produced NaN or an infinite density where an estimate needs finite numbers."""


def user_error_in(error: BaseException) -> VaelikError | None:
    """``error`` if it is a :class:`VaelikError`, else the first one among its explicit causes
    (``raise ... from``: Hydra's ``instantiate`` wraps what a constructor raised that way), else
    None. An error raised while another was being handled is not a user error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, VaelikError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None
