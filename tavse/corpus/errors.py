"""The one exception type for bad corpus input, with a stable reason code for skip counts."""

from __future__ import annotations


class BadInput(Exception):
    """A corpus item is unusable. ``reason`` is a short code counted in reports."""

    def __init__(self, reason: str, path: str, message: str):
        self.reason = reason
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message} [{reason}]")

    def __reduce__(self):
        # Pickled across processes (ingest workers): rebuilt from the three fields, not from
        # ``args`` (one formatted string), which ``__init__`` could not take.
        return (type(self), (self.reason, self.path, self.message))
