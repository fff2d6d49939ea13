"""Resumable, verified downloads of the two corpora TAVSE reads, each recorded in a manifest.

* ``speakingfaces``: ``image_audio/sub_{id}_ia.zip`` of the gated HuggingFace dataset
  ``issai/Speaking_Faces`` (about 6.4 GB per speaker), saved as ``OUT/sub_{id}_ia.zip``.
* ``demand``: the DEMAND noise zips of Zenodo record 1227121, checked against Zenodo's MD5s.

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

The Hub is spoken to with plain ``requests``: the revision (branch, tag or commit; ``--revision``,
``$TAVSE_HF_REVISION`` or ``.env``, default ``main``) is resolved once to a commit with
``{endpoint}/api/datasets/{repo}/revision/{revision}``, and every file comes from the documented
resolve URL of that one commit, ``{endpoint}/datasets/{repo}/resolve/{commit}/{path}``, with
``Authorization: Bearer``; not with ``huggingface_hub.hf_hub_download``: that function (2.x)
writes into a process-unique temporary file that it deletes on failure, so an interrupted 6.4 GB
download restarts from zero.

The token (``HF_TOKEN`` env, a ``.env`` file, or the huggingface CLI's token file) is never
printed: every message that leaves this module goes through :func:`redact`.

CLI::

    python -m tavse.download speakingfaces --out DIR [--speakers 1-10,121] [--revision REV] [--status] [--verify]
    python -m tavse.download demand --out DIR [--envs DKITCHEN,SCAFE] [--status] [--verify]
    python -m tavse.download manifest DIR [--corpus speakingfaces|demand]   # archives obtained elsewhere
    python -m tavse.download verify DIR                                     # re-hash against the manifest
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin

import requests
from tqdm import tqdm

from tavse.corpus import manifest as mf

log = logging.getLogger(__name__)

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_REPO = "issai/Speaking_Faces"
HF_DEFAULT_REVISION = "main"
REVISION_ENV = "TAVSE_HF_REVISION"
N_SPEAKERS = 142
ZENODO_RECORD_URL = "https://zenodo.org/api/records/1227121"
ZENODO_FILES_URL = "https://zenodo.org/records/1227121/files"
CHUNK = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A download failed in a way that retrying will not fix (auth, 404, bad response)."""


class ChecksumError(DownloadError):
    """A completed download does not match its published size or hash."""


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
    """Local state of one file: ``complete``, ``partial`` or ``missing``."""

    name: str
    state: str
    local_bytes: int
    remote_bytes: int | None


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


def resolve_hf_token(env_file: Path | None = Path(".env")) -> str | None:
    """Token from ``$HF_TOKEN``, else ``HF_TOKEN`` in ``env_file``, else the huggingface CLI token file."""
    token = os.environ.get("HF_TOKEN")
    if not token and env_file is not None:
        token = read_dotenv(env_file).get("HF_TOKEN")
    if not token:
        hf_home = Path(
            os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")
        )
        token_file = Path(os.environ.get("HF_TOKEN_PATH", hf_home / "token"))
        if token_file.is_file():
            token = token_file.read_text(encoding="utf-8").strip()
    return token or None


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


def verify(path: Path, remote: RemoteFile, *, what: str = "the partial download was deleted, run again to re-download") -> dict[str, str]:
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
        return DownloadError(
            f"HTTP {status} for {name}: token missing or no access to the gated dataset; "
            f"accept the licence at {gated_url} and set HF_TOKEN (environment or .env)"
        )
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


def _stream_once(
    session: requests.Session,
    remote: RemoteFile,
    part: Path,
    headers: dict[str, str],
    gated_url: str | None,
    bar: tqdm,
) -> None:
    """One GET into ``part``: resumes with ``Range`` from the part's size, restarts if the server ignores it."""
    offset = part.stat().st_size if part.exists() else 0
    req_headers = dict(headers)
    req_headers["Accept-Encoding"] = "identity"
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    with session.get(remote.url, headers=req_headers, stream=True, timeout=60) as resp:
        if resp.status_code == 416 and offset and offset == remote.size:
            return
        if resp.status_code == 416:
            part.unlink()
            raise requests.ConnectionError(
                "range not satisfiable, restarting from zero"
            )
        if resp.status_code in RETRYABLE_STATUS:
            raise requests.ConnectionError(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise http_error(resp.status_code, remote.name, gated_url)
        if (
            resp.status_code == 206
            and _content_range_start(resp.headers.get("Content-Range")) == offset
        ):
            mode = "ab"
        else:  # 200: the server sent the whole file
            if offset:
                log.info(
                    "%s: server ignored the Range request, restarting", remote.name
                )
            offset, mode = 0, "wb"
            bar.reset(total=remote.size)
        bar.n = offset
        bar.refresh()
        with part.open(mode) as f:
            for chunk in resp.iter_content(CHUNK):
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
) -> dict[str, str] | None:
    """Download one file into ``out_dir / remote.name``; return its digests, or None if it was already complete.

    Streams into ``.part`` (resuming a previous part), retries with exponential backoff while
    connections drop (the retry budget refills whenever bytes arrive), verifies size and hash,
    then renames atomically. A verification failure deletes the part and raises. The digests
    (SHA-256, and MD5 where the server publishes one) come from that verification's single read.
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
    with tqdm(
        total=remote.size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=remote.name,
        disable=None,
        leave=False,
    ) as bar:
        while True:
            before = part.stat().st_size if part.exists() else 0
            if remote.size is not None and before == remote.size:
                break
            try:
                _stream_once(session, remote, part, headers or {}, gated_url, bar)
                after = part.stat().st_size if part.exists() else 0
                if remote.size is None or after == remote.size:
                    break
                raise requests.ConnectionError(
                    f"connection closed at {after} of {remote.size} bytes"
                )
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
    try:
        digests = verify(part, remote)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    log.info("%s: downloaded and verified", remote.name)
    return digests


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
            hint = (f"pass --revision {old['commit']} to continue that snapshot, or " if corpus == "speakingfaces"
                    and old.get("type") == "huggingface" and old.get("commit") else "")
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


def fetch_and_record(
    session: requests.Session,
    remote: RemoteFile,
    out_dir: Path,
    manifest: mf.Manifest,
    *,
    verify_existing: bool = False,
    **kwargs,
) -> Path:
    """Download ``remote`` (or skip it, if complete), add it to ``manifest`` and rewrite the manifest atomically.

    A file that was already complete keeps its manifest entry if the entry has its size;
    otherwise (or with ``verify_existing``) it is hashed and checked against the server's hashes
    and the manifest's.
    """
    dest = out_dir / remote.name
    digests = download_file(session, remote, out_dir, **kwargs)
    old = manifest.by_path().get(remote.name)
    size = dest.stat().st_size
    if digests is None and old is not None and old.size == size and old.sha256 and not verify_existing:
        entry = old
    else:
        if digests is None:
            log.info("%s: hashing the existing file", remote.name)
            digests = verify(dest, remote, what="the file was there before this run: delete it and run again to re-download")
            for algorithm in ("sha256", "md5"):
                recorded = getattr(old, algorithm) if old is not None and old.size == size else None
                if recorded and recorded != digests[algorithm]:
                    raise ChecksumError(
                        f"{remote.name}: {algorithm.upper()} {digests[algorithm]}, but {mf.manifest_path(out_dir)} lists "
                        f"{recorded}; delete the file and run again to re-download"
                    )
        entry = mf.FileEntry(remote.name, size, digests["sha256"], digests.get("md5"), remote.remote_path)
    manifest.put(entry)
    mf.write_manifest(out_dir, manifest)
    return dest


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


def format_status(rows: Sequence[FileStatus]) -> str:
    """A plain table of statuses with a summary line."""

    def gb(n: int | None) -> str:
        return "?" if n is None else f"{n / 1e9:.3f} GB"

    width = max((len(r.name) for r in rows), default=4)
    lines = [f"{'file':<{width}}  {'state':<8}  {'local':>12}  {'remote':>12}"]
    lines += [
        f"{r.name:<{width}}  {r.state:<8}  {gb(r.local_bytes):>12}  {gb(r.remote_bytes):>12}"
        for r in rows
    ]
    counts = {
        s: sum(r.state == s for r in rows) for s in ("complete", "partial", "missing")
    }
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
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
            raise ValueError(
                f"bad speaker range {item!r}: speakers are 1..{N_SPEAKERS}"
            )
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
        raise DownloadError(
            f"revision {revision!r} of {repo}: the Hub's answer has no commit sha"
        ) from None
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
    size = resp.headers.get("X-Linked-Size") or (
        None if resp.is_redirect else resp.headers.get("Content-Length")
    )
    etag = (
        (resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or "")
        .removeprefix("W/")
        .strip('"')
    )
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
    return {"type": "huggingface", "repo": repo, "endpoint": endpoint.rstrip("/"), "revision": revision, "commit": commit}


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
) -> list[Path]:
    """Download (or skip, if complete) each speaker's archive as ``out_dir/sub_{id}_ia.zip``.

    ``revision`` is resolved once to a commit and every file comes from that commit;
    ``out_dir/manifest.json`` records it and is rewritten after each completed file.
    """
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    move_legacy_layout(out_dir)
    with requests.Session() as session:
        commit = hf_resolve_commit(session, endpoint, repo, revision, token, retries=retries, backoff=backoff)
        manifest = open_manifest(out_dir, "speakingfaces", hf_source(endpoint, repo, revision, commit), ("repo", "commit"))
        for remote in speakingfaces_files(
            session,
            speakers,
            endpoint,
            repo,
            commit,
            token,
            retries=retries,
            backoff=backoff,
        ):
            paths.append(
                fetch_and_record(
                    session,
                    remote,
                    out_dir,
                    manifest,
                    verify_existing=verify_existing,
                    headers=hf_auth_headers(token),
                    retries=retries,
                    backoff=backoff,
                    gated_url=hf_gated_url(endpoint, repo),
                )
            )
    log.info("%s: %d archive(s) of %s@%s; point data.speakingfaces_dir at this folder",
             mf.manifest_path(out_dir), len(manifest.files), repo, commit[:12])
    return paths


def status_speakingfaces(
    out_dir: Path,
    speakers: Sequence[int],
    token: str | None,
    *,
    endpoint: str = HF_DEFAULT_ENDPOINT,
    repo: str = HF_REPO,
    revision: str = HF_DEFAULT_REVISION,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[FileStatus]:
    """Per-speaker local state against the Hub's sizes (at the commit ``revision`` resolves to), without downloading."""
    if (out_dir / "image_audio").is_dir():
        log.warning("%s: archives of the earlier layout; the next download moves them up into %s",
                    out_dir / "image_audio", out_dir)
    with requests.Session() as session:
        commit = hf_resolve_commit(session, endpoint, repo, revision, token, retries=retries, backoff=backoff)
        remotes = speakingfaces_files(
            session,
            speakers,
            endpoint,
            repo,
            commit,
            token,
            retries=retries,
            backoff=backoff,
        )
    return [file_status(out_dir, r) for r in remotes]


# --------------------------------------------------------------------------- DEMAND (Zenodo)


def zenodo_record(
    session: requests.Session,
    record_url: str = ZENODO_RECORD_URL,
    *,
    retries: int = 5,
    backoff: float = 1.0,
) -> dict:
    """The record JSON of a Zenodo record."""
    resp = request_with_retries(
        session, "GET", record_url, "Zenodo record", retries=retries, backoff=backoff
    )
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


def select_demand(
    files: Sequence[RemoteFile], envs: Sequence[str] | None = None
) -> list[RemoteFile]:
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
            raise DownloadError(
                f"DEMAND: no zip for environment {item!r}; known: {', '.join(all_envs)}"
            )
    return chosen


def download_demand(
    out_dir: Path,
    envs: Sequence[str] | None = None,
    *,
    record_url: str = ZENODO_RECORD_URL,
    files_url: str = ZENODO_FILES_URL,
    retries: int = 5,
    backoff: float = 1.0,
    verify_existing: bool = False,
) -> list[Path]:
    """Download (or skip, if complete) the chosen DEMAND zips into ``out_dir``, MD5-verified.

    ``out_dir/manifest.json`` records the Zenodo record and per zip its size, MD5 and SHA-256,
    rewritten after each completed file.
    """
    with requests.Session() as session:
        record = zenodo_record(session, record_url, retries=retries, backoff=backoff)
        remotes = select_demand(zenodo_files(session, record_url, files_url, record=record), envs)
        manifest = open_manifest(out_dir, "demand", zenodo_source(record, record_url), ("record",))
        for remote in remotes:
            fetch_and_record(session, remote, out_dir, manifest, verify_existing=verify_existing,
                             retries=retries, backoff=backoff)
    log.info("%s: %d zip(s) of Zenodo record %s; point data.demand_dir at this folder",
             mf.manifest_path(out_dir), len(manifest.files), manifest.source["record"])
    return [out_dir / r.name for r in remotes]


def status_demand(
    out_dir: Path,
    envs: Sequence[str] | None = None,
    *,
    record_url: str = ZENODO_RECORD_URL,
    files_url: str = ZENODO_FILES_URL,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[FileStatus]:
    """Local state of the chosen DEMAND zips against Zenodo's sizes, without downloading."""
    with requests.Session() as session:
        remotes = select_demand(zenodo_files(session, record_url, files_url, retries=retries, backoff=backoff), envs)
    return [file_status(out_dir, r) for r in remotes]


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with the ``speakingfaces``, ``demand``, ``manifest`` and ``verify`` sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m tavse.download", description=__doc__.split("\n\n")[0]
    )
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
        help="list complete/partial/missing files, download nothing",
    )
    common.add_argument(
        "--verify",
        action="store_true",
        help="also re-hash files that were already complete against the server's and the manifest's hashes",
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
        default=f"1-{N_SPEAKERS}",
        help="IDs and ranges, e.g. 1-10,121 (default: all)",
    )
    sf.add_argument(
        "--endpoint",
        default=None,
        help=f"Hub URL (default: $HF_ENDPOINT or {HF_DEFAULT_ENDPOINT})",
    )
    sf.add_argument("--repo", default=HF_REPO, help="dataset repository")
    sf.add_argument(
        "--revision",
        default=None,
        help=f"branch, tag or commit (default: ${REVISION_ENV}, or {REVISION_ENV} in --env-file, or "
        f"{HF_DEFAULT_REVISION}); resolved once to a commit, which the manifest records",
    )
    sf.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help=f"file with HF_TOKEN=... and {REVISION_ENV}=... (used where the environment has none)",
    )

    dm = sub.add_parser(
        "demand", parents=[common], help="DEMAND noise zips from Zenodo"
    )
    dm.add_argument(
        "--envs",
        default=None,
        help="comma list of environments or file names (default: every 16k zip + SCAFE_48k)",
    )
    dm.add_argument(
        "--record-url", default=ZENODO_RECORD_URL, help="Zenodo record JSON URL"
    )
    dm.add_argument(
        "--base-url",
        default=ZENODO_FILES_URL,
        help="base URL the files are fetched from",
    )

    mk = sub.add_parser(
        "manifest",
        help="write DIR/manifest.json (source: local) for archives obtained elsewhere",
    )
    mk.add_argument("dir", type=Path, help="folder of sub_{id}_ia.zip, or of DEMAND {ENV}_16k.zip / {ENV}/chNN.wav")
    mk.add_argument("--corpus", dest="corpus_kind", choices=mf.CORPORA, default=None,
                    help="default: from the file names")

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
        print(f"{mf.manifest_path(args.dir)}: {m.corpus}, {len(m.files)} file(s), "
              f"{sum(f.size for f in m.files) / 1e9:.3f} GB")
        return 0
    if args.corpus == "verify":
        n = mf.verify_folder(args.dir)
        print(f"{mf.manifest_path(args.dir)}: all {n} file(s) match")
        return 0
    opts = {"retries": args.retries, "backoff": args.backoff}
    if args.corpus == "speakingfaces":
        speakers = parse_speakers(args.speakers)
        endpoint = args.endpoint or os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT
        hub = {
            "endpoint": endpoint,
            "repo": args.repo,
            "revision": resolve_revision(args.revision, args.env_file),
            **opts,
        }
        if not token:
            log.warning(
                "no HF token found ($HF_TOKEN or %s): the gated dataset will refuse access",
                args.env_file,
            )
        if args.status:
            print(format_status(status_speakingfaces(args.out, speakers, token, **hub)))
        else:
            download_speakingfaces(args.out, speakers, token, verify_existing=args.verify, **hub)
    else:
        envs = [e for e in args.envs.split(",") if e] if args.envs else None
        zen = {"record_url": args.record_url, "files_url": args.base_url, **opts}
        if args.status:
            print(format_status(status_demand(args.out, envs, **zen)))
        else:
            download_demand(args.out, envs, verify_existing=args.verify, **zen)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: logs and errors are masked so the token never reaches the terminal."""
    from tavse.common.logs import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    token = (
        resolve_hf_token(getattr(args, "env_file", None))
        if args.corpus == "speakingfaces"
        else None
    )
    redactor = RedactFilter([token] if token else [])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    try:
        return run(args, token)
    except (DownloadError, ValueError, OSError, requests.RequestException) as exc:
        print(f"error: {redact(str(exc), [token])}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(redactor)


if __name__ == "__main__":
    sys.exit(main())
