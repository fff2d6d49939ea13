"""tavse.common.io: atomic replacement of files and folders, the exact JSON bytes, byte-stable zips, WAV bytes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tavse.common.io import ZIP_EPOCH, DeterministicZip, atomic_path, is_unsafe_member, wav_bytes, write_json


class Boom(Exception):
    pass


def names(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden ones (the temporary siblings) included."""
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- atomic_path


def test_atomic_path_renames_a_file_onto_its_place_and_creates_the_parents(tmp_path):
    final = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final and not tmp.exists()
        assert tmp.name.startswith(".out.txt.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert not final.exists()  # nothing at the final path until the block is done
    assert final.read_text() == "new"
    assert names(final.parent) == ["out.txt"]


def test_atomic_path_gives_a_fresh_name_each_time(tmp_path):
    with atomic_path(tmp_path / "x") as first, atomic_path(tmp_path / "x") as second:
        assert first != second  # two writers of one output never share a temporary
        first.write_text("first")
        second.write_text("second")
    assert (tmp_path / "x").read_text() == "first"  # the last block to finish wins
    assert names(tmp_path) == ["x"]


def test_an_exception_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(Boom), atomic_path(final) as tmp:
        tmp.write_text("half writ")
        raise Boom
    assert final.read_text() == "old"
    assert names(tmp_path) == ["out.txt"]


def test_an_exception_before_anything_existed_leaves_nothing(tmp_path):
    final = tmp_path / "sub" / "out.txt"
    with pytest.raises(Boom), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise Boom
    assert names(final.parent) == []


def test_an_exception_inside_a_temporary_folder_removes_the_whole_folder(tmp_path):
    final = tmp_path / "outdir"
    final.mkdir()
    (final / "kept.txt").write_text("old")
    with pytest.raises(Boom), atomic_path(final) as tmp:
        (tmp / "deep" / "er").mkdir(parents=True)
        (tmp / "deep" / "er" / "f.bin").write_bytes(b"x")
        raise Boom
    assert names(tmp_path) == ["outdir"]
    assert names(final) == ["kept.txt"] and (final / "kept.txt").read_text() == "old"


def test_a_folder_replaces_a_folder_whole_and_stale_files_go(tmp_path):
    final = tmp_path / "outdir"
    (final / "old_sub").mkdir(parents=True)
    (final / "old_sub" / "stale.txt").write_text("stale")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert names(final) == ["new.txt"]
    assert names(tmp_path) == ["outdir"]


def test_a_file_replaces_a_folder_and_a_folder_replaces_a_file(tmp_path):
    final = tmp_path / "thing"
    final.mkdir()
    (final / "f").write_text("in a folder")
    with atomic_path(final) as tmp:
        tmp.write_text("a file now")
    assert final.is_file() and final.read_text() == "a file now"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "g").write_text("a folder again")
    assert final.is_dir() and (final / "g").read_text() == "a folder again"
    assert names(tmp_path) == ["thing"]


def test_a_symlink_at_the_final_path_is_replaced_not_followed(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious.txt").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert (target / "precious.txt").read_text() == "keep"  # the folder the link pointed at is untouched


def test_a_dangling_symlink_at_the_final_path_is_replaced(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert not link.is_symlink() and link.read_text() == "new"


def test_a_block_that_creates_nothing_is_an_error_and_keeps_the_old_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "out.txt"):
        pass
    (tmp_path / "out.txt").write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "out.txt"):
        pass
    assert (tmp_path / "out.txt").read_text() == "old" and names(tmp_path) == ["out.txt"]


def test_a_file_is_replaced_in_one_rename_never_absent(tmp_path):
    """A reader polling the output while it is replaced always finds a whole file (old or new):
    the old file is not removed first."""
    import threading

    final = tmp_path / "out.txt"
    final.write_text("old" * 1000)
    seen: set[str] = set()
    done = threading.Event()

    def read():
        while not done.is_set():
            try:
                seen.add(final.read_text()[:3])
            except FileNotFoundError:
                seen.add("absent")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1000):
            with atomic_path(final) as tmp:
                tmp.write_text(("new" if i % 2 else "old") * 1000)
    finally:
        done.set()
        reader.join()
    assert "absent" not in seen and seen <= {"old", "new"}
    assert names(tmp_path) == ["out.txt"]


# ----------------------------------------------------------------------------- write_json


def test_write_json_exact_bytes_sorted_indented_and_newline_terminated(tmp_path):
    path = tmp_path / "r" / "report.json"
    write_json(path, {"b": [1, 2.5], "a": {"z": None, "y": True}, "é": "ü"})
    assert path.read_bytes() == (
        b"{\n"
        b'  "a": {\n'
        b'    "y": true,\n'
        b'    "z": null\n'
        b"  },\n"
        b'  "b": [\n'
        b"    1,\n"
        b"    2.5\n"
        b"  ],\n"
        b'  "\\u00e9": "\\u00fc"\n'
        b"}\n"
    )


def test_write_json_same_content_in_another_order_gives_the_same_bytes(tmp_path):
    write_json(tmp_path / "1.json", {"x": 1, "y": {"b": 2, "a": 3}})
    write_json(tmp_path / "2.json", {"y": {"a": 3, "b": 2}, "x": 1})
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "2.json").read_bytes()


def test_write_json_round_trips(tmp_path):
    obj = {"list": [1, "two", 3.0, None], "nested": {"k": [{"v": -1}]}, "unicode": "Ωmega"}
    write_json(tmp_path / "o.json", obj)
    assert json.loads((tmp_path / "o.json").read_text()) == obj


def test_write_json_of_an_unserialisable_object_keeps_the_old_file(tmp_path):
    path = tmp_path / "o.json"
    write_json(path, {"ok": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert path.read_bytes() == before
    assert names(tmp_path) == ["o.json"]


# ----------------------------------------------------------------------------- DeterministicZip


MEMBERS = [("b/second.wav", b"RIFF" + bytes(range(200))), ("a/first.png", b"\x89PNG" + bytes(50)), ("empty", b"")]


def write_zip(path: Path, members=MEMBERS) -> bytes:
    with DeterministicZip(path) as z:
        for name, data in members:
            z.add(name, data)
    return path.read_bytes()


def test_zip_bytes_depend_only_on_the_members(tmp_path):
    first = write_zip(tmp_path / "one.zip")
    second = write_zip(tmp_path / "other" / "two.zip")  # another name, another folder, later
    assert first == second
    assert write_zip(tmp_path / "three.zip", list(reversed(MEMBERS))) != first  # the order is part of the content


def test_zip_members_are_stored_in_order_with_fixed_time_and_mode(tmp_path):
    write_zip(tmp_path / "z.zip")
    with zipfile.ZipFile(tmp_path / "z.zip") as z:
        assert z.testzip() is None
        infos = z.infolist()
        assert [i.filename for i in infos] == [n for n, _ in MEMBERS]
        for info, (_, data) in zip(infos, MEMBERS, strict=True):
            assert z.read(info) == data
            assert info.compress_type == zipfile.ZIP_STORED and info.compress_size == len(data)
            assert info.date_time == ZIP_EPOCH
            assert info.external_attr >> 16 == 0o644 and info.create_system == 3
    assert names(tmp_path) == ["z.zip"]


def test_zip_layout_is_the_plain_one(tmp_path):
    """No extra fields, no data descriptor: a local header, the data, one central entry, the end record."""
    data = write_zip(tmp_path / "z.zip", [("x.txt", b"hello\n")])
    assert len(data) == (30 + 5 + 6) + (46 + 5) + 22
    header = data[:30]
    assert header[:4] == b"PK\x03\x04"
    assert header[6:8] == b"\x00\x00"  # flags: no data descriptor
    assert header[8:10] == b"\x00\x00"  # method: stored
    assert header[10:14] == b"\x00\x00\x21\x00"  # DOS time 00:00:00, date 1980-01-01
    assert header[28:30] == b"\x00\x00"  # no extra field
    assert data[30:41] == b"x.txthello\n"


def test_zip_is_invisible_until_closed_and_close_without_with(tmp_path):
    path = tmp_path / "z.zip"
    z = DeterministicZip(path)
    z.add("m", b"data")
    assert not path.exists()
    z.close()
    with zipfile.ZipFile(path) as read:
        assert read.read("m") == b"data"
    assert names(tmp_path) == ["z.zip"]


def test_an_exception_while_zipping_keeps_the_old_archive_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "z.zip"
    before = write_zip(path)
    with pytest.raises(Boom), DeterministicZip(path) as z:
        z.add("new", b"x" * 1000)
        raise Boom
    assert path.read_bytes() == before
    assert names(tmp_path) == ["z.zip"]


def test_an_exception_while_zipping_a_new_archive_leaves_nothing(tmp_path):
    with pytest.raises(Boom), DeterministicZip(tmp_path / "new.zip") as z:
        z.add("a", b"1")
        raise Boom
    assert names(tmp_path) == []


# ----------------------------------------------------------------------------- wav_bytes


def test_wav_bytes_pcm16_header_rate_and_samples():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0], dtype=np.float32)
    data = wav_bytes(x, 16000)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert len(data) == 44 + 2 * len(x)  # a plain 44-byte header, then 16-bit samples
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, len(x), "PCM_16")
    pcm = np.frombuffer(data[44:], dtype="<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32768]


def test_wav_bytes_int16_round_trips_exactly():
    x = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    back, sr = sf.read(io.BytesIO(wav_bytes(x, 48000)), dtype="int16")
    assert sr == 48000 and back.tolist() == x.tolist()


def test_wav_bytes_float_subtype_keeps_the_samples():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    data = wav_bytes(x, 8000, subtype="FLOAT")
    back, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == 8000 and sf.info(io.BytesIO(data)).subtype == "FLOAT"
    assert np.array_equal(back, x)


def test_wav_bytes_are_deterministic():
    x = np.sin(np.arange(1000) / 7).astype(np.float32) * 0.3
    assert wav_bytes(x, 16000) == wav_bytes(x.copy(), 16000)


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "\\\\server\\share\\x", "a/../b", "a\\..\\b", "C:x", "c:/x", "..", "../x"]
)
def test_names_that_escape_the_folder_are_unsafe(name):
    assert is_unsafe_member(name)


@pytest.mark.parametrize(
    "name", ["a/b", "a/b..c", "sub_1_ia/rgb_image_cmd_aligned/1.png", "..a/b", "DKITCHEN/ch01.wav"]
)
def test_ordinary_member_names_are_safe(name):
    assert not is_unsafe_member(name)
