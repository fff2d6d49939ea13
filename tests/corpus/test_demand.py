"""DEMAND reader and noise stage: real layouts, resampling, split-by-environment, bad input, atomic output."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from tavse.common.io import wav_bytes
from tavse.corpus.demand import discover_demand
from tavse.corpus.manifest import make_manifest
from tavse.corpus.noise_kinds import NOISE_KINDS
from tavse.pipeline import noise
from tavse.pipeline.noise import MANIFEST_COLUMNS
from tavse.synth.noise import write_demand_corpus


def prepare_noise(source_dir: Path, *args, **kwargs) -> dict:
    """The noise stage on ``source_dir`` as these tests build it: its manifest (source local) first."""
    if Path(source_dir).is_dir():
        make_manifest(source_dir, "demand", {"type": "local"})
    return noise.prepare_noise(source_dir, *args, **kwargs)


def _seed(env: str, channel: int) -> int:
    return int(hashlib.sha256(f"{env}{channel}".encode()).hexdigest()[:8], 16)


def _noise(seed: int, n: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _demand_zip(root: Path, env: str, rate: int = 16000, n_channels: int = 2, seconds: float = 0.25) -> Path:
    n = int(rate * seconds)
    members = {f"{env}/": b""}  # real DEMAND zips carry a directory entry too
    members.update(
        {f"{env}/ch{c:02d}.wav": wav_bytes(_noise(_seed(env, c), n), rate) for c in range(1, n_channels + 1)}
    )
    return _make_zip(root / f"{env}_{rate // 1000}k.zip", members)


def _demand_folder(root: Path, env: str, rate: int = 16000, n_channels: int = 2, seconds: float = 0.25) -> Path:
    folder = root / env
    folder.mkdir(parents=True)
    for c in range(1, n_channels + 1):
        (folder / f"ch{c:02d}.wav").write_bytes(wav_bytes(_noise(_seed(env, c), int(rate * seconds)), rate))
    return folder


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- happy paths


def test_zips_are_split_by_environment_and_copied_bit_exactly(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    for env in ("DKITCHEN", "NFIELD", "TCAR", "OOFFICE"):
        _demand_zip(src, env, n_channels=3)
    out = tmp_path / "noise"
    report = prepare_noise(src, out, {"train": ["DKITCHEN", "NFIELD"], "test": ["TCAR"]}, channels=[1, 3])

    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "DKITCHEN_ch01.wav",
        "DKITCHEN_ch03.wav",
        "NFIELD_ch01.wav",
        "NFIELD_ch03.wav",
    ]
    assert sorted(p.name for p in (out / "test").iterdir()) == ["TCAR_ch01.wav", "TCAR_ch03.wav"]
    rows = _manifest(out)
    assert tuple(rows[0]) == MANIFEST_COLUMNS and len(rows) == 6
    assert {r["env"]: r["split"] for r in rows} == {"DKITCHEN": "train", "NFIELD": "train", "TCAR": "test"}
    assert {r["env"]: r["kind"] for r in rows} == {
        "DKITCHEN": "transient",
        "NFIELD": "stationary",
        "TCAR": "stationary",
    }
    row = next(r for r in rows if r["env"] == "TCAR" and r["channel"] == "3")
    assert row["path"] == "test/TCAR_ch03.wav" and row["source"] == "TCAR_16k.zip:TCAR/ch03.wav"
    assert (row["n_samples"], row["duration_s"]) == ("4000", "0.250000")

    # 16 kHz PCM_16 sources are copied integer for integer.
    with zipfile.ZipFile(src / "TCAR_16k.zip") as archive:
        original, _ = sf.read(archive.open("TCAR/ch03.wav"), dtype="int16")
    copied, rate = sf.read(out / row["path"], dtype="int16")
    assert rate == 16000 and np.array_equal(copied, original)
    assert sf.info(out / row["path"]).subtype == "PCM_16"
    rms = np.sqrt(np.mean((copied / 32768.0) ** 2))
    assert float(row["rms_dbfs"]) == pytest.approx(20 * np.log10(rms), abs=0.01)

    assert report["splits"]["train"] == {
        "environments": ["DKITCHEN", "NFIELD"],
        "files": 4,
        "seconds": 1.0,
        "kinds": {"stationary": ["NFIELD"], "transient": ["DKITCHEN"], "babble": []},
        "missing_kinds": ["babble"],
    }
    assert report["environments"]["TCAR"]["kind"] == "stationary"
    assert report["splits"]["test"]["files"] == 2
    assert report["unused_environments"] == ["OOFFICE"] and report["n_unused_environments"] == 1
    assert report["total_files"] == 6 and report["total_seconds"] == pytest.approx(1.5)
    assert not (out / "train" / "OOFFICE_ch01.wav").exists()


def test_extracted_folders_and_mixed_sources(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    _demand_folder(src, "NPARK")
    _demand_zip(src, "TBUS")
    (src / "README.txt").write_text("not a recording")
    out = tmp_path / "noise"
    report = prepare_noise(src, out, {"train": ["NPARK"], "valid": ["TBUS"]}, channels=[2])
    rows = _manifest(out)
    assert [(r["split"], r["env"], r["source"]) for r in rows] == [
        ("train", "NPARK", "NPARK/ch02.wav"),
        ("valid", "TBUS", "TBUS_16k.zip:TBUS/ch02.wav"),
    ]
    assert report["environments"]["NPARK"]["source_kind"] == "folder"
    original, _ = sf.read(src / "NPARK" / "ch02.wav", dtype="int16")
    assert np.array_equal(sf.read(out / "train/NPARK_ch02.wav", dtype="int16")[0], original)


def test_48k_is_resampled_to_16k(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    _make_zip(src / "SCAFE_48k.zip", {"SCAFE/ch01.wav": wav_bytes(tone, 48000)})
    out = tmp_path / "noise"
    report = prepare_noise(src, out, {"test": ["SCAFE"]}, channels=[1])
    y, rate = sf.read(out / "test/SCAFE_ch01.wav", dtype="float64")
    assert rate == 16000 and y.size == 16000
    source = sf.read(zipfile.ZipFile(src / "SCAFE_48k.zip").open("SCAFE/ch01.wav"), dtype="float64")[0]
    assert np.max(np.abs(y - resample_poly(source, 1, 3))) <= 1 / 32768  # one rounding step
    spectrum = np.abs(np.fft.rfft(y[2000:-2000] * np.hanning(12000)))
    assert np.argmax(spectrum) * 16000 / 12000 == pytest.approx(1000, abs=2)
    assert report["environments"]["SCAFE"] == {
        "split": "test",
        "kind": "babble",
        "source": "SCAFE_48k.zip",
        "source_kind": "zip",
        "source_rate": [48000],
        "resampled": True,
    }


def test_16k_preferred_over_48k_and_zip_over_folder(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    _demand_zip(src, "PSTATION", rate=48000)
    _demand_zip(src, "PSTATION", rate=16000)
    _demand_folder(src, "TMETRO", rate=48000)
    _demand_folder(src, "OMEETING")
    _demand_zip(src, "OMEETING")
    found = discover_demand(src)
    assert [s.name for s in found["PSTATION"]] == ["PSTATION_16k.zip", "PSTATION_48k.zip"]
    assert [s.name for s in found["OMEETING"]] == ["OMEETING_16k.zip", "OMEETING"]
    report = prepare_noise(src, tmp_path / "noise", {"a": ["PSTATION", "TMETRO"], "b": ["OMEETING"]}, channels=[1])
    assert report["environments"]["PSTATION"]["source"] == "PSTATION_16k.zip"
    assert report["environments"]["TMETRO"]["resampled"] is True
    assert report["environments"]["OMEETING"]["source"] == "OMEETING_16k.zip"


def test_output_is_deterministic_and_replaced_atomically(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    write_demand_corpus(src, ["TCAR", "SCAFE"], duration_s=0.5, n_channels=2, seed=0)
    splits = {"train": ["TCAR"], "test": ["SCAFE"]}
    prepare_noise(src, tmp_path / "a", splits, channels=[1, 2])
    prepare_noise(src, tmp_path / "b", splits, channels=[1, 2])
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert sorted(_tree_digest(tmp_path / "a")) == [
        "manifest.csv",
        "test/SCAFE_ch01.wav",
        "test/SCAFE_ch02.wav",
        "train/TCAR_ch01.wav",
        "train/TCAR_ch02.wav",
    ]
    # A rerun with other settings replaces the folder wholesale: no stale files survive.
    prepare_noise(src, tmp_path / "a", {"train": ["TCAR"]}, channels=[2])
    assert sorted(_tree_digest(tmp_path / "a")) == ["manifest.csv", "train/TCAR_ch02.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "demand"]  # no temp dirs left


def test_kinds_per_split_and_a_warning_for_a_missing_kind(tmp_path: Path, caplog) -> None:
    src = tmp_path / "demand"
    for env in ("DLIVING", "OMEETING", "TBUS", "NRIVER"):
        _demand_zip(src, env, n_channels=1)
    with caplog.at_level("WARNING", logger="tavse.noise"):
        report = prepare_noise(
            src, tmp_path / "noise", {"val": ["DLIVING", "OMEETING", "TBUS"], "test": ["NRIVER"]}, channels=[1]
        )
    assert report["splits"]["val"]["kinds"] == {
        "stationary": ["TBUS"],
        "transient": ["DLIVING"],
        "babble": ["OMEETING"],
    }
    assert report["splits"]["val"]["missing_kinds"] == []
    assert report["splits"]["test"]["missing_kinds"] == ["transient", "babble"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "'test'" in warnings[0] and "transient or babble" in warnings[0], warnings
    assert {r["env"]: r["kind"] for r in _manifest(tmp_path / "noise")} == {
        "DLIVING": "transient",
        "OMEETING": "babble",
        "TBUS": "stationary",
        "NRIVER": "stationary",
    }


def test_default_splits_cover_every_kind_without_warnings(tmp_path: Path, caplog) -> None:
    import yaml

    splits = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())["noise"]["splits"]
    src = tmp_path / "demand"
    for env in NOISE_KINDS:
        _demand_zip(src, env, n_channels=1, seconds=0.05)
    with caplog.at_level("WARNING", logger="tavse.noise"):
        report = prepare_noise(src, tmp_path / "noise", splits, channels=[1])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert all(entry["missing_kinds"] == [] for entry in report["splits"].values())
    assert report["unused_environments"] == []


def test_environment_of_no_known_kind_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    _demand_zip(src, "TCAR")
    _demand_zip(src, "XCELLAR")
    with pytest.raises(ValueError, match=r"'XCELLAR' has no known noise kind"):
        prepare_noise(src, tmp_path / "out", {"train": ["TCAR", "XCELLAR"]}, channels=[1])
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- split and argument errors


def test_environment_in_two_splits_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    _demand_zip(src, "TCAR")
    _demand_zip(src, "NFIELD")
    with pytest.raises(ValueError, match=r"'TCAR'.*'train' and 'test'"):
        prepare_noise(src, tmp_path / "out", {"train": ["TCAR", "NFIELD"], "test": ["TCAR"]}, channels=[1])
    with pytest.raises(ValueError, match="'TCAR' listed twice"):
        prepare_noise(src, tmp_path / "out", {"train": ["TCAR", "TCAR"]}, channels=[1])
    assert not (tmp_path / "out").exists()


def test_missing_environment_names_it_and_the_folder(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    _demand_zip(src, "TCAR")
    with pytest.raises(FileNotFoundError, match=rf"DLIVING.*{src}.*found: TCAR"):
        prepare_noise(src, tmp_path / "out", {"train": ["TCAR", "DLIVING"]}, channels=[1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_noise(tmp_path / "nowhere", tmp_path / "out", {"train": ["TCAR"]}, channels=[1])


@pytest.mark.parametrize(
    ("splits", "channels", "message"),
    [
        ({}, [1], "no splits"),
        ({"train": []}, [1], "at least one environment"),
        ({"../up": ["TCAR"]}, [1], "split name"),
        ({"train": ["TCAR"]}, [], "channels"),
        ({"train": ["TCAR"]}, [1, 1], "channels"),
        ({"train": ["TCAR"]}, [0], "channels"),
    ],
)
def test_bad_arguments(tmp_path: Path, splits: dict, channels: list[int], message: str) -> None:
    _demand_zip(tmp_path / "demand", "TCAR")
    with pytest.raises(ValueError, match=message):
        prepare_noise(tmp_path / "demand", tmp_path / "out", splits, channels)


def test_missing_channel_names_the_archive(tmp_path: Path) -> None:
    _demand_zip(tmp_path / "demand", "TCAR", n_channels=2)
    with pytest.raises(FileNotFoundError, match=r"TCAR_16k\.zip.*TCAR/ch05\.wav"):
        prepare_noise(tmp_path / "demand", tmp_path / "out", {"train": ["TCAR"]}, channels=[5])


# ----------------------------------------------------------------------------- bad input files


def _stereo() -> bytes:
    return wav_bytes(np.stack([_noise(1, 800), _noise(2, 800)], axis=1), 16000)


def _nan() -> bytes:
    x = _noise(1, 800)
    x[100] = np.nan
    return wav_bytes(x, 16000, subtype="FLOAT")


BAD_ZIP_MEMBERS = {
    "empty WAV": ({"TCAR/ch01.wav": wav_bytes(np.zeros(0, np.float32), 16000)}, "empty WAV"),
    "NaN samples": ({"TCAR/ch01.wav": _nan()}, "NaN"),
    "stereo": ({"TCAR/ch01.wav": _stereo()}, "2 channels, expected mono"),
    "wrong rate": (
        {"TCAR/ch01.wav": wav_bytes(_noise(1, 4800), 48000)},
        r"48000 Hz, expected 16000 Hz \(as the name TCAR_16k\.zip says\)",
    ),
    "silent": ({"TCAR/ch01.wav": wav_bytes(np.zeros(800, np.float32), 16000)}, "all samples are zero"),
    "not a WAV": ({"TCAR/ch01.wav": b"RIFF....garbage"}, "not a readable WAV"),
    "zip-slip ..": (
        {"TCAR/ch01.wav": wav_bytes(_noise(1, 800), 16000), "TCAR/../../evil.wav": b"x"},
        r"unsafe member name 'TCAR/\.\./\.\./evil\.wav'",
    ),
    "zip-slip absolute": (
        {"TCAR/ch01.wav": wav_bytes(_noise(1, 800), 16000), "/etc/evil.wav": b"x"},
        "unsafe member name '/etc/evil.wav'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ZIP_MEMBERS))
def test_bad_zip_content_names_the_file(tmp_path: Path, case: str) -> None:
    members, message = BAD_ZIP_MEMBERS[case]
    src = tmp_path / "demand"
    zip_path = _make_zip(src / "TCAR_16k.zip", members)
    out = tmp_path / "noise"
    out.mkdir()
    (out / "previous.txt").write_text("earlier run")
    with pytest.raises(ValueError, match=message) as info:
        prepare_noise(src, out, {"train": ["TCAR"]}, channels=[1])
    assert str(zip_path) in str(info.value)
    # Atomic: the earlier output is untouched and no temp folder is left behind.
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demand", "noise"]


def test_corrupt_zip_names_the_file(tmp_path: Path) -> None:
    src = tmp_path / "demand"
    src.mkdir()
    (src / "TCAR_16k.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ValueError, match=r"TCAR_16k\.zip: corrupt or not a zip"):
        prepare_noise(src, tmp_path / "noise", {"train": ["TCAR"]}, channels=[1])
    # A zip whose member data is damaged (CRC mismatch) is caught too.
    good = _demand_zip(src / "sub", "NFIELD", n_channels=1)
    data = bytearray(good.read_bytes())
    data[data.index(b"data") + 200] ^= 0xFF  # flip a byte inside the stored WAV samples
    (src / "NFIELD_16k.zip").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"NFIELD_16k\.zip: corrupt"):
        prepare_noise(src, tmp_path / "noise", {"train": ["NFIELD"]}, channels=[1])
    assert not (tmp_path / "noise").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (lambda: wav_bytes(_noise(1, 4410), 44100), r"44100 Hz, expected 16000 or 48000 Hz"),
        (_stereo, "2 channels, expected mono"),
        (_nan, "NaN"),
        (lambda: wav_bytes(np.zeros(0, np.float32), 16000), "empty WAV"),
    ],
)
def test_bad_folder_file_names_the_file(tmp_path: Path, data, message: str) -> None:
    folder = tmp_path / "demand" / "NRIVER"
    folder.mkdir(parents=True)
    bad = folder / "ch01.wav"
    bad.write_bytes(data())
    with pytest.raises(ValueError, match=message) as info:
        prepare_noise(tmp_path / "demand", tmp_path / "noise", {"train": ["NRIVER"]}, channels=[1])
    assert str(bad) in str(info.value)
    assert not (tmp_path / "noise").exists()
