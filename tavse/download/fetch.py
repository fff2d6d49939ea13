"""A run into ``OUT`` once the remote files are known (:func:`run_download`). It

* checks first that the filesystem of ``OUT`` has room for the bytes still missing (the remote
  sizes less what is already on disk, ``.part`` files included), and refuses with needed vs free
  otherwise (``--skip-space-check`` where quotas or reporting make that check wrong);
* runs under ``OUT/.download.lock`` (:func:`~tavse.download.progress.folder_lock`, taken by the
  corpus's download function): a second download into the same folder is refused;
* downloads ``--jobs N`` archives at once, each on its own connection and still resumable and
  verified; the manifest has one writer (:class:`ManifestRecorder`: entries from any thread,
  each write atomic and serialised);
* writes ``OUT/download-state.json`` (:class:`~tavse.download.progress.StateFile`), which
  ``--status`` reads with the manifest and the files on disk: no network
  (:func:`~tavse.download.status.folder_status`);
* reports progress (:class:`~tavse.download.progress.Progress`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import shutil
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from tavse.corpus import manifest as mf
from tavse.download.errors import AccessDenied, ChecksumError, DownloadError, Interrupted
from tavse.download.files import RemoteFile, local_bytes
from tavse.download.http import download_file, verify
from tavse.download.progress import DEFAULT_PROGRESS_EVERY, Progress, StateFile, fmt_bytes

log = logging.getLogger("tavse.download")


# --------------------------------------------------------------------------- free space


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
