"""The LMDB store of ingested utterances, laid out for the training loader.

One LMDB per split. Each utterance is four values, so a training sample (a segment of audio
and its RGB and thermal crops) costs three reads whatever its length:

- ``{utt}/meta``: JSON (frame count, ROI size, sample count, per-frame lip gap, boxes)
- ``{utt}/rgb``:  raw uint8, (frames, roi, roi, 3)
- ``{utt}/thr``:  raw uint8, (frames, roi, roi) — Iron palette inverted to temperature order
- ``{utt}/wav``:  raw float32, 16 kHz mono

Writers grow the map as needed and finish with a compacting copy, so the bytes on disk depend
only on what was written, in order. Readers open read-only with ``lock=False``: a locking
read-only open rewrites ``lock.mdb`` and DVC would see a modified output.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb
import numpy as np

from tavse.common.io import atomic_path

STREAMS = ("rgb", "thr")
_INITIAL_MAP = 64 << 20


def key(utt_id: str, part: str) -> bytes:
    return f"{utt_id}/{part}".encode()


def utterance_items(
    utt_id: str, meta: dict, rgb: np.ndarray, thr: np.ndarray, wav: np.ndarray
) -> list[tuple[bytes, bytes]]:
    """The key/value pairs of one utterance, in key order."""
    assert rgb.dtype == np.uint8 and thr.dtype == np.uint8 and wav.dtype == np.float32
    meta = dict(meta, n_frames=int(rgb.shape[0]), roi_size=int(rgb.shape[1]), n_samples=int(wav.shape[0]))
    items = {
        key(utt_id, "meta"): json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
        key(utt_id, "rgb"): np.ascontiguousarray(rgb).tobytes(),
        key(utt_id, "thr"): np.ascontiguousarray(thr).tobytes(),
        key(utt_id, "wav"): np.ascontiguousarray(wav).tobytes(),
    }
    return sorted(items.items())


class GrowingWriter:
    """An LMDB writer that doubles its map whenever a transaction does not fit ("map full" never escapes)."""

    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=_INITIAL_MAP, subdir=True, meminit=True, sync=False, metasync=False)

    def put_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        """Write ``items`` in one transaction, growing the map and retrying on MapFullError."""
        need = sum(len(k) + len(v) for k, v in items)
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in items:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                size = self.env.info()["map_size"]
                self.env.set_mapsize(max(2 * size, size + 2 * need))

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()


def write_store(path: str | Path, batches: Iterable[list[tuple[bytes, bytes]]]) -> int:
    """Write an LMDB at ``path`` from ``batches`` (one transaction each), atomically and compactly.

    Returns the number of keys. ``path`` ends up holding only ``data.mdb``.
    """
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        work = tmp.with_name(tmp.name + ".work")
        try:
            writer = GrowingWriter(work)
            for items in batches:
                writer.put_batch(items)
                n += len(items)
            tmp.mkdir()
            writer.env.copy(str(tmp), compact=True)
            writer.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return n


def open_readonly(path: str | Path) -> lmdb.Environment:
    """Open an LMDB for reading without touching any file in it."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise FileNotFoundError(f"{path}: no LMDB here (missing data.mdb)")
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=512)


_SHARED: dict[Path, lmdb.Environment] = {}
_SHARED_PID = os.getpid()


def shared_env(path: str | Path) -> lmdb.Environment:
    """This process's one read-only environment of ``path``.

    py-lmdb refuses to open the same path twice in one process, and an environment inherited
    through ``fork`` (DataLoader workers) must not be used by the child: the child closes its
    inherited copies (which only unmaps them here; the parent's stay open) and opens its own.
    """
    global _SHARED_PID
    if _SHARED_PID != os.getpid():
        for env in _SHARED.values():
            env.close()
        _SHARED.clear()
        _SHARED_PID = os.getpid()
    key = Path(path).resolve()
    if key not in _SHARED:
        _SHARED[key] = open_readonly(key)
    return _SHARED[key]


def close_shared(path: str | Path) -> None:
    """Close this process's shared environment of ``path`` (e.g. before rewriting it)."""
    env = _SHARED.pop(Path(path).resolve(), None)
    if env is not None:
        env.close()


def iter_items(path: str | Path) -> Iterator[tuple[bytes, bytes]]:
    """Every key/value pair of a store, in key order (used to merge shards)."""
    env = open_readonly(path)
    try:
        with env.begin(buffers=False) as txn:
            yield from txn.cursor()
    finally:
        env.close()


class UtteranceStore:
    """Read access to one split's LMDB. Safe to create before forking DataLoader workers:
    each process reads through its own environment (:func:`shared_env`), opened on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._meta: dict[str, dict] = {}

    def meta(self, utt_id: str) -> dict:
        """The utterance's metadata (cached)."""
        if utt_id not in self._meta:
            with shared_env(self.path).begin() as txn:
                raw = txn.get(key(utt_id, "meta"))
            if raw is None:
                raise KeyError(f"{self.path}: no key {utt_id}/meta")
            self._meta[utt_id] = json.loads(raw)
        return self._meta[utt_id]

    def _slice(self, utt_id: str, part: str, start: int, stop: int, item_shape: tuple[int, ...], dtype) -> np.ndarray:
        item = int(np.prod(item_shape)) * np.dtype(dtype).itemsize
        with shared_env(self.path).begin(buffers=True) as txn:
            buf = txn.get(key(utt_id, part))
            if buf is None:
                raise KeyError(f"{self.path}: no key {utt_id}/{part}")
            # Copy only the requested rows out of the memory map.
            out = np.frombuffer(
                buf, dtype, count=(stop - start) * item // np.dtype(dtype).itemsize, offset=start * item
            )
            return out.reshape((stop - start, *item_shape)).copy()

    def frames(self, utt_id: str, stream: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Crops ``[start, stop)`` of ``stream`` ('rgb': (n, S, S, 3), 'thr': (n, S, S)) as uint8."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        m = self.meta(utt_id)
        stop = m["n_frames"] if stop is None else stop
        if not 0 <= start <= stop <= m["n_frames"]:
            raise IndexError(f"{utt_id}: frames [{start}, {stop}) outside [0, {m['n_frames']})")
        s = m["roi_size"]
        return self._slice(utt_id, stream, start, stop, (s, s, 3) if stream == "rgb" else (s, s), np.uint8)

    def audio(self, utt_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """16 kHz samples ``[start, stop)`` as float32."""
        m = self.meta(utt_id)
        stop = m["n_samples"] if stop is None else stop
        if not 0 <= start <= stop <= m["n_samples"]:
            raise IndexError(f"{utt_id}: samples [{start}, {stop}) outside [0, {m['n_samples']})")
        return self._slice(utt_id, "wav", start, stop, (), np.float32)

    def close(self) -> None:
        close_shared(self.path)
