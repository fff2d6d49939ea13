"""What a run shows and leaves behind as it goes: sizes, rates and ETAs, its progress, its state file, its lock.

* :class:`Progress`: tqdm bars on a terminal and, when stderr is not a terminal (SLURM, nohup),
  plain log lines every ``--progress-every`` seconds: per active file bytes, rate and ETA, then
  the totals;
* :class:`StateFile`: ``OUT/download-state.json``: the files the run selected (names, remote
  sizes, hashes), and every ``--progress-every`` seconds the bytes received and the rate; what
  ``--status`` reads (:func:`read_state`);
* :func:`folder_lock`: ``OUT/.download.lock`` (``flock``): one download per folder at a time.

Rates and ETAs: the rate is the bytes received over the last 5 minutes (:data:`RATE_WINDOW_S`;
since the start while the run is younger), so it follows a changing link speed without jumping
on every chunk; an ETA is the bytes still missing divided by that rate (a file's own ETA uses
the file's own rate over the same window).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tavse.common.locks import held_alone, is_locked
from tavse.download.errors import DownloadError
from tavse.download.files import RemoteFile, file_status, local_bytes
from tavse.download.secrets import redact

log = logging.getLogger("tavse.download")

STATE_NAME = "download-state.json"
LOCK_NAME = ".download.lock"
RATE_WINDOW_S = 300.0
DEFAULT_PROGRESS_EVERY = 30.0


# --------------------------------------------------------------------------- formatting


def fmt_bytes(n: float | None) -> str:
    """``1234567`` -> ``1.23 MB`` (decimal units, as disks and the Hub's file pages count)."""
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def fmt_rate(bps: float | None) -> str:
    """Bytes per second as ``48.2 MB/s`` (``?`` when unknown)."""
    if bps is None:
        return "? MB/s"
    return f"{bps / 1e6:.1f} MB/s" if bps >= 1e6 else f"{bps / 1e3:.1f} kB/s"


def fmt_duration(seconds: float | None) -> str:
    """``5400`` -> ``1h30m``; ``125`` -> ``2m05s``; ``None`` -> ``?``."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def eta(remaining: int, rate: float | None) -> float | None:
    """Seconds to fetch ``remaining`` bytes at ``rate`` bytes/s (None when the rate is unknown)."""
    if remaining <= 0:
        return 0.0
    return remaining / rate if rate and rate > 0 else None


# --------------------------------------------------------------------------- progress and the state file


class RateWindow:
    """Bytes/s over the last ``window`` seconds from (time, cumulative bytes) samples."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, t: float, total: int) -> None:
        self.samples.append((t, total))
        while len(self.samples) > 2 and self.samples[1][0] <= t - self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None


@dataclass
class _Active:
    remote: RemoteFile
    bytes: int  # in the part now
    received: int = 0  # by this run
    window: RateWindow = field(default_factory=RateWindow)


class Progress:
    """Shared progress of one run: bytes per active file, totals, the rate window, log lines, state writes.

    Worker threads report bytes (:meth:`add_bytes`); a ticker thread samples the counters every
    ``every`` seconds, writes ``download-state.json`` (:class:`StateFile`) and, in ``log`` mode, logs
    one line per active file and a totals line. In ``bar`` mode the tqdm bars show progress instead.
    """

    def __init__(
        self,
        remotes: Sequence[RemoteFile],
        out_dir: Path,
        *,
        mode: str = "log",
        every: float = DEFAULT_PROGRESS_EVERY,
        state: StateFile | None = None,
    ) -> None:
        self.remotes = list(remotes)
        self.out_dir = out_dir
        self.bars = mode == "bar"
        self.every = every
        self.state = state
        self.lock = threading.Lock()
        self.active: dict[str, _Active] = {}
        self.complete = {r.name for r in remotes if file_status(out_dir, r).state == "complete"}
        self.base = {r.name: local_bytes(out_dir, r) for r in remotes}  # bytes on disk per file, updated as files move
        self.received = 0
        self.t0 = time.monotonic()
        self.window = RateWindow()
        self.window.add(self.t0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- called by download threads
    def begin(self, remote: RemoteFile, offset: int) -> None:
        with self.lock:
            a = _Active(remote, offset)
            a.window.add(time.monotonic(), 0)
            self.active[remote.name] = a
            self.base[remote.name] = offset

    def set_bytes(self, name: str, n: int) -> None:
        with self.lock:
            if name in self.active:
                self.active[name].bytes = n
            self.base[name] = n

    def add_bytes(self, name: str, k: int) -> None:
        with self.lock:
            self.received += k
            if name in self.active:
                self.active[name].bytes += k
                self.active[name].received += k
            self.base[name] = self.base.get(name, 0) + k

    def end(self, name: str) -> None:
        with self.lock:
            self.active.pop(name, None)

    def completed(self, name: str) -> None:
        with self.lock:
            self.complete.add(name)

    # -- totals
    def totals(self) -> tuple[int, int, int]:
        """(bytes on disk of the selected files, bytes of the known sizes, files of unknown size)."""
        with self.lock:
            done = sum(min(self.base.get(r.name, 0), r.size or self.base.get(r.name, 0)) for r in self.remotes)
        known = sum(r.size for r in self.remotes if r.size is not None)
        return done, known, sum(r.size is None for r in self.remotes)

    def rate(self) -> float | None:
        with self.lock:
            return self.window.rate()

    def lines(self) -> list[str]:
        """The progress lines of this moment: one per active file, then the totals."""
        now = time.monotonic()
        out = []
        with self.lock:
            self.window.add(now, self.received)
            active = sorted(self.active.values(), key=lambda a: a.remote.name)
            for a in active:
                a.window.add(now, a.received)
        for a in active:
            size = a.remote.size
            pct = f" ({100 * a.bytes / size:.1f}%)" if size else ""
            r = a.window.rate()
            out.append(
                f"progress: {a.remote.name} {fmt_bytes(a.bytes)} of {fmt_bytes(size)}{pct}, {fmt_rate(r)}, "
                f"ETA {fmt_duration(eta((size or 0) - a.bytes, r)) if size else '?'}"
            )
        done, known, unknown = self.totals()
        r = self.rate()
        pct = f" ({100 * done / known:.1f}%)" if known else ""
        extra = f" + {unknown} file(s) of unknown size" if unknown else ""
        out.append(
            f"progress: total {fmt_bytes(done)} of {fmt_bytes(known)}{extra}{pct}, "
            f"{len(self.complete)}/{len(self.remotes)} files complete, {len(active)} active, {fmt_rate(r)} "
            f"(last {fmt_duration(min(now - self.t0, RATE_WINDOW_S))}), ETA {fmt_duration(eta(known - done, r))}"
        )
        return out

    def tick(self) -> None:
        """Sample, log the progress lines (log mode) and update the state file."""
        lines = self.lines()
        if not self.bars:
            for line in lines:
                log.info("%s", line)
        if self.state is not None:
            self.state.update_run(
                received_bytes=self.received,
                rate_bytes_per_s=self.rate(),
                elapsed_s=round(time.monotonic() - self.t0, 3),
            )

    # -- the ticker thread
    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.every):
                try:
                    self.tick()
                except OSError as exc:  # a full disk must not kill the downloads through the ticker
                    log.warning("progress: %s", exc)

        self._thread = threading.Thread(target=loop, name="download-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class StateFile:
    """``OUT/download-state.json``: what the current (or last) run selected, and how it is going.

    Written atomically, under a lock (the main thread and the progress ticker both write). It is
    what ``--status`` reads besides the manifest and the files: the remote sizes of the files not
    downloaded yet, and the last logged rate. Not a corpus file: the stages never read it.
    """

    def __init__(
        self,
        out_dir: Path,
        corpus: str,
        source: dict,
        remotes: Sequence[RemoteFile],
        jobs: int,
        secrets: Sequence[str | None] = (),
        every: float = DEFAULT_PROGRESS_EVERY,
    ) -> None:
        self.path = out_dir / STATE_NAME
        self.lock = threading.Lock()
        self.secrets = [s for s in secrets if s]
        self.data: dict[str, Any] = {
            "format": 1,
            "corpus": corpus,
            "source": dict(source),
            "files": [
                {
                    k: v
                    for k, v in (("name", r.name), ("size", r.size), ("sha256", r.sha256), ("md5", r.md5))
                    if v is not None
                }
                for r in remotes
            ],
            "run": {
                "state": "running",
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "jobs": jobs,
                "started": round(time.time(), 3),
                "updated": round(time.time(), 3),
                "received_bytes": 0,
                "rate_bytes_per_s": None,
                "rate_window_s": RATE_WINDOW_S,
                "progress_every_s": every,
            },
        }
        self.write()

    def write(self) -> None:
        text = redact(json.dumps(self.data, indent=2, sort_keys=True) + "\n", self.secrets)
        tmp = self.path.with_name(f".{STATE_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)

    def update_run(self, **values: object) -> None:
        with self.lock:
            self.data["run"].update(values, updated=round(time.time(), 3))
            self.write()


def read_state(out_dir: Path) -> dict | None:
    """The folder's ``download-state.json``, or None if absent or unreadable (a warning says which)."""
    path = out_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("%s: unreadable (%s), ignored", path, exc)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        log.warning("%s: no file list, ignored", path)
        return None
    return data


def folder_lock(out_dir: Path) -> contextlib.AbstractContextManager:
    """``OUT/.download.lock`` held with ``flock`` for a run: one download per folder at a time.

    On filesystems without ``flock`` support (some NFS mounts) a warning says the folder is not
    protected and the run goes on.
    """
    path = out_dir / LOCK_NAME
    return held_alone(
        path,
        lambda holder: DownloadError(
            f"{out_dir}: another download into this folder is running ({holder}, holding {path}); "
            f"wait for it to end (`--status` shows its progress) or stop it, then run again"
        ),
        "a second download into this folder would not be refused",
    )


def folder_locked(out_dir: Path) -> bool | None:
    """Whether a download holds ``OUT/.download.lock`` now (None where the filesystem cannot tell)."""
    return is_locked(out_dir / LOCK_NAME)
