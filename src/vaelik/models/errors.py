"""The error every layer raises when two choices cannot work together."""

from __future__ import annotations


class UnsupportedCombinationError(ValueError):
    """Two configured parts cannot be combined (e.g. a proposal that must score latents it did
    not draw, with a guide that cannot). Raised before any training or estimation starts; the
    message names both choices, says why, and what to choose instead."""
