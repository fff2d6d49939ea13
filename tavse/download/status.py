"""``--status``: the state of a download folder from its manifest, ``download-state.json`` and the
files on disk alone, no network (:func:`folder_status`, :func:`format_folder_status`)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tavse.corpus import manifest as mf
from tavse.corpus.noise_kinds import DEMAND_ENVIRONMENTS
from tavse.download.errors import DownloadError
from tavse.download.files import FileStatus, RemoteFile, file_status
from tavse.download.huggingface import N_SPEAKERS
from tavse.download.progress import (
    DEFAULT_PROGRESS_EVERY,
    LOCK_NAME,
    RATE_WINDOW_S,
    STATE_NAME,
    eta,
    fmt_duration,
    fmt_rate,
    folder_locked,
    read_state,
)
from tavse.download.zenodo import demand_env

log = logging.getLogger("tavse.download")


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
    for item in envs if envs is not None else DEMAND_ENVIRONMENTS:  # an offline --status: every environment
        if item.endswith(".zip"):
            out.append(item)
            continue
        env = item.upper()
        if env not in DEMAND_ENVIRONMENTS:
            raise DownloadError(f"DEMAND: unknown environment {item!r}; known: {', '.join(DEMAND_ENVIRONMENTS)}")
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
