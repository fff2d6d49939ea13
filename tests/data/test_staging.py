"""tavse.data.staging: the root from $TAVSE_STAGE_DIR, the source fingerprint, and the copy made, reused or refused."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tavse.data import staging
from tavse.data.staging import STAGE_ENV, fingerprint, stage_copy, staging_root


def make_source(folder: Path) -> Path:
    """A folder like ingest's output: LMDB files in sub-folders, a manifest, an empty folder."""
    (folder / "lmdb" / "train").mkdir(parents=True)
    (folder / "lmdb" / "train" / "data.mdb").write_bytes(bytes(range(256)) * 40)
    (folder / "lmdb" / "val").mkdir()
    (folder / "lmdb" / "val" / "data.mdb").write_bytes(b"\x00" * 1000)
    (folder / "manifests").mkdir()
    (folder / "manifests" / "train.csv").write_text("utt_id,frames\ns1,10\n")
    (folder / "empty").mkdir()
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- staging_root


def test_unset_or_blank_means_no_staging(monkeypatch):
    monkeypatch.delenv(STAGE_ENV, raising=False)
    assert staging_root() is None
    for blank in ("", "   ", "\t\n"):
        monkeypatch.setenv(STAGE_ENV, blank)
        assert staging_root() is None


def test_root_is_absolute_resolved_and_stripped(monkeypatch, tmp_path):
    monkeypatch.setenv(STAGE_ENV, f"  {tmp_path}/a/../b  ")
    assert staging_root() == tmp_path.resolve() / "b"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STAGE_ENV, "relative/stage")
    root = staging_root()
    assert root is not None and root.is_absolute() and root == tmp_path.resolve() / "relative" / "stage"


def test_root_expands_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(STAGE_ENV, "~/stage")
    assert staging_root() == tmp_path.resolve() / "stage"


def test_root_follows_a_symlink(monkeypatch, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setenv(STAGE_ENV, str(tmp_path / "link"))
    assert staging_root() == (tmp_path / "real").resolve()


def test_the_variable_is_the_one_the_docs_name():
    assert STAGE_ENV == "TAVSE_STAGE_DIR"


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_16_hex_digits_and_stable(tmp_path):
    src = make_source(tmp_path / "ingest")
    fp = fingerprint(src)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fingerprint(src) == fp


def test_fingerprint_of_a_copy_with_the_same_times_is_the_same_wherever_it_lies(tmp_path):
    src = make_source(tmp_path / "ingest")
    shutil.copytree(src, tmp_path / "elsewhere" / "other-name")  # copy2 keeps the modification times
    assert fingerprint(tmp_path / "elsewhere" / "other-name") == fingerprint(src)


def test_fingerprint_changes_with_a_size_a_time_a_name_or_a_new_file(tmp_path):
    src = make_source(tmp_path / "ingest")
    seen = {fingerprint(src)}
    mdb = src / "lmdb" / "val" / "data.mdb"
    st = mdb.stat()

    mdb.write_bytes(b"\x00" * 1001)  # size
    os.utime(mdb, ns=(st.st_atime_ns, st.st_mtime_ns))
    seen.add(fingerprint(src))

    mdb.write_bytes(b"\x00" * 1000)
    os.utime(mdb, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a nanosecond later
    seen.add(fingerprint(src))

    os.utime(mdb, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(src) in seen  # back as it was: the first fingerprint again

    mdb.rename(mdb.with_name("lock.mdb"))  # a name
    seen.add(fingerprint(src))

    (src / "extra.txt").write_text("")  # a new, empty file
    seen.add(fingerprint(src))
    assert len(seen) == 5


def test_fingerprint_ignores_empty_folders(tmp_path):
    src = make_source(tmp_path / "ingest")
    fp = fingerprint(src)
    (src / "another" / "empty" / "one").mkdir(parents=True)
    assert fingerprint(src) == fp


def test_fingerprint_of_a_missing_folder_or_a_file_names_the_stage_to_run(tmp_path):
    for path in (tmp_path / "missing", tmp_path / "file"):
        if path.name == "file":
            path.write_text("x")
        with pytest.raises(FileNotFoundError, match="not a folder .run the stage that produces it first"):
            fingerprint(path)


# ----------------------------------------------------------------------------- stage_copy


def test_copy_is_named_by_the_source_and_its_fingerprint_and_holds_the_same_bytes(tmp_path):
    src = make_source(tmp_path / "data" / "ingest")
    root = tmp_path / "node" / "stage"  # made when missing
    dest = stage_copy(src, root)
    assert dest == root / f"ingest-{fingerprint(src)}"
    assert snapshot(dest) == snapshot(src)
    assert (dest / "empty").is_dir()
    assert listing(root) == [dest.name]  # no temporary left beside it
    assert fingerprint(dest) == fingerprint(src)  # the copy keeps the times: it is recognised again


def test_an_identical_copy_is_reused_not_copied_again(tmp_path, caplog):
    src = make_source(tmp_path / "ingest")
    root = tmp_path / "stage"
    dest = stage_copy(src, root)
    (dest / "marker").write_text("made by the first job")  # a second copy would not have it
    with caplog.at_level(logging.INFO, logger=staging.__name__):
        again = stage_copy(src, root)
    assert again == dest and (again / "marker").is_file()
    assert "reusing" in caplog.text
    assert listing(root) == [dest.name]


def test_a_relative_source_is_resolved(tmp_path, monkeypatch):
    make_source(tmp_path / "work" / "ingest")
    monkeypatch.chdir(tmp_path / "work")
    dest = stage_copy(Path("ingest"), tmp_path / "stage")
    assert dest.name.startswith("ingest-") and snapshot(dest) == snapshot(tmp_path / "work" / "ingest")


def test_a_changed_source_gets_a_fresh_copy_and_the_old_one_stays(tmp_path):
    src = make_source(tmp_path / "ingest")
    root = tmp_path / "stage"
    old = stage_copy(src, root)
    (src / "manifests" / "train.csv").write_text("utt_id,frames\ns1,10\ns2,11\n")
    new = stage_copy(src, root)
    assert new != old and new.name == f"ingest-{fingerprint(src)}"
    assert (new / "manifests" / "train.csv").read_text().endswith("s2,11\n")
    assert (old / "manifests" / "train.csv").read_text() == "utt_id,frames\ns1,10\n"  # another job may read it
    assert listing(root) == sorted([old.name, new.name])


def test_two_sources_of_the_same_name_in_one_root_do_not_collide(tmp_path):
    a = make_source(tmp_path / "a" / "noise")
    b = tmp_path / "b" / "noise"
    b.mkdir(parents=True)
    (b / "train.wav").write_bytes(b"RIFF")
    root = tmp_path / "stage"
    assert stage_copy(a, root) != stage_copy(b, root)
    assert len(listing(root)) == 2


def test_symlinks_in_the_source_become_real_files(tmp_path):
    src = make_source(tmp_path / "ingest")
    (tmp_path / "outside.bin").write_bytes(b"outside")
    (src / "link.bin").symlink_to(tmp_path / "outside.bin")
    dest = stage_copy(src, tmp_path / "stage")
    assert not (dest / "link.bin").is_symlink() and (dest / "link.bin").read_bytes() == b"outside"


def test_locate_only_finds_the_copy_or_says_rank_0_should_have_made_it(tmp_path):
    src = make_source(tmp_path / "ingest")
    root = tmp_path / "stage"
    with pytest.raises(FileNotFoundError, match="local rank 0 should have made it"):
        stage_copy(src, root, copy=False)
    assert not root.exists()  # locating makes nothing
    made = stage_copy(src, root)
    assert stage_copy(src, root, copy=False) == made


def test_a_failed_copy_leaves_nothing_in_the_root(tmp_path):
    src = make_source(tmp_path / "ingest")
    (src / "zz-dangling").symlink_to(tmp_path / "nowhere")  # copytree follows links: this one fails it
    root = tmp_path / "stage"
    with pytest.raises(shutil.Error):
        stage_copy(src, root)
    assert listing(root) == []
    with pytest.raises(FileNotFoundError):
        stage_copy(src, root, copy=False)  # nothing half-copied passes for a copy


def test_a_copy_made_meanwhile_by_another_job_is_used_and_not_replaced(tmp_path, monkeypatch, caplog):
    """Two jobs on one node stage the same source at once: the second rename fails, the first copy stays."""
    src = make_source(tmp_path / "ingest")
    root = tmp_path / "stage"
    real_copytree = shutil.copytree
    other: list[Path] = []

    def copytree_while_another_job_finishes(source, target, *args, **kwargs):
        result = real_copytree(source, target, *args, **kwargs)  # (copytree calls itself for sub-folders)
        if Path(target).parent == root and not other:  # the other job's copy lands at the final name meanwhile
            done = root / f"ingest-{fingerprint(src)}"
            real_copytree(source, done)
            (done / "other-job").write_text("")
            other.append(done)
        return result

    monkeypatch.setattr(shutil, "copytree", copytree_while_another_job_finishes)
    with caplog.at_level(logging.INFO, logger=staging.__name__):
        dest = stage_copy(src, root)
    assert dest == other[0] and (dest / "other-job").is_file()  # the other job's copy, untouched
    assert "staged by another job meanwhile" in caplog.text
    assert listing(root) == [dest.name]  # this job's temporary is gone
