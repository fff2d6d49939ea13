"""Resumable, verified downloads of the two corpora TAVSE reads, each recorded in a manifest.

* ``speakingfaces``: ``image_audio/sub_{id}_ia.zip`` of the gated HuggingFace dataset
  ``issai/Speaking_Faces`` (6.6-8.0 GB per speaker, about 1 TB for all 142), saved as
  ``OUT/sub_{id}_ia.zip``.
* ``demand``: the DEMAND noise zips of Zenodo record 1227121 (open access, no account), checked
  against Zenodo's MD5s.

``OUT`` is the folder ``params.yaml`` points at (``data.speakingfaces_dir`` / ``data.demand_dir``).
Besides the archives it holds ``manifest.json`` (:mod:`tavse.corpus.manifest`): the source (Hub
repo, endpoint, requested revision and the commit it resolved to; or the Zenodo record) and per
archive its path, size and hashes. It is rewritten atomically after each completed file, so a
killed download leaves a valid manifest of the files that are complete. The stages read the
archive list from it.

Both corpora go through one engine (:func:`download_file`): bytes stream into ``<name>.part`` with
HTTP ``Range`` resume (across retries *and* across runs), the finished part is checked against the
remote size and hash (MD5 from Zenodo; SHA-256 from the Hub's ``X-Linked-Etag`` for LFS/Xet
files), then renamed atomically. A final file therefore only ever exists complete and verified.

A run into ``OUT``:

* checks first that the filesystem of ``OUT`` has room for the bytes still missing (the remote
  sizes less what is already on disk, ``.part`` files included), and refuses with needed vs free
  otherwise (``--skip-space-check`` where quotas or reporting make that check wrong);
* holds ``OUT/.download.lock`` (``flock``): a second download into the same folder is refused;
* downloads ``--jobs N`` archives at once, each on its own connection and still resumable and
  verified; the manifest has one writer (:class:`ManifestRecorder`: entries from any thread,
  each write atomic and serialised);
* writes ``OUT/download-state.json``: the files this run selected (names, remote sizes, hashes),
  and every ``--progress-every`` seconds the bytes received and the rate. ``--status`` reads only
  that, the manifest and the files on disk: no network (:func:`folder_status`);
* reports progress as tqdm bars on a terminal and, when stderr is not a terminal (SLURM, nohup),
  as plain log lines every ``--progress-every`` seconds: per active file bytes, rate and ETA, then
  the totals.

Rates and ETAs: the rate is the bytes received over the last 5 minutes (:data:`RATE_WINDOW_S`;
since the start while the run is younger), so it follows a changing link speed without jumping
on every chunk; an ETA is the bytes still missing divided by that rate (a file's own ETA uses
the file's own rate over the same window).

The Hub is spoken to with plain ``requests``: the revision (branch, tag or commit; ``--revision``,
``$TAVSE_HF_REVISION`` or ``.env``, default ``main``) is resolved once to a commit with
``{endpoint}/api/datasets/{repo}/revision/{revision}``, and every file comes from the documented
resolve URL of that one commit, ``{endpoint}/datasets/{repo}/resolve/{commit}/{path}``, with
``Authorization: Bearer``; not with ``huggingface_hub.hf_hub_download``: that function (2.x)
writes into a process-unique temporary file that it deletes on failure, so an interrupted 7 GB
download restarts from zero. The endpoint is ``--endpoint``, else ``$HF_ENDPOINT``, else
``https://huggingface.co``; DEMAND's Zenodo is ``$TAVSE_ZENODO_ENDPOINT`` (default
``https://zenodo.org``), or ``--record-url`` / ``--base-url``.

The token (``HF_TOKEN`` env, a ``.env`` file, or the huggingface CLI's token file) is never
printed: every message that leaves this module goes through :func:`redact`. It is only sent over
``https://``, or over plain ``http://`` to this machine (a loopback address, for local test
servers): :func:`check_token_transport` refuses anything else before the first request.

CLI::

    python -m tavse.download speakingfaces --out DIR [--speakers 1-10,121] [--revision REV] [--jobs N] [--status] [--verify]
    python -m tavse.download demand --out DIR [--envs DKITCHEN,SCAFE] [--jobs N] [--status] [--verify]
    python -m tavse.download manifest DIR [--corpus speakingfaces|demand]   # archives obtained elsewhere
    python -m tavse.download verify DIR                                     # re-hash against the manifest
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests
from tqdm import tqdm

from tavse.common.locks import held_alone, is_locked
from tavse.corpus import manifest as mf

log = logging.getLogger(__name__)

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_REPO = "issai/Speaking_Faces"
HF_DEFAULT_REVISION = "main"
REVISION_ENV = "TAVSE_HF_REVISION"
N_SPEAKERS = 142
ZENODO_ENDPOINT_ENV = "TAVSE_ZENODO_ENDPOINT"
ZENODO_DEFAULT_ENDPOINT = "https://zenodo.org"
ZENODO_RECORD = "1227121"
ZENODO_RECORD_URL = f"{ZENODO_DEFAULT_ENDPOINT}/api/records/{ZENODO_RECORD}"
ZENODO_FILES_URL = f"{ZENODO_DEFAULT_ENDPOINT}/records/{ZENODO_RECORD}/files"
# The 18 DEMAND environments (SCAFE exists only at 48 kHz): the default selection of an offline --status.
DEMAND_ENVS = (
    "DKITCHEN",
    "DLIVING",
    "DWASHING",
    "NFIELD",
    "NPARK",
    "NRIVER",
    "OHALLWAY",
    "OMEETING",
    "OOFFICE",
    "PCAFETER",
    "PRESTO",
    "PSTATION",
    "SCAFE",
    "SPSQUARE",
    "STRAFFIC",
    "TBUS",
    "TCAR",
    "TMETRO",
)
CHUNK = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
STATE_NAME = "download-state.json"
LOCK_NAME = ".download.lock"
RATE_WINDOW_S = 300.0
DEFAULT_PROGRESS_EVERY = 30.0


class DownloadError(RuntimeError):
    """A download failed in a way that retrying will not fix (auth, 404, bad response)."""


class ChecksumError(DownloadError):
    """A completed download does not match its published size or hash."""


class AccessDenied(DownloadError):
    """HTTP 401/403: no file of the run can succeed, so the whole run stops."""


class Interrupted(Exception):
    """A download thread was asked to stop (Ctrl-C, SIGTERM, or a fatal error in another thread)."""


@dataclass(frozen=True)
class RemoteFile:
    """One remote file: where to get it, where it goes (relative to the output folder), what to expect."""

    name: str  # path relative to the output folder, also used in messages
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    remote_path: str | None = None  # path on the server, where it differs from ``name``


@dataclass(frozen=True)
class FileStatus:
    """Local state of one file: ``complete``, ``partial`` or ``missing`` (``note``: anything odd)."""

    name: str
    state: str
    local_bytes: int
    remote_bytes: int | None
    note: str = ""


# --------------------------------------------------------------------------- secrets


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedactFilter(logging.Filter):
    """Logging filter that renders each record and masks the given secrets in it."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = redact(record.getMessage(), self.secrets)
            record.args = None
        return True


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines of a ``.env`` file (``export``, quotes and comments allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def env_setting(name: str, env_file: Path | None = Path(".env")) -> str | None:
    """``$name``, else ``name`` in ``env_file`` (empty values count as unset)."""
    return os.environ.get(name) or (read_dotenv(env_file).get(name) if env_file is not None else None) or None


def resolve_hf_token(env_file: Path | None = Path(".env")) -> str | None:
    """Token from ``$HF_TOKEN``, else ``HF_TOKEN`` in ``env_file``, else the huggingface CLI token file."""
    token = os.environ.get("HF_TOKEN")
    if not token and env_file is not None:
        token = read_dotenv(env_file).get("HF_TOKEN")
    if not token:
        hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        token_file = Path(os.environ.get("HF_TOKEN_PATH", hf_home / "token"))
        if token_file.is_file():
            token = token_file.read_text(encoding="utf-8").strip()
    return token or None


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token_transport(url: str, token: str | None, what: str = "--endpoint / HF_ENDPOINT") -> None:
    """Refuse to send ``token`` to ``url`` unless over ``https://`` or plain ``http://`` to a loopback host.

    Raises :class:`DownloadError` naming the URL (never the token) and what to change.
    """
    if not token:
        return
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and is_loopback_host(parts.hostname)):
        return
    raise DownloadError(
        f"{url}: refusing to send the HF token over plain {scheme or '?'}:// to {parts.hostname or '?'}, which is not "
        f"this machine: anyone on the way could read it. Use an https:// URL ({what}); plain http:// is accepted "
        "only for a loopback host (127.0.0.1, ::1, localhost), e.g. a local test server"
    )


def _guard_auth(url: str, headers: dict[str, str] | None) -> None:
    """Last check before a request that carries ``Authorization``: https, or http to loopback only."""
    auth = (headers or {}).get("Authorization", "")
    if auth:
        check_token_transport(url, auth.removeprefix("Bearer ").strip() or "token")


# --------------------------------------------------------------------------- HTTP engine


def part_path(dest: Path) -> Path:
    """The ``.part`` file a download of ``dest`` streams into."""
    return dest.with_name(dest.name + ".part")


def hash_file(path: Path, algorithm: str) -> str:
    """Hex digest of a file with ``hashlib.new(algorithm)``."""
    return mf.hash_file(path, (algorithm,))[algorithm]


def manifest_algorithms(remote: RemoteFile) -> tuple[str, ...]:
    """Hashes a manifest records for ``remote``: SHA-256 always, MD5 where the server publishes one."""
    return ("sha256", "md5") if remote.md5 else ("sha256",)


def verify(
    path: Path, remote: RemoteFile, *, what: str = "the partial download was deleted, run again to re-download"
) -> dict[str, str]:
    """Check a finished file against the remote size and hashes; return its digests (one read).

    Raises :class:`ChecksumError` naming the file; ``what`` says what happens next.
    """
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ChecksumError(f"{remote.name}: size {size} bytes, expected {remote.size}")
    digests = mf.hash_file(path, manifest_algorithms(remote))
    for algorithm, expected in (("md5", remote.md5), ("sha256", remote.sha256)):
        if expected and digests[algorithm] != expected.lower():
            raise ChecksumError(
                f"{remote.name}: {algorithm.upper()} mismatch (got {digests[algorithm]}, expected {expected}); {what}"
            )
    return digests


def http_error(status: int, name: str, gated_url: str | None) -> DownloadError:
    """A clear, token-free error for a non-retryable HTTP status."""
    if status in (401, 403) and gated_url:
        return AccessDenied(
            f"HTTP {status} for {name}: token missing or no access to the gated dataset; "
            f"accept the licence at {gated_url} and set HF_TOKEN (environment or .env)"
        )
    if status in (401, 403):
        return AccessDenied(f"HTTP {status} for {name}: access denied")
    if status == 404:
        return DownloadError(f"HTTP 404: {name} not found on the server")
    return DownloadError(f"HTTP {status} for {name}")


def backoff_sleep(attempt: int, backoff: float) -> None:
    """Sleep ``backoff * 2**attempt`` seconds, at most 60."""
    time.sleep(min(backoff * (2**attempt), 60.0))


def request_with_retries(
    session: requests.Session,
    method: str,
    url: str,
    name: str,
    *,
    headers: dict[str, str] | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    gated_url: str | None = None,
    allow_redirects: bool = True,
    timeout: float = 60.0,
) -> requests.Response:
    """Small metadata request, retried on connection errors and 408/429/5xx; raises on other errors."""
    _guard_auth(url, headers)
    for attempt in range(retries + 1):
        try:
            resp = session.request(
                method,
                url,
                headers=headers,
                allow_redirects=allow_redirects,
                timeout=timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == retries:
                raise DownloadError(
                    f"{name}: connection failed after {retries + 1} tries ({type(exc).__name__})"
                ) from None
            log.warning("%s: %s, retrying", name, type(exc).__name__)
            backoff_sleep(attempt, backoff)
            continue
        if resp.status_code in RETRYABLE_STATUS and attempt < retries:
            log.warning("%s: HTTP %d, retrying", name, resp.status_code)
            backoff_sleep(attempt, backoff)
            continue
        if resp.status_code >= 400:
            raise http_error(resp.status_code, name, gated_url)
        return resp
    raise AssertionError("unreachable")


def _content_range_start(value: str | None) -> int | None:
    """Start offset of a ``Content-Range: bytes a-b/n`` header."""
    match = re.match(r"bytes (\d+)-", value or "")
    return int(match.group(1)) if match else None


class FileBar:
    """Progress of one file: a tqdm bar (on a terminal) and the run's shared counters (:class:`Progress`)."""

    def __init__(
        self, remote: RemoteFile, progress: Progress | None = None, position: int | None = None, bars: bool = True
    ) -> None:
        self.remote = remote
        self.progress = progress
        self.n = 0
        self.bar = tqdm(
            total=remote.size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=remote.name,
            disable=None if bars else True,
            leave=False,
            position=position,
        )

    def set(self, n: int) -> None:
        """The part now holds ``n`` bytes (a resume offset, or 0 after a restart)."""
        self.n = n
        self.bar.n = n
        self.bar.refresh()
        if self.progress is not None:
            self.progress.set_bytes(self.remote.name, n)

    def update(self, k: int) -> None:
        self.n += k
        self.bar.update(k)
        if self.progress is not None:
            self.progress.add_bytes(self.remote.name, k)

    def close(self) -> None:
        self.bar.close()


def _stream_once(
    session: requests.Session,
    remote: RemoteFile,
    part: Path,
    headers: dict[str, str],
    gated_url: str | None,
    bar: FileBar,
    stop: threading.Event | None = None,
) -> None:
    """One GET into ``part``: resumes with ``Range`` from the part's size, restarts if the server ignores it."""
    offset = part.stat().st_size if part.exists() else 0
    req_headers = dict(headers)
    req_headers["Accept-Encoding"] = "identity"
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    _guard_auth(remote.url, req_headers)
    with session.get(remote.url, headers=req_headers, stream=True, timeout=60) as resp:
        if resp.status_code == 416 and offset and offset == remote.size:
            return
        if resp.status_code == 416:
            part.unlink()
            raise requests.ConnectionError("range not satisfiable, restarting from zero")
        if resp.status_code in RETRYABLE_STATUS:
            raise requests.ConnectionError(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise http_error(resp.status_code, remote.name, gated_url)
        if resp.status_code == 206 and _content_range_start(resp.headers.get("Content-Range")) == offset:
            mode = "ab"
        else:  # 200: the server sent the whole file
            if offset:
                log.info("%s: server ignored the Range request, restarting", remote.name)
            offset, mode = 0, "wb"
        bar.set(offset)
        with part.open(mode) as f:
            for chunk in resp.iter_content(CHUNK):
                if stop is not None and stop.is_set():
                    raise Interrupted(remote.name)
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())


def download_file(
    session: requests.Session,
    remote: RemoteFile,
    out_dir: Path,
    *,
    headers: dict[str, str] | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    gated_url: str | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    position: int | None = None,
) -> dict[str, str] | None:
    """Download one file into ``out_dir / remote.name``; return its digests, or None if it was already complete.

    Streams into ``.part`` (resuming a previous part), retries with exponential backoff while
    connections drop (the retry budget refills whenever bytes arrive), verifies size and hash,
    then renames atomically. A verification failure deletes the part and raises. The digests
    (SHA-256, and MD5 where the server publishes one) come from that verification's single read.
    ``progress`` collects the bytes for the run's rate, ETA and log lines; ``stop`` makes the
    download end (:class:`Interrupted`, the part kept for a resume) at its next chunk.
    """
    dest = out_dir / remote.name
    if dest.is_file() and (remote.size is None or dest.stat().st_size == remote.size):
        log.info("%s: complete, skipped", remote.name)
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    if part.exists() and remote.size is not None and part.stat().st_size > remote.size:
        part.unlink()
    failures = 0
    t0 = time.monotonic()
    first = part.stat().st_size if part.exists() else 0
    bar = FileBar(remote, progress, position, bars=progress is None or progress.bars)
    if progress is not None:
        progress.begin(remote, first)
    try:
        while True:
            before = part.stat().st_size if part.exists() else 0
            if remote.size is not None and before == remote.size:
                break
            try:
                _stream_once(session, remote, part, headers or {}, gated_url, bar, stop)
                after = part.stat().st_size if part.exists() else 0
                if remote.size is None or after == remote.size:
                    break
                raise requests.ConnectionError(f"connection closed at {after} of {remote.size} bytes")
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                after = part.stat().st_size if part.exists() else 0
                failures = 0 if after > before else failures + 1
                if failures > retries:
                    raise DownloadError(
                        f"{remote.name}: giving up after {retries + 1} failed tries at {after} bytes "
                        f"({type(exc).__name__}); run again to resume"
                    ) from None
                log.warning(
                    "%s: interrupted at %d bytes (%s), resuming",
                    remote.name,
                    after,
                    type(exc).__name__,
                )
                backoff_sleep(failures, backoff)
                if stop is not None and stop.is_set():
                    raise Interrupted(remote.name) from None
    finally:
        bar.close()
        if progress is not None:
            progress.end(remote.name)
    try:
        digests = verify(part, remote)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    got, took = dest.stat().st_size - first, time.monotonic() - t0
    log.info(
        "%s: downloaded and verified (%s in %s, %s)",
        remote.name,
        fmt_bytes(got),
        fmt_duration(took),
        fmt_rate(got / took if took > 0 else None),
    )
    return digests


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
        self.data = {
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


# --------------------------------------------------------------------------- free space


def local_bytes(out_dir: Path, remote: RemoteFile) -> int:
    """Bytes of ``remote`` already on disk: the complete file's size, else the ``.part``'s, else 0."""
    dest = out_dir / remote.name
    if dest.is_file() and (remote.size is None or dest.stat().st_size == remote.size):
        return dest.stat().st_size
    part = part_path(dest)
    if part.is_file() and (remote.size is None or part.stat().st_size <= remote.size):
        return part.stat().st_size
    return 0


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem that holds ``path`` (an existing folder)."""
    path = path.resolve()
    dev = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def check_free_space(out_dir: Path, remotes: Sequence[RemoteFile], hint: str = "") -> int:
    """Refuse (DownloadError: needed vs free) a run whose missing bytes do not fit on the filesystem of ``out_dir``.

    Needed = the remote sizes less the bytes already there (complete files, ``.part`` files).
    Returns the bytes needed. Files of unknown size count as 0 (the message says so).
    """
    need = sum(max(0, r.size - local_bytes(out_dir, r)) for r in remotes if r.size is not None)
    total = sum(r.size for r in remotes if r.size is not None)
    unknown = sum(r.size is None for r in remotes)
    usage = shutil.disk_usage(out_dir)
    todo = sum(1 for r in remotes if r.size is not None and local_bytes(out_dir, r) < r.size)
    if need > usage.free:
        extra = f", plus {unknown} file(s) of unknown size" if unknown else ""
        raise DownloadError(
            f"{out_dir}: not enough free space: {fmt_bytes(need)} still to download ({todo} of {len(remotes)} file(s); "
            f"{fmt_bytes(total - need)} of {fmt_bytes(total)} already on disk{extra}), but the filesystem of --out "
            f"(mounted at {mount_point(out_dir)}) has {fmt_bytes(usage.free)} free, {fmt_bytes(need - usage.free)} "
            f"short. Free space there, choose an --out on a larger filesystem, or select fewer files{hint}; "
            "--skip-space-check downloads anyway (it stops when the disk is full; rerun to resume)"
        )
    log.info(
        "%s: %s to download (%d file(s)), %s free on %s",
        out_dir,
        fmt_bytes(need),
        todo,
        fmt_bytes(usage.free),
        mount_point(out_dir),
    )
    return need


# --------------------------------------------------------------------------- manifest of a download


def open_manifest(out_dir: Path, corpus: str, source: dict, same: Sequence[str]) -> mf.Manifest:
    """The manifest a download into ``out_dir`` extends: the folder's own if it has the same source, else a new one.

    ``same`` names the source keys that must agree (the Hub commit, the Zenodo record): archives
    of two snapshots never share one manifest. Entries whose file is gone are dropped. The
    manifest is written at once, so the folder has one from the start.
    """
    path = mf.manifest_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        manifest = mf.Manifest(corpus, dict(source), [])
    else:
        manifest = mf.read_manifest(out_dir)
        old = manifest.source
        mismatch = [k for k in ("type", *same) if str(old.get(k, "")).lower() != str(source.get(k, "")).lower()]
        if manifest.corpus != corpus or mismatch:
            what = ", ".join(f"{k} {old.get(k)!r}" for k in ("type", *same) if k in old)
            want = ", ".join(f"{k} {source.get(k)!r}" for k in ("type", *same))
            hint = (
                f"pass --revision {old['commit']} to continue that snapshot, or "
                if corpus == "speakingfaces" and old.get("type") == "huggingface" and old.get("commit")
                else ""
            )
            raise DownloadError(
                f"{path}: the folder holds a {manifest.corpus} corpus of {what}, not {want}; {hint}download into "
                "another folder (or delete the manifest to record this folder anew: complete files are kept, re-hashed)"
            )
        manifest.source = dict(source)
        for entry in list(manifest.files):
            if not (out_dir / entry.path).is_file():
                log.warning("%s: listed in %s but gone, dropped from it", entry.path, path)
                manifest.files.remove(entry)
    mf.write_manifest(out_dir, manifest)
    return manifest


class ManifestRecorder:
    """The one writer of ``OUT/manifest.json`` during a download.

    Download threads hand it their finished entries; each :meth:`put` updates the in-memory
    manifest and rewrites the file atomically (:func:`mf.write_manifest`: temporary sibling,
    fsync, rename) under one lock, so writes never interleave and the file on disk is always a
    complete manifest of complete files. (Other processes are kept out by :func:`folder_lock`.)
    """

    def __init__(self, out_dir: Path, manifest: mf.Manifest) -> None:
        self.out_dir = out_dir
        self.manifest = manifest
        self.lock = threading.Lock()

    def get(self, path: str) -> mf.FileEntry | None:
        with self.lock:
            return self.manifest.by_path().get(path)

    def put(self, entry: mf.FileEntry) -> None:
        with self.lock:
            self.manifest.put(entry)
            mf.write_manifest(self.out_dir, self.manifest)

    def __len__(self) -> int:
        with self.lock:
            return len(self.manifest.files)


def fetch_and_record(
    session: requests.Session,
    remote: RemoteFile,
    out_dir: Path,
    recorder: ManifestRecorder,
    *,
    verify_existing: bool = False,
    **kwargs,
) -> Path:
    """Download ``remote`` (or skip it, if complete), add it to the manifest and rewrite that atomically.

    A file that was already complete keeps its manifest entry if the entry has its size;
    otherwise (or with ``verify_existing``) it is hashed and checked against the server's hashes
    and the manifest's.
    """
    dest = out_dir / remote.name
    digests = download_file(session, remote, out_dir, **kwargs)
    old = recorder.get(remote.name)
    size = dest.stat().st_size
    if digests is None and old is not None and old.size == size and old.sha256 and not verify_existing:
        entry = old
    else:
        if digests is None:
            log.info("%s: hashing the existing file", remote.name)
            digests = verify(
                dest, remote, what="the file was there before this run: delete it and run again to re-download"
            )
            for algorithm in ("sha256", "md5"):
                recorded = getattr(old, algorithm) if old is not None and old.size == size else None
                if recorded and recorded != digests[algorithm]:
                    raise ChecksumError(
                        f"{remote.name}: {algorithm.upper()} {digests[algorithm]}, but {mf.manifest_path(out_dir)} lists "
                        f"{recorded}; delete the file and run again to re-download"
                    )
        entry = mf.FileEntry(remote.name, size, digests["sha256"], digests.get("md5"), remote.remote_path)
    recorder.put(entry)
    return dest


@dataclass
class RunOptions:
    """How a run downloads: parallelism, progress reporting, retries, checks."""

    jobs: int = 1
    progress: str = "auto"  # auto | bar | log
    progress_every: float = DEFAULT_PROGRESS_EVERY
    retries: int = 5
    backoff: float = 1.0
    verify_existing: bool = False
    space_check: bool = True

    def progress_mode(self) -> str:
        if self.progress in ("bar", "log"):
            return self.progress
        return "bar" if sys.stderr.isatty() else "log"


def fetch_all(
    remotes: Sequence[RemoteFile],
    out_dir: Path,
    recorder: ManifestRecorder,
    progress: Progress,
    opts: RunOptions,
    fetch_kwargs: dict,
) -> list[Path]:
    """Download ``remotes`` with ``opts.jobs`` threads (each with its own HTTP session), recording each one.

    A file that fails (checksum, 404, retries exhausted) is reported and the others go on; the
    run then raises that error (several: one :class:`DownloadError` naming each). An
    :class:`AccessDenied`, an OS error (a full disk) or an interrupt stops every thread at its
    next chunk (parts kept for the resume) and is raised at once.
    """
    stop = threading.Event()
    local = threading.local()
    sessions: list[requests.Session] = []
    slots = collections.deque(range(max(1, opts.jobs)))
    slots_lock = threading.Lock()

    def one(remote: RemoteFile) -> Path:
        if stop.is_set():
            raise Interrupted(remote.name)
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with slots_lock:
                sessions.append(local.session)
                local.slot = slots.popleft() if slots else None
        path = fetch_and_record(
            local.session,
            remote,
            out_dir,
            recorder,
            verify_existing=opts.verify_existing,
            retries=opts.retries,
            backoff=opts.backoff,
            progress=progress,
            stop=stop,
            position=local.slot,
            **fetch_kwargs,
        )
        progress.completed(remote.name)
        return path

    failures: list[DownloadError] = []
    paths: dict[str, Path] = {}
    try:
        if opts.jobs <= 1:
            for r in remotes:
                try:
                    paths[r.name] = one(r)
                except AccessDenied:
                    raise
                except DownloadError as exc:
                    log.error("%s", exc)
                    failures.append(exc)
        else:
            with cf.ThreadPoolExecutor(max_workers=opts.jobs, thread_name_prefix="download") as pool:
                futures = {pool.submit(one, r): r for r in remotes}
                try:
                    for fut in cf.as_completed(futures):
                        r = futures[fut]
                        try:
                            paths[r.name] = fut.result()
                        except AccessDenied:
                            raise
                        except DownloadError as exc:
                            log.error("%s", exc)
                            failures.append(exc)
                except BaseException:
                    stop.set()
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        stop.set()
        for s in sessions:
            s.close()
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise DownloadError(
            f"{len(failures)} of {len(remotes)} file(s) failed: "
            + "; ".join(str(e) for e in failures)
            + "; the others are complete: run the same command again to retry the failed ones"
        )
    return [paths[r.name] for r in remotes]


def run_download(
    out_dir: Path,
    corpus: str,
    source: dict,
    remotes: Sequence[RemoteFile],
    recorder: ManifestRecorder,
    opts: RunOptions,
    fetch_kwargs: dict,
    *,
    secrets: Sequence[str | None] = (),
    space_hint: str = "",
) -> list[Path]:
    """The common part of a run once the remote files are known: space check, state file, threads, progress."""
    if opts.space_check:
        check_free_space(out_dir, remotes, space_hint)
    state = StateFile(out_dir, corpus, source, remotes, opts.jobs, secrets, opts.progress_every)
    progress = Progress(remotes, out_dir, mode=opts.progress_mode(), every=opts.progress_every, state=state)
    progress.start()
    outcome, message = "failed", ""
    try:
        paths = fetch_all(remotes, out_dir, recorder, progress, opts, fetch_kwargs)
        outcome = "finished"
        return paths
    except (KeyboardInterrupt, Interrupted):
        outcome = "interrupted"
        raise
    except Exception as exc:
        message = str(exc)
        raise
    finally:
        progress.stop()
        progress.tick()  # a last line (log mode) and the final counters in the state file
        state.update_run(state=outcome, **({"message": message} if message else {}))


# --------------------------------------------------------------------------- status (offline)


def file_status(out_dir: Path, remote: RemoteFile) -> FileStatus:
    """Whether ``remote`` is complete, partial (a ``.part`` or wrong-size file) or missing under ``out_dir``."""
    dest = out_dir / remote.name
    if dest.is_file():
        size = dest.stat().st_size
        state = "complete" if remote.size is None or size == remote.size else "partial"
        return FileStatus(remote.name, state, size, remote.size)
    part = part_path(dest)
    if part.is_file():
        return FileStatus(remote.name, "partial", part.stat().st_size, remote.size)
    return FileStatus(remote.name, "missing", 0, remote.size)


@dataclass
class FolderStatus:
    """What ``--status`` shows: per-file rows, totals, and the state of the current or last run."""

    out_dir: Path
    rows: list[FileStatus]
    run: dict | None  # the state file's "run"
    running: bool | None  # a download holds the folder's lock now (None: cannot tell)
    holder: str = ""  # "pid N on HOST" of the lock's holder, as it wrote it

    @property
    def done_bytes(self) -> int:
        return sum(r.local_bytes if r.remote_bytes is None else min(r.local_bytes, r.remote_bytes) for r in self.rows)

    @property
    def known_bytes(self) -> int:
        return sum(r.remote_bytes for r in self.rows if r.remote_bytes is not None)

    @property
    def missing_known_bytes(self) -> int:
        return sum(max(0, r.remote_bytes - r.local_bytes) for r in self.rows if r.remote_bytes is not None)


def speakingfaces_names(speakers: Sequence[int]) -> list[str]:
    """Local archive names of the given speakers."""
    return [f"sub_{s}_ia.zip" for s in speakers]


def demand_names(envs: Sequence[str] | None, known: Iterable[str] = ()) -> list[str]:
    """Local zip names of DEMAND environments without asking Zenodo: a name already known (the state
    file, the manifest) wins, else ``{ENV}_16k.zip`` (``SCAFE_48k.zip`` for SCAFE)."""
    known = sorted(set(known))
    out = []
    for item in envs if envs is not None else DEMAND_ENVS:
        if item.endswith(".zip"):
            out.append(item)
            continue
        env = item.upper()
        if env not in DEMAND_ENVS:
            raise DownloadError(f"DEMAND: unknown environment {item!r}; known: {', '.join(DEMAND_ENVS)}")
        have = [n for n in known if demand_env(n) == env]
        out.append(have[0] if have else f"{env}_48k.zip" if env == "SCAFE" else f"{env}_16k.zip")
    return out


def folder_status(out_dir: Path, corpus: str, names: Sequence[str] | None = None) -> FolderStatus:
    """The state of a download folder from its manifest, state file and files alone (no network).

    ``names``: the files to show; default: those the last run selected (state file) and those the
    manifest lists; if neither exists, every archive of the corpus. Remote sizes come from the
    state file (the last run's HEAD/record answers) or the manifest; unknown ones show as ``?``.
    """
    state = read_state(out_dir) if out_dir.is_dir() else None
    manifest = None
    if mf.manifest_path(out_dir).is_file():
        try:
            manifest = mf.read_manifest(out_dir)
        except mf.ManifestError as exc:
            log.warning("%s", exc)
    if state is not None and state.get("corpus") not in (None, corpus):
        raise DownloadError(f"{out_dir / STATE_NAME}: a {state.get('corpus')} download, not {corpus}")
    if manifest is not None and manifest.corpus != corpus:
        raise DownloadError(f"{mf.manifest_path(out_dir)}: describes a {manifest.corpus} corpus, not {corpus}")
    planned = {f["name"]: f.get("size") for f in (state or {}).get("files", []) if isinstance(f, dict) and "name" in f}
    listed = {e.path: e.size for e in (manifest.files if manifest else []) if mf.is_recording(corpus, e.path)}
    if names is None:
        names = sorted(set(planned) | set(listed), key=_name_order)
        if not names:
            names = speakingfaces_names(range(1, N_SPEAKERS + 1)) if corpus == "speakingfaces" else demand_names(None)
    rows = []
    for name in names:
        size = planned.get(name, listed.get(name))
        row = file_status(out_dir, RemoteFile(name, "", size))
        note = ""
        if row.state == "complete" and name not in listed and manifest is not None:
            note = "not in manifest.json yet (the next run hashes it)"
        elif row.state == "partial" and (out_dir / name).is_file():
            note = f"size differs from the expected {size} bytes"
        elif name in listed and row.state != "complete":
            note = "listed in manifest.json but not complete on disk"
        rows.append(FileStatus(row.name, row.state, row.local_bytes, row.remote_bytes, note))
    running = folder_locked(out_dir) if out_dir.is_dir() else False
    holder = ""
    if running:
        try:
            holder = (out_dir / LOCK_NAME).read_text(encoding="utf-8").strip()
        except OSError:
            holder = ""
    return FolderStatus(out_dir, rows, (state or {}).get("run"), running, holder)


def _name_order(name: str) -> tuple:
    m = re.fullmatch(r"sub_(\d+)_ia\.zip", name)
    return (0, int(m.group(1)), "") if m else (1, 0, name)


def format_status(rows: Sequence[FileStatus]) -> str:
    """A plain table of statuses with a summary line."""
    width = max((len(r.name) for r in rows), default=4)
    lines = [f"{'file':<{width}}  {'state':<8}  {'local':>12}  {'remote':>12}"]
    for r in rows:
        pct = f"  {100 * r.local_bytes / r.remote_bytes:5.1f}%" if r.state == "partial" and r.remote_bytes else ""
        note = f"  ({r.note})" if r.note else ""
        gb = lambda n: "?" if n is None else f"{n / 1e9:.3f} GB"
        lines.append(f"{r.name:<{width}}  {r.state:<8}  {gb(r.local_bytes):>12}  {gb(r.remote_bytes):>12}{pct}{note}")
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "partial", "missing")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def format_folder_status(st: FolderStatus, now: float | None = None) -> str:
    """The ``--status`` report: the table, totals (done/total GB, files), the run and an ETA.

    The ETA divides the bytes still missing (of the files whose size is known) by the rate the
    download logged last: bytes received over its last 5 minutes (since its start if younger),
    written to ``download-state.json`` every ``--progress-every`` seconds.
    """
    now = time.time() if now is None else now
    lines = [format_status(st.rows)]
    n = len(st.rows)
    n_complete = sum(r.state == "complete" for r in st.rows)
    unknown = sum(r.remote_bytes is None for r in st.rows)
    known = st.known_bytes
    pct = f" ({100 * st.done_bytes / known:.1f}%)" if known else ""
    unk = f"; {unknown} file(s) of unknown size (not downloaded or planned here yet)" if unknown else ""
    lines.append(
        f"total: {st.done_bytes / 1e9:.3f} of {known / 1e9:.3f} GB{pct}; {n_complete} of {n} file(s) complete{unk}"
    )
    run = st.run or {}
    rate = run.get("rate_bytes_per_s")
    missing = st.missing_known_bytes
    left = f"{missing / 1e9:.3f} GB left"
    when = run.get("updated")
    ago = f"{fmt_duration(max(0.0, now - when))} ago" if isinstance(when, (int, float)) else "at an unknown time"
    who = f"pid {run.get('pid')} on {run.get('host')}, --jobs {run.get('jobs')}" if run else ""
    at_rate = f"{fmt_duration(eta(missing, rate))} for the {left}"
    fresh = (
        run.get("state") == "running"
        and isinstance(when, (int, float))
        and now - when <= 3 * float(run.get("progress_every_s") or DEFAULT_PROGRESS_EVERY) + 5
    )
    if st.running is not True and fresh:
        # the state file is being updated, but the lock is not visible from here (another host on NFS)
        r = fmt_rate(rate) if rate else "no rate logged yet"
        lines.append(
            f"download: running by its state file ({who}; its lock is not visible from here); rate {r} "
            f"(logged {ago}); ETA {at_rate}"
        )
    elif st.running:
        if run and (not st.holder or st.holder.startswith(f"pid {run.get('pid')} on host {run.get('host')} ")):
            r = fmt_rate(rate) if rate else "no rate logged yet"
            lines.append(
                f"download: running ({who}); rate {r} over its last "
                f"{fmt_duration(run.get('rate_window_s', RATE_WINDOW_S))} (logged {ago}); ETA {at_rate}"
            )
        else:  # the lock's holder has not written its state yet: it is still listing the remote files
            lines.append(
                f"download: running ({st.holder or 'holder unknown'}); it has not written its state yet "
                "(still listing the remote files)"
            )
            if missing and rate:
                lines.append(f"ETA at the rate the run before logged ({fmt_rate(rate)}): {at_rate}")
    elif run:
        state = run.get("state", "?")
        if state == "running":  # the state file says running but nobody holds the lock: killed
            state = (
                "stopped without finishing (killed?)" if st.running is False else "running or killed (cannot tell here)"
            )
        msg = f": {run['message']}" if run.get("message") else ""
        lines.append(f"download: not running; the last run ({who}) {state}{msg}, updated {ago}")
        if missing and rate:
            lines.append(f"ETA at its last logged rate ({fmt_rate(rate)}): {at_rate}, once the download runs again")
    else:
        lines.append("download: no run recorded in this folder (no download-state.json)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- SpeakingFaces (HF)


def parse_speakers(spec: str) -> list[int]:
    """``"1-10,121"`` -> sorted unique speaker IDs, each in 1..142."""
    ids: set[int] = set()
    for item in spec.replace(" ", "").split(","):
        if not item:
            continue
        lo, _, hi = item.partition("-")
        first, last = int(lo), int(hi or lo)
        if not 1 <= first <= last <= N_SPEAKERS:
            raise ValueError(f"bad speaker range {item!r}: speakers are 1..{N_SPEAKERS}")
        ids.update(range(first, last + 1))
    return sorted(ids)


def speaker_path(speaker: int) -> str:
    """Repository path of one speaker's archive."""
    return f"image_audio/sub_{speaker}_ia.zip"


def resolve_revision(cli: str | None, env_file: Path | None = Path(".env")) -> str:
    """The Hub revision to download: ``--revision``, else ``$TAVSE_HF_REVISION``, else ``.env``, else ``main``."""
    return (
        cli
        or os.environ.get(REVISION_ENV)
        or (read_dotenv(env_file).get(REVISION_ENV) if env_file is not None else None)
        or HF_DEFAULT_REVISION
    )


def hf_revision_url(endpoint: str, repo: str, revision: str) -> str:
    """The Hub API URL that resolves a dataset revision (branch, tag or commit) to its commit."""
    return f"{endpoint.rstrip('/')}/api/datasets/{repo}/revision/{quote(revision, safe='')}"


def hf_resolve_commit(
    session: requests.Session,
    endpoint: str,
    repo: str,
    revision: str,
    token: str | None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
) -> str:
    """The commit SHA that ``revision`` of the dataset points at now (``sha`` of the Hub's revision API)."""
    resp = request_with_retries(
        session,
        "GET",
        hf_revision_url(endpoint, repo, revision),
        f"revision {revision!r} of {repo}",
        headers=hf_auth_headers(token),
        retries=retries,
        backoff=backoff,
        gated_url=hf_gated_url(endpoint, repo),
    )
    try:
        sha = resp.json()["sha"]
    except (ValueError, KeyError, TypeError):
        raise DownloadError(f"revision {revision!r} of {repo}: the Hub's answer has no commit sha") from None
    if not isinstance(sha, str) or not COMMIT_RE.fullmatch(sha):
        raise DownloadError(f"revision {revision!r} of {repo}: bad commit sha {sha!r} from the Hub")
    if COMMIT_RE.fullmatch(revision) and revision != sha:
        raise DownloadError(f"revision {revision!r} of {repo}: the Hub resolved it to another commit, {sha}")
    log.info("%s revision %s is commit %s", repo, revision, sha)
    return sha


def hf_resolve_url(endpoint: str, repo: str, revision: str, path: str) -> str:
    """The Hub's documented file URL for a dataset file."""
    return f"{endpoint.rstrip('/')}/datasets/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


def hf_gated_url(endpoint: str, repo: str) -> str:
    """Page where the dataset's licence is accepted."""
    return f"{endpoint.rstrip('/')}/datasets/{repo}"


def hf_auth_headers(token: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` header, or nothing without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def hf_remote_file(
    session: requests.Session,
    endpoint: str,
    repo: str,
    revision: str,
    path: str,
    token: str | None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
) -> RemoteFile:
    """HEAD the resolve URL (no redirect) for size and SHA-256 (``X-Linked-Size``/``X-Linked-Etag``).

    ``revision`` should be a commit (:func:`hf_resolve_commit`); a file the Hub serves from
    another commit (``X-Repo-Commit``) is refused. The local name is the file name of ``path``.
    """
    url = hf_resolve_url(endpoint, repo, revision, path)
    headers = {**hf_auth_headers(token), "Accept-Encoding": "identity"}
    gated = hf_gated_url(endpoint, repo)
    resp = request_with_retries(
        session,
        "HEAD",
        url,
        path,
        headers=headers,
        retries=retries,
        backoff=backoff,
        gated_url=gated,
        allow_redirects=False,
    )
    # follow same-host redirects (renamed repos) until the Hub answers for the file itself
    for _ in range(5):
        if not resp.is_redirect or "X-Linked-Size" in resp.headers:
            break
        location = urljoin(url, resp.headers["Location"])
        if not location.startswith(endpoint.rstrip("/")):
            break
        url = location
        resp = request_with_retries(
            session,
            "HEAD",
            url,
            path,
            headers=headers,
            retries=retries,
            backoff=backoff,
            gated_url=gated,
            allow_redirects=False,
        )
    size = resp.headers.get("X-Linked-Size") or (None if resp.is_redirect else resp.headers.get("Content-Length"))
    etag = (resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or "").removeprefix("W/").strip('"')
    served = resp.headers.get("X-Repo-Commit")
    if served and COMMIT_RE.fullmatch(revision) and served != revision:
        raise DownloadError(f"{path}: the Hub serves it from commit {served}, not the requested {revision}")
    return RemoteFile(
        name=path.rsplit("/", 1)[-1],
        url=url,
        size=int(size) if size else None,
        sha256=etag if SHA256_RE.fullmatch(etag) else None,
        remote_path=path,
    )


def speakingfaces_files(
    session: requests.Session,
    speakers: Sequence[int],
    endpoint: str,
    repo: str,
    revision: str,
    token: str | None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[RemoteFile]:
    """Remote metadata of the selected speakers' archives (``revision``: a commit)."""
    return [
        hf_remote_file(
            session,
            endpoint,
            repo,
            revision,
            speaker_path(s),
            token,
            retries=retries,
            backoff=backoff,
        )
        for s in speakers
    ]


def hf_source(endpoint: str, repo: str, revision: str, commit: str) -> dict:
    """The ``source`` of a SpeakingFaces manifest."""
    return {
        "type": "huggingface",
        "repo": repo,
        "endpoint": endpoint.rstrip("/"),
        "revision": revision,
        "commit": commit,
    }


def move_legacy_layout(out_dir: Path) -> int:
    """Move archives (and parts) of the earlier ``OUT/image_audio/`` layout up into ``OUT``; return how many."""
    legacy = out_dir / "image_audio"
    moved = 0
    if legacy.is_dir():
        for p in sorted(legacy.iterdir()):
            if re.fullmatch(r"sub_\d+_ia\.zip(\.part)?", p.name) and not (out_dir / p.name).exists():
                os.replace(p, out_dir / p.name)
                moved += 1
        if moved:
            log.info("moved %d archive(s) of the earlier layout from %s up into %s", moved, legacy, out_dir)
        if not any(legacy.iterdir()):
            legacy.rmdir()
    return moved


def download_speakingfaces(
    out_dir: Path,
    speakers: Sequence[int],
    token: str | None,
    *,
    endpoint: str = HF_DEFAULT_ENDPOINT,
    repo: str = HF_REPO,
    revision: str = HF_DEFAULT_REVISION,
    retries: int = 5,
    backoff: float = 1.0,
    verify_existing: bool = False,
    opts: RunOptions | None = None,
) -> list[Path]:
    """Download (or skip, if complete) each speaker's archive as ``out_dir/sub_{id}_ia.zip``.

    ``revision`` is resolved once to a commit and every file comes from that commit;
    ``out_dir/manifest.json`` records it and is rewritten after each completed file. ``opts``
    (parallel jobs, progress, space check) wins over ``retries``/``backoff``/``verify_existing``.
    """
    opts = opts or RunOptions(retries=retries, backoff=backoff, verify_existing=verify_existing)
    check_token_transport(endpoint, token)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir), requests.Session() as session:
        move_legacy_layout(out_dir)
        commit = hf_resolve_commit(session, endpoint, repo, revision, token, retries=opts.retries, backoff=opts.backoff)
        source = hf_source(endpoint, repo, revision, commit)
        recorder = ManifestRecorder(out_dir, open_manifest(out_dir, "speakingfaces", source, ("repo", "commit")))
        remotes = speakingfaces_files(
            session,
            speakers,
            endpoint,
            repo,
            commit,
            token,
            retries=opts.retries,
            backoff=opts.backoff,
        )
        paths = run_download(
            out_dir,
            "speakingfaces",
            source,
            remotes,
            recorder,
            opts,
            {"headers": hf_auth_headers(token), "gated_url": hf_gated_url(endpoint, repo)},
            secrets=[token],
            space_hint=" (--speakers)",
        )
    log.info(
        "%s: %d archive(s) of %s@%s; point data.speakingfaces_dir at this folder",
        mf.manifest_path(out_dir),
        len(recorder),
        repo,
        commit[:12],
    )
    return paths


# --------------------------------------------------------------------------- DEMAND (Zenodo)


def zenodo_urls(endpoint: str | None = None) -> tuple[str, str]:
    """(record JSON URL, files base URL) of the DEMAND record at ``endpoint``, default ``$TAVSE_ZENODO_ENDPOINT``
    or https://zenodo.org."""
    base = (endpoint or os.environ.get(ZENODO_ENDPOINT_ENV) or ZENODO_DEFAULT_ENDPOINT).rstrip("/")
    return f"{base}/api/records/{ZENODO_RECORD}", f"{base}/records/{ZENODO_RECORD}/files"


def zenodo_record(
    session: requests.Session,
    record_url: str = ZENODO_RECORD_URL,
    *,
    retries: int = 5,
    backoff: float = 1.0,
) -> dict:
    """The record JSON of a Zenodo record."""
    resp = request_with_retries(session, "GET", record_url, "Zenodo record", retries=retries, backoff=backoff)
    try:
        return resp.json()
    except ValueError:
        raise DownloadError(f"Zenodo record {record_url}: the answer is not JSON") from None


def zenodo_source(record: dict, record_url: str) -> dict:
    """The ``source`` of a DEMAND manifest: the record id (and DOI), from the record JSON."""
    record_id = str(record.get("id") or record.get("recid") or record_url.rstrip("/").rsplit("/", 1)[-1])
    source = {"type": "zenodo", "record": record_id, "record_url": record_url}
    if record.get("doi"):
        source["doi"] = record["doi"]
    return source


def zenodo_files(
    session: requests.Session,
    record_url: str = ZENODO_RECORD_URL,
    files_url: str = ZENODO_FILES_URL,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    record: dict | None = None,
) -> list[RemoteFile]:
    """All files of a Zenodo record with sizes and MD5s (``files[].checksum == "md5:<hex>"``)."""
    if record is None:
        record = zenodo_record(session, record_url, retries=retries, backoff=backoff)
    entries = record["files"]
    if isinstance(entries, dict):  # /files endpoint shape: {"entries": [...]}
        entries = entries.get("entries", [])
    files = []
    for entry in entries:
        algorithm, _, digest = str(entry.get("checksum", "")).partition(":")
        name = entry["key"]
        files.append(
            RemoteFile(
                name=name,
                url=f"{files_url.rstrip('/')}/{quote(name)}",
                size=int(entry["size"]),
                md5=digest if algorithm == "md5" else None,
            )
        )
    return files


def demand_env(name: str) -> str:
    """``"SCAFE_48k.zip"`` -> ``"SCAFE"``."""
    return name.rsplit("_", 1)[0]


def select_demand(files: Sequence[RemoteFile], envs: Sequence[str] | None = None) -> list[RemoteFile]:
    """Per environment the 16 kHz zip, or the 48 kHz one where no 16 kHz exists (SCAFE).

    ``envs`` holds environment names (``DKITCHEN``) or exact file names (``DKITCHEN_48k.zip``);
    ``None`` means every environment of the record.
    """
    by_name = {f.name: f for f in files if f.name.endswith(".zip")}
    all_envs = sorted({demand_env(n) for n in by_name})
    chosen = []
    for item in envs if envs is not None else all_envs:
        if item in by_name:
            chosen.append(by_name[item])
            continue
        env = item.upper()
        for rate in ("16k", "48k"):
            if f"{env}_{rate}.zip" in by_name:
                chosen.append(by_name[f"{env}_{rate}.zip"])
                break
        else:
            raise DownloadError(f"DEMAND: no zip for environment {item!r}; known: {', '.join(all_envs)}")
    return chosen


def download_demand(
    out_dir: Path,
    envs: Sequence[str] | None = None,
    *,
    record_url: str | None = None,
    files_url: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    verify_existing: bool = False,
    opts: RunOptions | None = None,
) -> list[Path]:
    """Download (or skip, if complete) the chosen DEMAND zips into ``out_dir``, MD5-verified.

    ``out_dir/manifest.json`` records the Zenodo record and per zip its size, MD5 and SHA-256,
    rewritten after each completed file. URLs default to :func:`zenodo_urls`.
    """
    opts = opts or RunOptions(retries=retries, backoff=backoff, verify_existing=verify_existing)
    default_record, default_files = zenodo_urls()
    record_url, files_url = record_url or default_record, files_url or default_files
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir), requests.Session() as session:
        record = zenodo_record(session, record_url, retries=opts.retries, backoff=opts.backoff)
        remotes = select_demand(zenodo_files(session, record_url, files_url, record=record), envs)
        source = zenodo_source(record, record_url)
        recorder = ManifestRecorder(out_dir, open_manifest(out_dir, "demand", source, ("record",)))
        paths = run_download(out_dir, "demand", source, remotes, recorder, opts, {}, space_hint=" (--envs)")
    log.info(
        "%s: %d zip(s) of Zenodo record %s; point data.demand_dir at this folder",
        mf.manifest_path(out_dir),
        len(recorder),
        recorder.manifest.source["record"],
    )
    return paths


# --------------------------------------------------------------------------- CLI


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with the ``speakingfaces``, ``demand``, ``manifest`` and ``verify`` sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m tavse.download", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="corpus", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: archives and manifest.json (point data.speakingfaces_dir / data.demand_dir here)",
    )
    common.add_argument(
        "--status",
        action="store_true",
        help="offline: per-file state (complete/partial/missing), totals and an ETA from the manifest, "
        f"{STATE_NAME} and the files on disk; no network, downloads nothing",
    )
    common.add_argument(
        "--verify",
        action="store_true",
        help="also re-hash files that were already complete against the server's and the manifest's hashes",
    )
    common.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="archives downloaded at once, each on its own connection (default 1)",
    )
    common.add_argument(
        "--progress",
        choices=("auto", "bar", "log"),
        default="auto",
        help="bar: tqdm bars; log: plain progress lines (file, bytes, rate, ETA) every --progress-every "
        "seconds, for SLURM/nohup logs; auto (default): bar on a terminal, else log",
    )
    common.add_argument(
        "--progress-every",
        type=positive_float,
        default=DEFAULT_PROGRESS_EVERY,
        metavar="SECONDS",
        help=f"interval of the progress lines and of the {STATE_NAME} updates (default {DEFAULT_PROGRESS_EVERY:g})",
    )
    common.add_argument(
        "--skip-space-check",
        action="store_true",
        help="start even if the filesystem of --out reports less free space than the bytes still to download",
    )
    common.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help=f"file with HF_TOKEN, {REVISION_ENV}, HF_ENDPOINT, {ZENODO_ENDPOINT_ENV} (each used where the "
        "environment has none)",
    )
    common.add_argument(
        "--retries",
        type=int,
        default=5,
        help="tries per file without progress before giving up",
    )
    common.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="first retry delay in seconds (doubles)",
    )

    sf = sub.add_parser(
        "speakingfaces",
        parents=[common],
        help="SpeakingFaces archives from the HuggingFace Hub",
    )
    sf.add_argument(
        "--speakers",
        default=None,
        help=f"IDs and ranges, e.g. 1-10,121 (download default: all, 1-{N_SPEAKERS}; --status default: "
        "the files of the last run and of the manifest)",
    )
    sf.add_argument(
        "--endpoint",
        default=None,
        help=f"Hub URL (default: $HF_ENDPOINT, or HF_ENDPOINT in --env-file, or {HF_DEFAULT_ENDPOINT}); https://, "
        "or http:// to a loopback host only",
    )
    sf.add_argument("--repo", default=HF_REPO, help="dataset repository")
    sf.add_argument(
        "--revision",
        default=None,
        help=f"branch, tag or commit (default: ${REVISION_ENV}, or {REVISION_ENV} in --env-file, or "
        f"{HF_DEFAULT_REVISION}); resolved once to a commit, which the manifest records",
    )

    dm = sub.add_parser("demand", parents=[common], help="DEMAND noise zips from Zenodo (open access, no account)")
    dm.add_argument(
        "--envs",
        default=None,
        help="comma list of environments or file names (default: every 16k zip + SCAFE_48k)",
    )
    dm.add_argument(
        "--record-url",
        default=None,
        help=f"Zenodo record JSON URL (default: ${ZENODO_ENDPOINT_ENV} or {ZENODO_DEFAULT_ENDPOINT}, "
        f"+ /api/records/{ZENODO_RECORD})",
    )
    dm.add_argument(
        "--base-url",
        default=None,
        help=f"base URL the files are fetched from (default: ${ZENODO_ENDPOINT_ENV} or {ZENODO_DEFAULT_ENDPOINT}, "
        f"+ /records/{ZENODO_RECORD}/files)",
    )

    mk = sub.add_parser(
        "manifest",
        help="write DIR/manifest.json (source: local) for archives obtained elsewhere",
    )
    mk.add_argument("dir", type=Path, help="folder of sub_{id}_ia.zip, or of DEMAND {ENV}_16k.zip / {ENV}/chNN.wav")
    mk.add_argument(
        "--corpus", dest="corpus_kind", choices=mf.CORPORA, default=None, help="default: from the file names"
    )

    vf = sub.add_parser(
        "verify", help="re-hash every archive DIR/manifest.json lists and compare (exit 1 on a mismatch)"
    )
    vf.add_argument("dir", type=Path, help="a corpus folder with a manifest.json")
    return parser


def write_local_manifest(folder: Path, corpus: str | None = None) -> mf.Manifest:
    """Hash the archives of ``folder`` into a manifest of source ``local`` (SHA-256; DEMAND also MD5)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    corpus = corpus or mf.detect_corpus(folder)
    path = mf.manifest_path(folder)
    if path.is_file():
        try:
            old = mf.read_manifest(folder).source.get("type")
        except mf.ManifestError:
            old = "unreadable"
        if old != "local":
            log.warning("%s: replacing a manifest of source %s by one of source local", path, old)
    return mf.make_manifest(folder, corpus, {"type": "local"})


def run(args: argparse.Namespace, token: str | None) -> int:
    """Execute a parsed command; return the exit status."""
    if args.corpus == "manifest":
        m = write_local_manifest(args.dir, args.corpus_kind)
        print(
            f"{mf.manifest_path(args.dir)}: {m.corpus}, {len(m.files)} file(s), "
            f"{sum(f.size for f in m.files) / 1e9:.3f} GB"
        )
        return 0
    if args.corpus == "verify":
        n = mf.verify_folder(args.dir)
        print(f"{mf.manifest_path(args.dir)}: all {n} file(s) match")
        return 0
    if args.status:  # offline: manifest, state file, files on disk
        if args.corpus == "speakingfaces":
            names = speakingfaces_names(parse_speakers(args.speakers)) if args.speakers else None
        else:
            known = [f.get("name", "") for f in (read_state(args.out) or {}).get("files", []) if isinstance(f, dict)]
            envs = [e for e in args.envs.split(",") if e] if args.envs else None
            names = demand_names(envs, known) if envs else None
        print(format_folder_status(folder_status(args.out, args.corpus, names)))
        return 0
    opts = RunOptions(
        jobs=args.jobs,
        progress=args.progress,
        progress_every=args.progress_every,
        retries=args.retries,
        backoff=args.backoff,
        verify_existing=args.verify,
        space_check=not args.skip_space_check,
    )
    if args.corpus == "speakingfaces":
        speakers = parse_speakers(args.speakers or f"1-{N_SPEAKERS}")
        endpoint = args.endpoint or env_setting("HF_ENDPOINT", args.env_file) or HF_DEFAULT_ENDPOINT
        if not token:
            log.warning(
                "no HF token found ($HF_TOKEN or %s): the gated dataset will refuse access",
                args.env_file,
            )
        download_speakingfaces(
            args.out,
            speakers,
            token,
            endpoint=endpoint,
            repo=args.repo,
            revision=resolve_revision(args.revision, args.env_file),
            opts=opts,
        )
    else:
        envs = [e for e in args.envs.split(",") if e] if args.envs else None
        record_url, files_url = zenodo_urls(env_setting(ZENODO_ENDPOINT_ENV, args.env_file))
        download_demand(
            args.out, envs, record_url=args.record_url or record_url, files_url=args.base_url or files_url, opts=opts
        )
    return 0


def _sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a SLURM time limit, ``kill``): stop like Ctrl-C, parts kept for the resume."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: logs and errors are masked so the token never reaches the terminal."""
    from tavse.common.logs import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    token = resolve_hf_token(getattr(args, "env_file", None)) if args.corpus == "speakingfaces" else None
    redactor = RedactFilter([token] if token else [])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run(args, token)
    except (DownloadError, ValueError, OSError, requests.RequestException) as exc:
        print(f"error: {redact(str(exc), [token])}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(redactor)


if __name__ == "__main__":
    sys.exit(main())
