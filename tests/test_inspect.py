"""python -m tavse.inspect on archives in the real layout built from the real frame of ../shared."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from tavse import inspect as insp
from tavse.corpus import speakingfaces as sfc
from tests.sfreal import write_real_layout_archive
from tests.sfzip import blank_utt, write_archive

ROOT = Path(__file__).resolve().parents[1]

# The frozen report on the real-layout archive (speaker 7: four commands over two trials, one with
# a missing aligned-RGB frame; mic2 present) against the repository's params with the vendored
# subjects.csv. Any change of the output fails here: update it only on purpose.
EXPECTED = """\
archive: sub_7_ia.zip
members: 39; speaker from the name: 7
prefix before trial_{t}/: 'sub_7_ia/'
stream folders (trial_{t}/<folder>/: files):
  trial 1: mic1_audio_cmd_trim 3, mic2_audio_cmd_trim 3, rgb_image_cmd_aligned 11, thr_image_cmd 12
  trial 2: mic1_audio_cmd_trim 1, mic2_audio_cmd_trim 1, rgb_image_cmd_aligned 4, thr_image_cmd 4
  used by ingest: rgb_image_cmd_aligned (found), thr_image_cmd (found), mic1_audio_cmd_trim (found)
  not used by ingest: mic2_audio_cmd_trim
utterances (commands x positions x trials): 4
  trial 1: 3 commands over 2 positions (p1 2, p2 1)
  trial 2: 1 command over 1 position (p1 1)
  frames per utterance: aligned RGB 3..4 (median 4), thermal 4
  |RGB - thermal| frame counts: max 1; 0 over ingest.frame_tolerance 2
  frame-number gaps: 1 utterance (1 frame(s) missing): s007_t1_p2_c0042 rgb_image_cmd_aligned missing 3
audio (mic1_audio_cmd_trim): 4 WAVs for 4 utterances; sample rate 44100 Hz x4; channels 1 x4; duration 0.14 s
sampled frames (frame 1 of 3 utterances): aligned RGB 464x348 x3; thermal 464x348 x3 (the real corpus: 464x348)
  thermal Iron residual (median per frame, RGB units): 1.4, 1.4, 1.4 (Iron: at most 6); greyscale pixels 0% -> FLIR Iron pseudo-colour
  FaceMesh (ingest's face detector) on the sampled aligned RGB frames: a face in 3 of 3
reader check (member lists and WAVs; --full decodes every frame): 3 of 4 utterance(s) load; would be skipped: missing_frames 1
  s007_t1_p1_c0040  rgb    4  thermal    4  audio   0.14 s  ok, 4 frames
  s007_t1_p1_c0041  rgb    4  thermal    4  audio   0.14 s  ok, 4 frames
  s007_t1_p2_c0042  rgb    3  thermal    4  audio   0.14 s  skip: missing_frames (rgb_image_cmd_aligned frame indices not contiguous (missing e.g. [3]))
  s007_t2_p1_c0040  rgb    4  thermal    4  audio   0.14 s  ok, 4 frames
params (params.yaml): data.speaker_split official -> speaker 7 in train; ingest.frame_tolerance 2; ingest.on_error skip
speaker metadata (data.subjects_csv data/real/subjects.csv): age 21, Male, Asian
verdict: ACCEPTED - ingest will take 3 of 4 utterance(s) of speaker 7 (split train); 1 skipped
notes:
  - 1 utterance skipped as missing_frames: frames are absent or their numbers have gaps (no param changes this)
"""


def real_params(folder: Path, **data: object) -> Path:
    """``folder/params.yaml``: the repository's params, data.subjects_csv the vendored table (copied beside it)."""
    p = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["data"]["subjects_csv"] = sfc.REAL_SUBJECTS_CSV
    p["data"].update(data)
    (folder / "data" / "real").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / sfc.REAL_SUBJECTS_CSV, folder / sfc.REAL_SUBJECTS_CSV)
    (folder / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return folder / "params.yaml"


def test_real_layout_archive_report_is_frozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_real_layout_archive(tmp_path / "sub_7_ia.zip")
    real_params(tmp_path)
    rc = insp.main(["sub_7_ia.zip", "--params", "params.yaml", "--utterances"])
    out = capsys.readouterr().out
    assert out == EXPECTED
    assert rc == 0
    # --full decodes every frame as ingest does: the same verdict and counts
    assert insp.main(["sub_7_ia.zip", "--params", "params.yaml", "--full", "--faces", "0"]) == 0
    full = capsys.readouterr().out
    assert (
        "reader check (every utterance decoded as ingest does): 3 of 4 utterance(s) load; would be skipped: "
        "missing_frames 1" in full
    )
    assert full.splitlines()[-3:] == EXPECTED.splitlines()[-3:]


def test_bad_archive_no_aligned_folder_greyscale_thermal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No rgb_image_cmd_aligned and greyscale thermal frames: REJECTED, each reason saying that no param fixes it."""
    monkeypatch.chdir(tmp_path)
    write_real_layout_archive(
        tmp_path / "sub_7_ia.zip", aligned=False, thermal="grey", utterances=((1, 1, 40, None), (1, 2, 41, None))
    )
    real_params(tmp_path)
    assert insp.main(["sub_7_ia.zip", "--params", "params.yaml"]) == 1
    out = capsys.readouterr().out
    assert "used by ingest: rgb_image_cmd_aligned (MISSING), thr_image_cmd (found), mic1_audio_cmd_trim (found)" in out
    assert "greyscale pixels 100% -> GREYSCALE (R = G = B), not Iron" in out
    assert (
        "reader check (member lists and WAVs; --full decodes every frame): 0 of 2 utterance(s) load; would be "
        "skipped: missing_frames 2" in out
    )
    verdict = out[out.index("verdict:") :]
    assert verdict.startswith("verdict: REJECTED - ingest will not use this archive as it is:\n")
    assert (
        "  - no rgb_image_cmd_aligned folder: nothing can be ingested (ingest finds the mouth on the aligned RGB frames"
    ) in verdict
    assert "No param changes this: the reader looks for trial_{t}/rgb_image_cmd_aligned/" in verdict
    assert (
        "  - thermal frames are not FLIR Iron pseudo-colour: single-channel (greyscale) thermal images. ingest maps "
        "each Iron colour back to its temperature (iron_to_temperature)"
    ) in verdict
    assert verdict.count("\n  - ") >= 2 and "none of the" not in verdict  # no third, redundant reason


def test_params_decide_split_tolerance_on_error_and_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A speaker outside the chosen split, on_error fail, a frame-count difference over the tolerance, no metadata."""
    monkeypatch.chdir(tmp_path)
    ok, off = blank_utt(6, command=1), blank_utt(6, command=2)
    off.thermal = off.thermal[:3]  # 6 RGB vs 3 thermal frames
    write_archive(tmp_path / "sub_130_ia.zip", 130, [ok, off])
    splits = {
        "official": {"train": [1, 100], "val": [101, 120], "test": [121, 129]},
        "tavse_legacy": {"train": [1, 100], "val": [101, 114], "test": [115, 142]},
    }
    real_params(tmp_path, speaker_splits=splits, subjects_csv="")
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["ingest"]["on_error"] = "fail"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert insp.main(["sub_130_ia.zip", "--params", "params.yaml", "--faces", "0"]) == 1
    out = capsys.readouterr().out
    assert "|RGB - thermal| frame counts: max 3; 1 over ingest.frame_tolerance 2" in out
    assert (
        "speaker 130 is outside every split of data.speaker_split official (train 1-100, val 101-120, test "
        "121-129): ingest leaves the archive out; change data.speaker_split or its ranges in data.speaker_splits"
    ) in out
    assert "ingest.on_error is fail and 1 utterance(s) would be skipped" in out and "set ingest.on_error: skip" in out
    assert "1 utterance(s) disagree in frame counts (RGB/thermal/audio) by up to 3: ingest.frame_tolerance: 3" in out
    assert (
        "speaker metadata (age, gender, ethnicity) will be empty for 1 of 1 speaker(s) (130): data.subjects_csv is "
        "empty; for the real SpeakingFaces corpus set data.subjects_csv: data/real/subjects.csv"
    ) in out
    # the same archive with the tolerance the report asked for: that utterance loads
    p["ingest"].update(frame_tolerance=3, on_error="skip")
    p["data"]["speaker_splits"]["official"]["test"] = [121, 142]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert insp.main(["sub_130_ia.zip", "--params", "params.yaml", "--faces", "0"]) == 1  # blank frames: not Iron
    out = capsys.readouterr().out
    assert "reader check (member lists and WAVs; --full decodes every frame): 2 of 2 utterance(s) load" in out
    assert "outside every split" not in out and "on_error" not in out.split("verdict:")[1]


def test_unreadable_and_misnamed_archives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sub_3_ia.zip").write_bytes(b"PK\x03\x04 cut short")
    assert insp.main([str(tmp_path / "sub_3_ia.zip"), "--params", str(ROOT / "params.yaml")]) == 1
    assert "not a readable zip archive" in capsys.readouterr().out
    write_archive(tmp_path / "speaker3.zip", 3, [blank_utt(4)])
    assert insp.main([str(tmp_path / "speaker3.zip"), "--params", str(ROOT / "params.yaml"), "--faces", "0"]) == 1
    assert "speaker3.zip: not named sub_{id}_ia.zip" in capsys.readouterr().out
    assert insp.main([str(tmp_path / "nope.zip")]) == 2
    assert "nope.zip: file not found" in capsys.readouterr().err


def test_speaker_metadata_warning(tmp_path: Path) -> None:
    csv = tmp_path / "subjects.csv"
    csv.write_text("Sub_ID,Split,Age,Gender,Ethnicity\n1,Train,30,Male,Asian\n")
    subjects = {1: {"age": "30", "gender": "Male", "ethnicity": "Asian"}}
    assert sfc.speaker_metadata_warning(str(csv), subjects, [1, 1]) is None
    msg = sfc.speaker_metadata_warning(str(csv), subjects, [1, 2, 3])
    assert msg.startswith(
        f"speaker metadata (age, gender, ethnicity) will be empty for 2 of 3 speaker(s) (2, 3): "
        f"data.subjects_csv {csv} has no row for them;"
    )
    assert "file not found" in sfc.speaker_metadata_warning(str(tmp_path / "x.csv"), {}, [1])
    assert "(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...)" in sfc.speaker_metadata_warning("", {}, range(1, 20))
    # the vendored table covers every speaker of the corpus
    from tavse.corpus.speakingfaces import read_subjects

    table = read_subjects(str(ROOT / sfc.REAL_SUBJECTS_CSV))
    assert sfc.speaker_metadata_warning(str(ROOT / sfc.REAL_SUBJECTS_CSV), table, range(1, 143)) is None
