"""The ingest stage on the tiny synthetic corpus: outputs, determinism, resume, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tavse.common.config import Config
from tavse.corpus.store import UtteranceStore
from tavse.pipeline.ingest import build_shards, parse_shard, run_ingest
from tests.common.test_logs import assert_readable_log
from tests.conftest import ROOT, default_sigint, tiny_params, with_ingest
from tests.sfzip import Utt, blank_utt, wav, write_archive


def leftovers(scratch: Path) -> list[str]:
    """What a finished ingest left in its scratch folder besides its lock file."""
    names = sorted(p.name for p in scratch.iterdir())
    assert not names or names[0] != ".locks" or os.listdir(scratch / ".locks") == ["ingest.lock"]
    return [n for n in names if n != ".locks"]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def ingested(tiny_data):
    """The session's tiny ingest (2 workers): its config, report and scratch folder."""
    return tiny_data, json.loads(Path(tiny_data.ingest.report).read_text())


def test_outputs_manifests_and_report(ingested):
    cfg, report = ingested
    size = cfg.synth.size
    assert report["splits"]["train"]["speakers"] == size.train_speakers
    assert report["splits"]["val"]["speakers"] == size.val_speakers
    assert report["splits"]["test"]["speakers"] == size.test_speakers
    n_speakers = size.train_speakers + size.val_speakers + size.test_speakers
    assert report["utterances"] == n_speakers * size.commands_per_speaker
    assert report["skipped_total"] == 0 and report["detection_rate"] > 0.95
    assert json.loads(Path(cfg.ingest.report).read_text()) == report
    ingest_dir = Path(cfg.ingest.out_dir)
    with open(ingest_dir / "manifests" / "train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == size.train_speakers * size.commands_per_speaker
    row = rows[0]
    assert row["gender"] in ("Male", "Female") and float(row["detection_ratio"]) > 0.9
    store = UtteranceStore(ingest_dir / "lmdb" / "train")
    n = int(row["n_frames"])
    rgb, thr = store.frames(row["utt_id"], "rgb"), store.frames(row["utt_id"], "thr")
    assert rgb.shape == (n, cfg.ingest.roi_size, cfg.ingest.roi_size, 3) and thr.shape == rgb.shape[:3]
    assert store.audio(row["utt_id"]).shape == (int(row["n_samples"]),) == (round(n * 16000 / 28),)
    assert sorted(os.listdir(ingest_dir / "lmdb" / "train")) == ["data.mdb"]


def test_crops_follow_the_speech(ingested):
    """Lip gap from the landmarks (in the crops) tracks the clean speech loudness."""
    _, report = ingested
    for split in ("train", "val", "test"):
        assert report["splits"][split]["av_sync_r_mean"] > 0.6


def test_output_bytes_do_not_depend_on_worker_count(ingested, tmp_path):
    cfg, _ = ingested
    one = with_ingest(cfg, out_dir=str(tmp_path / "ingest"), report=str(tmp_path / "report.json"), workers=1)
    run_ingest(one.ingest, one.data, work_dir=tmp_path / "scratch")
    assert leftovers(tmp_path / "scratch") == []  # finished shards are cleaned up
    assert tree_digest(tmp_path / "ingest") == tree_digest(Path(cfg.ingest.out_dir))
    assert (tmp_path / "report.json").read_bytes() == Path(cfg.ingest.report).read_bytes()


def _stage_folder(ingested, tmp_path: Path) -> Config:
    """``tmp_path`` as a folder to run ``stages.ingest`` in: params.yaml reading the tiny archives, 1 worker."""
    cfg, _ = ingested
    params = tiny_params(tmp_path)
    params["data"]["speakingfaces_dir"] = cfg.data.speakingfaces_dir
    params["data"]["subjects_csv"] = cfg.data.subjects_csv
    params["ingest"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return cfg


def test_killed_ingest_resumes_and_ends_byte_identical(ingested, tmp_path):
    cfg = _stage_folder(ingested, tmp_path)
    env = dict(os.environ, TAVSE_SCRATCH_DIR=str(tmp_path / "scratch"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "stages.ingest"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "scratch" / "ingest").glob("*/result.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "ingest").exists()  # no half-written output
    done = len(list((tmp_path / "scratch" / "ingest").glob("*/result.json")))
    assert done >= 1
    second = subprocess.run(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, check=True)
    assert f"{done} reused" in second.stderr
    assert tree_digest(tmp_path / "ingest") == tree_digest(Path(cfg.ingest.out_dir))


def test_ctrl_c_stops_ingest_in_one_line_and_the_rerun_logs_cleanly(ingested, tmp_path):
    """Ctrl-C as a terminal sends it (SIGINT to the stage and its two workers): one line, no
    traceback from any process, no worker left, finished shards kept. The rerun, its log a file
    as under SLURM and warnings as errors in every process, prints no MediaPipe/TFLite notice,
    no bar redraws and no overlong line, and ends with the summary line."""
    cfg = _stage_folder(ingested, tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["ingest"]["workers"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, TAVSE_SCRATCH_DIR=str(tmp_path / "scratch"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-W", "error", "-m", "stages.ingest"]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stderr=log, start_new_session=True, preexec_fn=default_sigint
        )
    deadline = time.time() + 120
    while not list((tmp_path / "scratch" / "ingest").glob("*/result.json")) and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == -signal.SIGINT  # a shell reports 130
    first = (tmp_path / "first.log").read_text()
    assert "Traceback" not in first and "KeyboardInterrupt" not in first, first
    assert first.count("interrupted (Ctrl-C): `python -W error -m stages.ingest` stopped before finishing") == 1, first
    time.sleep(1)
    # The workers are gone with their parent (a zombie may wait for a reaper the container lacks).
    group = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    assert [line for line in group.splitlines() if not line.strip().startswith("Z")] == [], group
    assert not (tmp_path / "ingest").exists()

    with open(tmp_path / "second.log", "w") as log:
        subprocess.run(cmd, cwd=tmp_path, env=env, stderr=log, check=True, timeout=300)
    second = (tmp_path / "second.log").read_text()
    assert_readable_log(second, tmp_path)
    assert "inference_feedback_manager" not in second and "TensorFlow Lite" not in second
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert f"{report['splits']['train']['utterances']} utt. of" in second.splitlines()[-1]
    assert " INFO tavse.ingest: ingest done in " in second.splitlines()[-1]
    assert tree_digest(tmp_path / "ingest") == tree_digest(Path(cfg.ingest.out_dir))


def test_shards_built_as_two_tasks_then_merge_is_byte_identical(ingested, tmp_path, caplog):
    """Tasks 0/2 and 1/2 (two concurrent processes) build every shard; the stage then only merges."""
    cfg = _stage_folder(ingested, tmp_path)
    scratch = tmp_path / "scratch"
    env = dict(os.environ, TAVSE_SCRATCH_DIR=str(scratch), PYTHONPATH=str(ROOT))
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "stages.ingest", "--shard", f"{i}/2"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    logs = [t.communicate(timeout=300)[1] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], logs
    archives = sorted(Path(cfg.data.speakingfaces_dir).glob("sub_*_ia.zip"), key=lambda p: int(p.name.split("_")[1]))
    assert len(archives) == 4
    for i, log in enumerate(logs):  # round-robin over the archives in speaker order
        mine = ", ".join(a.name for a in archives[i::2])
        assert f"shard {i}/2: 2 of 4 archives ({mine}): 2 to build, 0 reused" in log, log
    assert len(list((scratch / "ingest").glob("*/result.json"))) == 4
    assert not (tmp_path / "ingest").exists()  # shards only, no stage output

    # Built shards are reused, not rebuilt; the same keys as the stage's.
    ing = with_ingest(cfg, out_dir=str(tmp_path / "ingest"), report=str(tmp_path / "report.json"), workers=1)
    assert build_shards(ing.ingest, ing.data, 1, 2, work_dir=scratch / "ingest") == {
        "built": [],
        "reused": [a.name for a in archives[1::2]],
        "busy": [],
        "unsplit": [],
    }
    with caplog.at_level("INFO", logger="tavse.ingest"):
        run_ingest(ing.ingest, ing.data, work_dir=scratch / "ingest")
    assert "4 archives: 0 shards to build, 4 reused" in caplog.text
    assert leftovers(scratch / "ingest") == []
    assert tree_digest(tmp_path / "ingest") == tree_digest(Path(cfg.ingest.out_dir))
    assert (tmp_path / "report.json").read_bytes() == Path(cfg.ingest.report).read_bytes()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3/2", r"shard 3/2: INDEX must be in 0\.\.1"),
        ("2/2", r"shard 2/2: INDEX must be in 0\.\.1"),
        ("0/0", r"shard 0/0: COUNT must be at least 1"),
        ("a/b", r"shard 'a/b': expected INDEX/COUNT with whole numbers"),
        ("1", r"shard '1': expected INDEX/COUNT"),
        ("-1/2", r"shard '-1/2': expected INDEX/COUNT"),
        ("1.0/2", r"expected INDEX/COUNT with whole numbers"),
    ],
)
def test_bad_shard_spec_is_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_shard(spec)


def test_bad_shard_fails_clearly(tiny_corpus, tmp_path):
    cfg = tiny_corpus
    with pytest.raises(ValueError, match=r"shard 3/2: INDEX must be in 0\.\.1"):
        build_shards(cfg.ingest, cfg.data, 3, 2, work_dir=tmp_path)
    with pytest.raises(TypeError, match=r"index must be a whole number"):
        build_shards(cfg.ingest, cfg.data, "0", 2, work_dir=tmp_path)
    assert not tmp_path.joinpath("sub_1").exists() and list(tmp_path.iterdir()) == []
    # The stage's command line: exit 2, the reason on stderr, nothing built.
    res = subprocess.run(
        [sys.executable, "-m", "stages.ingest", "--shard", "0/0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TAVSE_SCRATCH_DIR=str(tmp_path)),
    )
    assert res.returncode == 2 and "--shard: shard 0/0: COUNT must be at least 1" in res.stderr, res.stderr
    # A missing archive folder: its path, and the stage that writes it.
    import dataclasses

    gone = dataclasses.replace(cfg.data, speakingfaces_dir=str(tmp_path / "nowhere"))
    with pytest.raises(
        FileNotFoundError,
        match=rf"{tmp_path}/nowhere: SpeakingFaces archive folder not found.*"
        r"`dvc repro synth_corpus`",
    ):
        build_shards(cfg.ingest, gone, 0, 2, work_dir=tmp_path)


def _face_utt(**kw) -> Utt:
    """A short utterance with a real (synthetic) face, so it survives FaceMesh."""
    from tavse.synth.faces import make_identity, render_frames

    rgb, thermal = render_frames(make_identity(5, 1), np.linspace(0, 1, 8), seed=3)
    t = np.arange(8 * 1575) / 44100
    kw.setdefault("audio", wav((0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)))
    return Utt(rgb=list(rgb), thermal=list(thermal), **kw)


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory, tiny_corpus):
    d = tmp_path_factory.mktemp("bad")
    corpus = d / "corpus"
    corpus.mkdir()
    short = blank_utt(4, command=5, size=(464, 348))
    short.thermal = short.thermal[:1]
    no_face = _face_utt(command=2)
    no_face.rgb = blank_utt(len(no_face.rgb), size=(464, 348)).rgb  # grey RGB frames: no face
    grey_thermal = _face_utt(command=7)
    grey_thermal.thermal = [
        np.repeat(f.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2) for f in grey_thermal.thermal
    ]
    write_archive(
        corpus / "sub_3_ia.zip",
        3,
        [
            _face_utt(command=1),
            no_face,
            _face_utt(command=3, audio=None),  # missing audio
            _face_utt(command=4, audio=wav(np.zeros((8 * 1575, 2), np.float32))),  # stereo
            short,  # 4 RGB vs 1 thermal
            _face_utt(command=6, rgb_bytes={2: b"not a png"}),  # unreadable PNG
            grey_thermal,  # greyscale thermal
        ],
        extra={"../../evil/trial_1/thr_image_cmd/3_1_2_1_1_1_1.png": b"x"},
    )
    write_archive(corpus / "sub_101_ia.zip", 101, [_face_utt(command=1)])  # val and test: one good utterance each
    write_archive(corpus / "sub_121_ia.zip", 121, [_face_utt(command=1)])
    from tavse.corpus.manifest import make_manifest

    make_manifest(corpus, "speakingfaces", {"type": "local"})  # listed as they are: ingest reports them
    broken = d / "broken"
    broken.mkdir()
    (broken / "sub_4_ia.zip").write_bytes(b"PK\x03\x04 truncated garbage")  # corrupt zip
    good = (corpus / "sub_3_ia.zip").read_bytes()
    (broken / "sub_121_ia.zip").write_bytes(good[: len(good) // 2])  # truncated zip
    make_manifest(broken, "speakingfaces", {"type": "local"})
    return d


def _bad_cfg(tiny_corpus, d: Path, on_error: str, folder: str = "corpus", **ingest):
    cfg = with_ingest(
        tiny_corpus,
        out_dir=str(d / on_error / "ingest"),
        report=str(d / on_error / "report.json"),
        on_error=on_error,
        workers=1,
        **ingest,
    )
    import dataclasses

    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, speakingfaces_dir=str(d / folder), subjects_csv="")
    )


def test_bad_input_is_skipped_counted_and_listed(bad_corpus, tiny_corpus):
    cfg = _bad_cfg(tiny_corpus, bad_corpus, "skip", max_skip_ratio=1.0)
    report = run_ingest(cfg.ingest, cfg.data, work_dir=bad_corpus / "scratch")
    assert report["skipped"] == {
        "frame_count_mismatch": 1,
        "missing_audio": 1,
        "no_face": 1,
        "stereo_audio": 1,
        "thermal_not_iron": 1,
        "unreadable_image": 1,
    }
    assert report["ignored_members"] == {"unsafe_member_name": 1}
    assert report["utterances"] == 3 and report["splits"]["train"]["utterances"] == 1
    assert report["skip_ratio"] == round(6 / 9, 4)
    with open(Path(cfg.ingest.out_dir) / "skipped.csv") as fh:
        skipped = list(csv.DictReader(fh))
    assert len(skipped) == 6
    assert {Path(s["path"].split(":")[0]).name for s in skipped} == {"sub_3_ia.zip"}
    unreadable = next(s for s in skipped if s["reason"] == "unreadable_image")
    assert unreadable["path"].endswith("3_1_2_1_6_2_3.png")
    with open(Path(cfg.ingest.out_dir) / "manifests" / "train.csv") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["palette_residual"]) < 1  # the synthetic thermal frames are exact Iron colours


def test_too_many_skips_fail_the_ingest(bad_corpus, tiny_corpus):
    from tavse.ingest_shards import IngestError

    cfg = with_ingest(_bad_cfg(tiny_corpus, bad_corpus, "skip"), out_dir=str(bad_corpus / "ratio" / "ingest"))
    with pytest.raises(IngestError, match=r"6 of 9 utterances skipped \(67% > ingest.max_skip_ratio 50%\)"):
        run_ingest(cfg.ingest, cfg.data, work_dir=bad_corpus / "scratch")
    assert not Path(cfg.ingest.out_dir).exists()


def test_unreadable_archives_fail_naming_each_speaker(bad_corpus, tiny_corpus):
    from tavse.ingest_shards import IngestError

    cfg = _bad_cfg(tiny_corpus, bad_corpus, "skip", folder="broken")
    with pytest.raises(
        IngestError,
        match=r"2 speaker\(s\) yielded no utterance:\n"
        r"  speaker 4 \(sub_4_ia.zip, split train\): no utterance ingested, 1 skipped "
        r"\(corrupt_archive x1\); e.g. .*sub_4_ia.zip: not a readable zip archive.*\n"
        r"  speaker 121 \(sub_121_ia.zip, split test\): .*corrupt_archive x1",
    ):
        run_ingest(cfg.ingest, cfg.data, work_dir=bad_corpus / "scratch_broken")


def test_bad_input_fails_naming_the_file(bad_corpus, tiny_corpus):
    from tavse.corpus.errors import BadInput

    cfg = _bad_cfg(tiny_corpus, bad_corpus, "fail")
    with pytest.raises(BadInput, match=r"sub_3_ia\.zip:s003_t1_p1_c0002.*no_face"):
        run_ingest(cfg.ingest, cfg.data, work_dir=bad_corpus / "scratch_fail")
    assert not Path(cfg.ingest.out_dir).exists()
