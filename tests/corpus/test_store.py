"""The LMDB store: layout, growth, byte-stable output, read-only opening that touches nothing."""

import hashlib
import os

import lmdb
import numpy as np
import pytest

from tavse.corpus import store


def _utt(i: int, frames: int = 21, roi: int = 16):
    rng = np.random.default_rng(i)
    return store.utterance_items(
        f"s001_t1_p1_c{i:04d}",
        {"fps": 28},
        rng.integers(0, 256, (frames, roi, roi, 3), dtype=np.uint8),
        rng.integers(0, 256, (frames, roi, roi), dtype=np.uint8),
        rng.standard_normal(frames * 4000 // 7).astype(np.float32),
    )


def _digest(path):
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def test_reads_return_the_slices_written(tmp_path):
    items = _utt(3)
    store.write_store(tmp_path / "db", [items])
    s = store.UtteranceStore(tmp_path / "db")
    values = dict(items)
    rgb = np.frombuffer(values[b"s001_t1_p1_c0003/rgb"], np.uint8).reshape(21, 16, 16, 3)
    wav = np.frombuffer(values[b"s001_t1_p1_c0003/wav"], np.float32)
    np.testing.assert_array_equal(s.frames("s001_t1_p1_c0003", "rgb", 7, 14), rgb[7:14])
    np.testing.assert_array_equal(s.audio("s001_t1_p1_c0003", 4000, 8000), wav[4000:8000])
    assert s.frames("s001_t1_p1_c0003", "thr").shape == (21, 16, 16)
    assert s.meta("s001_t1_p1_c0003")["n_frames"] == 21
    with pytest.raises(IndexError):
        s.frames("s001_t1_p1_c0003", "rgb", 14, 22)
    with pytest.raises(KeyError, match="no key"):
        s.meta("nope")


def test_map_grows_instead_of_map_full(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_INITIAL_MAP", 1 << 16)  # 64 KiB: the first utterance already overflows it
    n = store.write_store(tmp_path / "db", (_utt(i, frames=35, roi=24) for i in range(12)))
    assert n == 48
    assert (tmp_path / "db" / "data.mdb").stat().st_size > 12 * 35 * 24 * 24 * 4


def test_same_content_same_bytes_and_only_data_mdb(tmp_path):
    store.write_store(tmp_path / "a", (_utt(i) for i in range(5)))
    store.write_store(tmp_path / "b", (_utt(i) for i in range(5)))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert os.listdir(tmp_path / "a") == ["data.mdb"]


def test_readers_do_not_modify_the_store(tmp_path):
    store.write_store(tmp_path / "db", [_utt(1)])
    before = _digest(tmp_path / "db"), sorted(os.listdir(tmp_path / "db"))
    s = store.UtteranceStore(tmp_path / "db")
    s.frames("s001_t1_p1_c0001", "rgb")
    s.close()
    assert (_digest(tmp_path / "db"), sorted(os.listdir(tmp_path / "db"))) == before
    with pytest.raises(lmdb.ReadonlyError):
        env = store.open_readonly(tmp_path / "db")
        with env.begin(write=True) as txn:
            txn.put(b"x", b"y")


def test_failed_write_leaves_nothing_behind(tmp_path):
    def batches():
        yield _utt(1)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        store.write_store(tmp_path / "db", batches())
    assert list(tmp_path.iterdir()) == []


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing data.mdb"):
        store.UtteranceStore(tmp_path / "none").meta("x")
