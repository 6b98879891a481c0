"""The one exception type for bad input data: its message names the file and what is wrong."""


class DataError(ValueError):
    """Raised for unreadable, inconsistent or non-finite input data."""
