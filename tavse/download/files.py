"""A remote file and what of it is on disk: :class:`RemoteFile`, the ``.part`` its download streams
into (:func:`part_path`), the bytes already there (:func:`local_bytes`) and its state
(:func:`file_status`: complete, partial or missing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


def part_path(dest: Path) -> Path:
    """The ``.part`` file a download of ``dest`` streams into."""
    return dest.with_name(dest.name + ".part")


def local_bytes(out_dir: Path, remote: RemoteFile) -> int:
    """Bytes of ``remote`` already on disk: the complete file's size, else the ``.part``'s, else 0."""
    dest = out_dir / remote.name
    if dest.is_file() and (remote.size is None or dest.stat().st_size == remote.size):
        return dest.stat().st_size
    part = part_path(dest)
    if part.is_file() and (remote.size is None or part.stat().st_size <= remote.size):
        return part.stat().st_size
    return 0


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
