"""Exclusive ``flock()`` locks on files, each naming its holder for the messages of whoever waits.

The kernel drops a lock when its holder dies (also on SIGKILL), so a killed process never leaves a
stale lock. On NFS, Linux clients implement flock() with the server's byte-range locks (NLM for
NFSv3, built into NFSv4), which every client sees; on a mount with ``nolock`` or ``local_lock=all``
a lock is only seen on the same host. Some filesystems refuse flock() with an OSError: callers
decide whether that is fatal (see :meth:`FileLock.acquire`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class FileLock:
    """An exclusive flock on ``path`` (created with its folder); its holder's
    "pid PID on host HOST since TIME" is written into the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "a process that has not written its name yet"
        except OSError:
            return "unknown"

    def acquire(self, wait: bool) -> bool:
        """Take the lock (blocking if ``wait``); False if another process holds it and not ``wait``.

        An OSError other than "held" (a filesystem without flock support) propagates.
        """
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        os.ftruncate(self.fd, 0)
        os.pwrite(
            self.fd,
            f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
            0,
        )
        return True

    def close(self, unlink: bool = False) -> None:
        if unlink:  # while still holding it: a waiter then re-checks what the lock protected
            self.path.unlink(missing_ok=True)
        os.close(self.fd)  # releases the lock


@contextmanager
def held_alone(path: str | os.PathLike, refused: Callable[[str], BaseException], unprotected: str) -> Iterator[None]:
    """Hold ``path``'s lock for the block; raise ``refused(holder)`` at once if another process holds it.

    On a filesystem that refuses flock() the block runs unlocked after a warning that ends with
    ``unprotected`` (what is then not refused).
    """
    lock = None
    try:
        lock = FileLock(path)
        held = lock.acquire(wait=False)
    except OSError as exc:
        if lock is not None:
            lock.close()
        log.warning("%s: cannot lock (%s): %s", path, exc.strerror or exc, unprotected)
        yield
        return
    if not held:
        holder = lock.holder()
        lock.close()
        raise refused(holder)
    try:
        yield
    finally:
        lock.close()


def is_locked(path: str | os.PathLike) -> bool | None:
    """Whether some process holds ``path``'s lock now (False if no such file; None where the filesystem cannot tell)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)
