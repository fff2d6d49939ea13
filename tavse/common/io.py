"""Small file helpers shared by every layer: atomic writes and byte-stable archives."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import soundfile as sf

# Fixed member timestamp so the same content always gives the same zip bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``final`` only if the block succeeds.

    Works for files and directories. A crash leaves ``final`` untouched (old or absent),
    never half written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name, not a created folder: a signal that ends the process between creating a
    # placeholder and entering the try below would leave it behind.
    tmp = final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp"
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            raise FileNotFoundError(f"{final}: nothing was written to its temporary path {tmp}")
        if tmp.is_dir() or (final.is_dir() and not final.is_symlink()):
            _replace_folder(tmp, final)
        else:
            os.replace(tmp, final)  # atomic: a reader sees the old file or the new one, never neither
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _replace_folder(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final`` where one of them is a folder (``os.replace`` cannot do that in one
    step): the old ``final`` steps aside under a hidden name, is put back if the rename fails, and
    is removed only once the new one is in place."""
    old = final.parent / f".{final.name}.{secrets.token_hex(6)}.old"
    had_old = final.exists() or final.is_symlink()
    if had_old:
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if had_old:
            os.replace(old, final)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif had_old:
        old.unlink()


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as sorted, indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class DeterministicZip:
    """A zip writer whose bytes depend only on the members written, in order.

    Members are stored (no compression: PNG and WAV do not shrink) with a fixed timestamp
    and fixed permissions.
    """

    def __init__(self, path: str | os.PathLike):
        self._final = Path(path)
        self._ctx = atomic_path(self._final)
        self._tmp = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
        info.external_attr = 0o644 << 16
        info.create_system = 3
        self._zip.writestr(info, data)

    def close(self) -> None:
        self._zip.close()
        self._ctx.__exit__(None, None, None)

    def __enter__(self) -> DeterministicZip:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._zip.close()
            try:
                self._ctx.__exit__(exc_type, exc, tb)
            except BaseException:
                pass


def wav_bytes(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode mono float samples in [-1, 1] (or int16) as WAV bytes."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def is_unsafe_member(name: str) -> bool:
    """True for an archive member name that would land outside the folder it is read into
    (zip-slip): absolute (POSIX or Windows), with a drive letter, or with a ``..`` component."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return (
        posix.is_absolute()
        or windows.is_absolute()
        or bool(windows.drive)
        or name.startswith(("/", "\\"))
        or ".." in posix.parts
        or ".." in windows.parts
    )
