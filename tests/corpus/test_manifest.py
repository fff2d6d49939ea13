"""Corpus manifests as the stages read them: ingest and noise plan from the manifest, never a glob."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest

from tavse.common.config import config_from_dict
from tavse.corpus import manifest as mf
from tavse.pipeline.ingest import plan_ingest
from tavse.pipeline.noise import prepare_noise
from tavse.synth.noise import write_demand_corpus
from tests.conftest import tiny_params


def _archive(path: Path, n_bytes: int) -> Path:
    """A small zip in the SpeakingFaces name pattern (planning reads only its central directory)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{path.stem}/trial_1/mic1_audio_cmd_trim/x.wav", b"\0" * n_bytes)
    return path


@pytest.fixture()
def sf_folder(tmp_path: Path):
    """A SpeakingFaces folder with a local manifest, a .part and a note beside it; and a config reading it."""
    folder = tmp_path / "speakingfaces"
    folder.mkdir()
    for s in (121, 2, 101):
        _archive(folder / f"sub_{s}_ia.zip", 500 + s)
    mf.make_manifest(folder, "speakingfaces", {"type": "local"})
    (folder / "sub_5_ia.zip.part").write_bytes(b"PK\x03\x04 half")  # a running download
    _archive(folder / "sub_7_ia.zip", 10)  # complete, but not listed
    (folder / "README.txt").write_text("notes")
    params = tiny_params(tmp_path)
    params["data"].update(speakingfaces_dir=str(folder), subjects_csv="")
    return folder, config_from_dict(params)


def test_ingest_plans_the_listed_archives_and_counts_the_rest(sf_folder, tmp_path, caplog) -> None:
    folder, cfg = sf_folder
    caplog.set_level(logging.INFO, logger="tavse.corpus.manifest")
    plan = plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")
    assert [a.name for a in plan.archives] == ["sub_2_ia.zip", "sub_101_ia.zip", "sub_121_ia.zip"]
    assert {a.name: split for a, (split, _) in plan.shards.items()} == {
        "sub_2_ia.zip": "train",
        "sub_101_ia.zip": "val",
        "sub_121_ia.zip": "test",
    }
    assert (
        f"{folder}: 3 file(s) not listed in manifest.json ignored (README.txt, sub_5_ia.zip.part, sub_7_ia.zip)"
        in caplog.text
    )


def test_ingest_refuses_an_archive_of_another_size(sf_folder, tmp_path) -> None:
    folder, cfg = sf_folder
    listed = mf.read_manifest(folder).by_path()["sub_101_ia.zip"].size
    with open(folder / "sub_101_ia.zip", "ab") as f:
        f.write(b"junk")
    with pytest.raises(mf.ManifestError) as err:
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")
    msg = str(err.value)
    assert f"{folder}/sub_101_ia.zip: size {listed + 4} bytes, but {folder}/manifest.json lists {listed} bytes" in msg
    assert "run the download again" in msg and f"python -m tavse.download manifest {folder}" in msg
    (folder / "sub_2_ia.zip").unlink()
    with pytest.raises(mf.ManifestError, match=rf"{folder}/sub_2_ia\.zip: listed in .*manifest\.json but missing"):
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")


def test_ingest_verify_catches_a_same_size_change(sf_folder, tmp_path) -> None:
    folder, cfg = sf_folder
    path = folder / "sub_121_ia.zip"
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x01  # inside the central directory comment/offsets: same size, other bytes
    path.write_bytes(bytes(data))
    plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")  # sizes only: passes
    with pytest.raises(mf.ChecksumMismatch, match=rf"{path}: SHA256 [0-9a-f]{{64}}, but .* lists [0-9a-f]{{64}}"):
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch", verify=True)


def test_missing_or_wrong_manifest_is_a_clear_error(sf_folder, tmp_path) -> None:
    folder, cfg = sf_folder
    (folder / "manifest.json").unlink()
    with pytest.raises(mf.ManifestMissing) as err:
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")
    msg = str(err.value)
    assert f"{folder}/manifest.json: no manifest in the corpus folder (data.speakingfaces_dir)" in msg
    assert f"python -m tavse.download speakingfaces --out {folder}" in msg
    assert f"python -m tavse.download manifest {folder}" in msg and "dvc repro synth_corpus" in msg
    assert isinstance(err.value, FileNotFoundError)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(mf.ManifestError, match=rf"{folder}/manifest\.json: not valid JSON"):
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")
    (folder / "manifest.json").write_text(
        json.dumps({"format": 1, "corpus": "demand", "source": {"type": "local"}, "files": []})
    )
    with pytest.raises(
        mf.ManifestError,
        match=r"describes a demand corpus, expected speakingfaces: does "
        r"data\.speakingfaces_dir point at the right folder",
    ):
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "format": 1,
                "corpus": "speakingfaces",
                "source": {"type": "local"},
                "files": [{"path": "../sub_1_ia.zip", "size": 1}],
            }
        )
    )
    with pytest.raises(mf.ManifestError, match=r"'\.\./sub_1_ia\.zip' is not a plain relative path"):
        plan_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")


# ----------------------------------------------------------------------------- noise


@pytest.fixture()
def demand_folder(tmp_path: Path) -> Path:
    src = tmp_path / "demand"
    write_demand_corpus(src, ["TCAR", "NFIELD", "SCAFE"], duration_s=0.25, n_channels=1, seed=0)
    (src / "NFIELD_16k.zip").unlink()
    mf.make_manifest(src, "demand", {"type": "local"})
    write_demand_corpus(src, ["NFIELD"], duration_s=0.25, n_channels=1, seed=0)  # present, not listed
    (src / "TCAR_48k.zip.part").write_bytes(b"PK")
    return src


def test_noise_reads_the_manifest(demand_folder: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="tavse.corpus.manifest")
    m = mf.read_manifest(demand_folder, "demand")
    assert [(f.path, bool(f.md5), bool(f.sha256)) for f in m.files] == [
        ("SCAFE_48k.zip", True, True),
        ("TCAR_16k.zip", True, True),
    ]
    report = prepare_noise(demand_folder, tmp_path / "noise", {"train": ["TCAR"], "test": ["SCAFE"]}, channels=[1])
    assert report["total_files"] == 2
    assert "2 file(s) not listed in manifest.json ignored (NFIELD_16k.zip, TCAR_48k.zip.part)" in caplog.text
    with pytest.raises(
        FileNotFoundError, match=r"NFIELD not found in .*listed in its manifest\.json; found: SCAFE, TCAR"
    ):
        prepare_noise(demand_folder, tmp_path / "noise2", {"train": ["NFIELD"]}, channels=[1])


def test_noise_refuses_size_change_verifies_hashes_and_needs_a_manifest(demand_folder: Path, tmp_path: Path) -> None:
    splits = {"train": ["TCAR"]}
    zip_path = demand_folder / "TCAR_16k.zip"
    data = bytearray(zip_path.read_bytes())
    data[60] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    with pytest.raises(mf.ChecksumMismatch, match=r"TCAR_16k\.zip: SHA256"):
        prepare_noise(demand_folder, tmp_path / "noise", splits, channels=[1], verify=True)
    zip_path.write_bytes(bytes(data[:-10]))
    with pytest.raises(
        mf.ManifestError, match=rf"{zip_path}: size {len(data) - 10} bytes, but .* lists {len(data)} bytes"
    ):
        prepare_noise(demand_folder, tmp_path / "noise", splits, channels=[1])
    (demand_folder / "manifest.json").unlink()
    with pytest.raises(
        mf.ManifestMissing,
        match=r"no manifest in the corpus folder \(data\.demand_dir\).*"
        rf"python -m tavse\.download demand --out {demand_folder}.*dvc repro synth_noise",
    ):
        prepare_noise(demand_folder, tmp_path / "noise", splits, channels=[1])
    assert not (tmp_path / "noise").exists()


def test_synthetic_manifest_is_deterministic(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b"):
        write_demand_corpus(tmp_path / name, ["TCAR"], duration_s=0.25, n_channels=1, seed=3)
        paths.append(
            mf.write_synthetic_manifest(tmp_path / name, "demand", "synth_noise", {"seed": 3})
            and tmp_path / name / "manifest.json"
        )
    assert paths[0].read_bytes() == paths[1].read_bytes()
    raw = json.loads(paths[0].read_text())
    assert raw["source"] == {"type": "synthetic", "generator": "synth_noise", "params": {"seed": 3}}
    assert [f["path"] for f in raw["files"]] == ["TCAR_16k.zip"]
