"""SpeakingFaces from the HuggingFace Hub (:func:`download_speakingfaces`).

``image_audio/sub_{id}_ia.zip`` of the gated dataset ``issai/Speaking_Faces``, saved as
``OUT/sub_{id}_ia.zip``. The Hub is spoken to with plain ``requests``: the revision (branch, tag
or commit; ``--revision``, ``$TAVSE_HF_REVISION`` or ``.env``, default ``main``) is resolved once
to a commit with ``{endpoint}/api/datasets/{repo}/revision/{revision}``, and every file comes from
the documented resolve URL of that one commit, ``{endpoint}/datasets/{repo}/resolve/{commit}/{path}``,
with ``Authorization: Bearer``; not with ``huggingface_hub.hf_hub_download``: that function (2.x)
writes into a process-unique temporary file that it deletes on failure, so an interrupted 7 GB
download restarts from zero. The endpoint is ``--endpoint``, else ``$HF_ENDPOINT``, else
``https://huggingface.co``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urljoin

import requests

from tavse.corpus import manifest as mf
from tavse.dotenv import read_dotenv
from tavse.download.errors import DownloadError
from tavse.download.fetch import ManifestRecorder, RunOptions, open_manifest, run_download
from tavse.download.files import RemoteFile
from tavse.download.http import request_with_retries
from tavse.download.progress import folder_lock
from tavse.download.secrets import check_token_transport

log = logging.getLogger("tavse.download")

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_REPO = "issai/Speaking_Faces"
HF_DEFAULT_REVISION = "main"
REVISION_ENV = "TAVSE_HF_REVISION"
N_SPEAKERS = 142
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


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
