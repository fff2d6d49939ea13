"""Optional copies of the training inputs on node-local disk (``$TAVSE_STAGE_DIR``).

Training reads small random slices of the LMDBs and noise files at every step; on a shared
network filesystem that is slow and loads the file server. With ``TAVSE_STAGE_DIR`` set (e.g.
to ``$TMPDIR`` or ``/local/$USER`` on a compute node) the training copies them there first.
A copy is named by a fingerprint of its source (every file's relative path, size and
modification time), so an identical earlier copy on the node is reused and a changed source
gets a fresh copy; it is written under a temporary name and renamed, so a killed copy is
never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

STAGE_ENV = "TAVSE_STAGE_DIR"


def staging_root() -> Path | None:
    """``$TAVSE_STAGE_DIR`` as an absolute path, or None when unset or empty."""
    raw = os.environ.get(STAGE_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def fingerprint(src: Path) -> str:
    """Hash of every regular file's relative path, size and mtime under ``src`` (a folder)."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (run the stage that produces it first)")
    h = hashlib.sha256()
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(src).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def stage_copy(src: Path, root: Path, copy: bool = True) -> Path:
    """The node-local copy of folder ``src`` under ``root``, made if missing (``copy=False``: only locate it)."""
    src = Path(src).resolve()
    dest = root / f"{src.name}-{fingerprint(src)}"
    if dest.is_dir():
        log.info("staging: reusing %s for %s", dest, src)
        return dest
    if not copy:
        raise FileNotFoundError(f"{dest}: staged copy of {src} missing (local rank 0 should have made it)")
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    need = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    if need > free:
        raise OSError(f"{STAGE_ENV}={root}: {need / 2**30:.2f} GiB needed to stage {src}, {free / 2**30:.2f} GiB free")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=root))
    try:
        shutil.copytree(src, tmp, symlinks=False, dirs_exist_ok=True)
        try:
            os.rename(tmp, dest)  # never replaces: another job on this node may be reading a copy
        except OSError:
            if not dest.is_dir():
                raise
            log.info("staging: %s was staged by another job meanwhile; using it", dest)
            return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("staging: copied %s (%.1f MiB) to %s in %.1f s", src, need / 2**20, dest, time.perf_counter() - t0)
    return dest
