"""The HTTP engine: one file resumed, verified and renamed (:func:`download_file`); small requests, retried.

Both corpora go through :func:`download_file`: bytes stream into ``<name>.part`` with HTTP
``Range`` resume (across retries *and* across runs), the finished part is checked against the
remote size and hash (MD5 from Zenodo; SHA-256 from the Hub's ``X-Linked-Etag`` for LFS/Xet
files), then renamed atomically. A final file therefore only ever exists complete and verified.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

import requests
from tqdm import tqdm

from tavse.corpus import manifest as mf
from tavse.download.errors import AccessDenied, ChecksumError, DownloadError, Interrupted
from tavse.download.files import RemoteFile, part_path
from tavse.download.progress import Progress, fmt_bytes, fmt_duration, fmt_rate
from tavse.download.secrets import check_token_transport

log = logging.getLogger("tavse.download")

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def _guard_auth(url: str, headers: dict[str, str] | None) -> None:
    """Last check before a request that carries ``Authorization``: https, or http to loopback only."""
    auth = (headers or {}).get("Authorization", "")
    if auth:
        check_token_transport(url, auth.removeprefix("Bearer ").strip() or "token")


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
