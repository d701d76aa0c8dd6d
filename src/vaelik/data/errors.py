"""The error raised when a dataset's files are missing and cannot be downloaded."""


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk and could not be downloaded; the message says how to fix it."""
