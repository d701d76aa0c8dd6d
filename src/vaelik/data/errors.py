"""The error raised when a dataset's files are missing and cannot be downloaded."""


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are missing and could not be downloaded; the message says what to do."""
