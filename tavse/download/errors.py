"""What goes wrong in a download: :class:`DownloadError` (retrying will not fix it) and its kinds
:class:`ChecksumError` and :class:`AccessDenied` (which stops the whole run); :class:`Interrupted`
(a download thread asked to stop)."""


class DownloadError(RuntimeError):
    """A download failed in a way that retrying will not fix (auth, 404, bad response)."""


class ChecksumError(DownloadError):
    """A completed download does not match its published size or hash."""


class AccessDenied(DownloadError):
    """HTTP 401/403: no file of the run can succeed, so the whole run stops."""


class Interrupted(Exception):
    """A download thread was asked to stop (Ctrl-C, SIGTERM, or a fatal error in another thread)."""
