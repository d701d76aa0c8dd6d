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
