"""Ingest fails loudly, never hangs, leaves no orphans, and survives concurrent runs.

Each stage run is a subprocess with a timeout; its exit code and time to exit are printed
(``pytest -s tests/pipeline/test_ingest_failures.py`` shows the figures).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tavse.corpus.errors import BadInput
from tavse.corpus.manifest import make_manifest
from tavse.ingest_shards import IngestError
from tavse.pipeline.ingest import build_shards, plan_ingest, run_ingest
from tests.conftest import ROOT, tiny_params, with_ingest
from tests.sfzip import Utt, wav, write_archive

TIMEOUT = 180


def face_utt(command: int = 1, n: int = 8, **kw) -> Utt:
    """A short utterance with a synthetic face (FaceMesh finds it) and Iron thermal frames."""
    from tavse.synth.faces import make_identity, render_frames

    rgb, thermal = render_frames(make_identity(5, 1), np.linspace(0, 1, n), seed=3)
    t = np.arange(n * 1575) / 44100
    kw.setdefault("audio", wav((0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)))
    kw.setdefault("rgb", list(rgb))
    kw.setdefault("thermal", list(thermal))
    return Utt(command=command, **kw)


def patch_member(path: Path, name: str, method: int | None = None, encrypted: bool = False) -> None:
    """Rewrite one member's compression method and/or encryption flag in both of its zip headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    raw, central = name.encode(), None
    i = data.find(b"PK\x01\x02")
    while i != -1:
        n = int.from_bytes(data[i + 28 : i + 30], "little")
        if data[i + 46 : i + 46 + n] == raw:
            central = i
            break
        i = data.find(b"PK\x01\x02", i + 1)
    assert central is not None
    for flag_at, method_at in ((local + 6, local + 8), (central + 8, central + 10)):
        if method is not None:
            data[method_at : method_at + 2] = method.to_bytes(2, "little")
        if encrypted:
            data[flag_at] |= 1
    path.write_bytes(bytes(data))


def member(path: Path, stream: str) -> str:
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if f"/{stream}/" in n)


def corpus(folder: Path, archives: dict[int, list[Utt]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for speaker, utts in archives.items():
        write_archive(folder / f"sub_{speaker}_ia.zip", speaker, utts)
    return folder


def listed(folder: Path) -> Path:
    make_manifest(folder, "speakingfaces", {"type": "local"})
    return folder


def stage_dir(tmp: Path, sf_dir: Path, **ingest) -> Path:
    """``tmp`` with a params.yaml for ``stages.ingest`` reading ``sf_dir``."""
    params = tiny_params(tmp)
    params["data"].update(speakingfaces_dir=str(sf_dir), subjects_csv="")
    params["ingest"].update({"workers": 1, **ingest})
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


def stage_env(tmp: Path, marker: str = "") -> dict:
    return dict(os.environ, TAVSE_SCRATCH_DIR=str(tmp / "scratch"), PYTHONPATH=str(ROOT), TAVSE_TEST_MARKER=marker)


def run_stage(tmp: Path, *args: str, marker: str = "") -> tuple[int, float, str]:
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "stages.ingest", *args],
        cwd=tmp,
        env=stage_env(tmp, marker),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return res.returncode, time.monotonic() - t0, res.stderr


def failure(stderr: str) -> str:
    """The stage's failure message (its first two lines) from its stderr."""
    lines = stderr.splitlines()
    at = next((i for i, ln in enumerate(lines) if "ingest failed: " in ln), None)
    return "(no failure message)" if at is None else " / ".join(lines[at : at + 2])[:400]


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds TAVSE_TEST_MARKER=marker (the stage and its workers)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = (d / "environ").read_bytes()
                state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
            except OSError:
                continue
            if f"TAVSE_TEST_MARKER={marker}".encode() in env.split(b"\0") and "zombie" not in state:
                found.append(int(d.name))
    return found


def grey(frames):
    return [np.repeat(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2) for f in frames]


def _bad_speaker(tmp: Path, case: str) -> Path:
    """A corpus of speaker 2 alone, broken as ``case`` says."""
    sf = tmp / "sf"
    if case == "missing_aligned_folder":
        corpus(sf, {2: [face_utt(rgb=[])]})
    elif case == "missing_audio_folder":
        corpus(sf, {2: [face_utt(audio=None), face_utt(command=2, audio=None)]})
    elif case == "greyscale_thermal":
        u = face_utt()
        u.thermal = grey(u.thermal)
        corpus(sf, {2: [u]})
    elif case in ("deflate64_member", "encrypted_member"):
        corpus(sf, {2: [face_utt()]})
        arc = sf / "sub_2_ia.zip"
        patch_member(
            arc,
            member(arc, "thr_image_cmd"),
            method=9 if case == "deflate64_member" else None,
            encrypted=case == "encrypted_member",
        )
    elif case == "empty_corpus_folder":
        sf.mkdir()  # nothing in it, no manifest.json either
        return sf
    return listed(sf)


EXPECTED = {
    "missing_aligned_folder": r"speaker 2 \(sub_2_ia.zip, split train\): no utterance ingested, 1 skipped \(missing_frames x1\)"
    r".*no rgb_image_cmd_aligned frames",
    "missing_audio_folder": r"speaker 2 .*no utterance ingested, 2 skipped \(missing_audio x2\)",
    "greyscale_thermal": r"speaker 2 .*\(thermal_not_iron x1\).*not FLIR Iron pseudo-colour: median distance to the Iron "
    r"palette \d+\.\d RGB units > ingest.max_palette_residual 6",
    "deflate64_member": r"speaker 2 .*\(unsupported_compression x1\).*thr_image_cmd/2_1_2_1_1_1_1\.png: cannot read member: "
    r"That compression method is not supported",
    "encrypted_member": r"speaker 2 .*\(encrypted_member x1\).*is encrypted, password required",
    "empty_corpus_folder": r"sf/manifest.json: no manifest in the corpus folder \(data.speakingfaces_dir\)",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_stage_fails_naming_the_speaker_and_the_reason(case, tmp_path):
    sf = _bad_speaker(tmp_path, case)
    code, seconds, err = run_stage(stage_dir(tmp_path, sf, on_error="skip"))
    print(f"\n{case}: exit {code} after {seconds:.1f} s: {failure(err)}")
    assert code == 1, err
    assert re.search(EXPECTED[case], err, re.S), err
    assert "Traceback" not in err and not (tmp_path / "ingest").exists()


def test_greyscale_thermal_is_a_named_bad_input_and_iron_is_not(tmp_path, tiny_corpus):
    sf = _bad_speaker(tmp_path, "greyscale_thermal")
    cfg = with_ingest(
        tiny_corpus, on_error="fail", workers=1, out_dir=str(tmp_path / "out"), report=str(tmp_path / "r.json")
    )
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, speakingfaces_dir=str(sf), subjects_csv=""))
    with pytest.raises(
        BadInput, match=r"sub_2_ia.zip:s002_t1_p1_c0001: thermal frames are not FLIR Iron.*\[thermal_not_iron\]"
    ):
        run_ingest(cfg.ingest, cfg.data, work_dir=tmp_path / "scratch")
    # The margins of the default threshold: real Iron ~1.4, synthetic 0, greyscale/other palettes far above 6.
    from tavse.vision.mouth_crops import palette_residual

    comp = (
        cv2.cvtColor(
            cv2.imread(str(ROOT.parent / "shared/fixtures/speakingfaces-real/aligned_session_one.png")),
            cv2.COLOR_BGR2RGB,
        )
        if (ROOT.parent / "shared/fixtures").is_dir()
        else None
    )
    if comp is not None:
        real = np.ascontiguousarray(comp[:, 464:928])
        g = cv2.cvtColor(real, cv2.COLOR_RGB2GRAY)
        inferno = cv2.cvtColor(cv2.applyColorMap(g, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
        figures = {
            "real": palette_residual([real]),
            "greyscale": palette_residual(grey([real])),
            "inferno": palette_residual([inferno]),
            "natural RGB": palette_residual([np.ascontiguousarray(comp[:, :464])]),
        }
        print("\npalette residual:", figures)
        assert figures["real"] < 3 and min(figures["greyscale"], figures["inferno"], figures["natural RGB"]) > 12


def test_split_left_empty_and_too_many_skips_fail(tmp_path, tiny_corpus):
    base = with_ingest(tiny_corpus, workers=1, out_dir=str(tmp_path / "out"), report=str(tmp_path / "r.json"))

    def cfg_for(sf: Path):
        return dataclasses.replace(
            base, data=dataclasses.replace(base.data, speakingfaces_dir=str(sf), subjects_csv="")
        )

    one = listed(corpus(tmp_path / "one", {1: [face_utt()]}))
    with pytest.raises(IngestError, match=r"split\(s\) val, test ended with no utterance \(1 ingested in all\)"):
        run_ingest(base.ingest, cfg_for(one).data, work_dir=tmp_path / "s1")
    bad = [face_utt(command=c, audio=None) for c in (2, 3, 4, 5)]
    many = listed(corpus(tmp_path / "many", {1: [face_utt(), *bad], 101: [face_utt()], 121: [face_utt()]}))
    with pytest.raises(
        IngestError,
        match=r"4 of 7 utterances skipped \(57% > ingest.max_skip_ratio 50%\): missing_audio x4; "
        r"most from sub_1_ia.zip \(4\)",
    ):
        run_ingest(base.ingest, cfg_for(many).data, work_dir=tmp_path / "s2")
    assert not (tmp_path / "out").exists()
    lenient = with_ingest(base, max_skip_ratio=0.6)
    report = run_ingest(lenient.ingest, cfg_for(many).data, work_dir=tmp_path / "s2")
    assert report["skip_ratio"] == 0.5714 and report["utterances"] == 3 and report["palette_residual_max"] < 1


def test_fail_with_two_workers_and_three_archives_exits_instead_of_hanging(tmp_path):
    """on_error: fail, 2 workers, 3 archives: the first bad input ends the stage (exit 1), no worker outlives it."""
    sf = listed(
        corpus(
            tmp_path / "sf",
            {
                1: [face_utt(), face_utt(command=2, audio=None)],
                2: [face_utt(), face_utt(command=2)],
                3: [face_utt(), face_utt(command=2)],
            },
        )
    )
    marker = uuid.uuid4().hex
    code, seconds, err = run_stage(stage_dir(tmp_path, sf, on_error="fail", workers=2), marker=marker)
    print(f"\non_error fail, 2 workers, 3 archives: exit {code} after {seconds:.1f} s: {failure(err)}")
    assert code == 1, err
    assert (
        "ingest failed: " in err
        and "sub_1_ia.zip:s001_t1_p1_c0002: no mic1 WAV for this command [missing_audio]" in err
    )
    time.sleep(1.5)
    assert marked_processes(marker) == [], "worker processes outlived the stage"
    assert not list((tmp_path / "scratch" / "ingest").glob(".sub_*.tmp")), "half-written shard left behind"


def ingest_writing_a_shard(tmp_path: Path, marker: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    """The ingest stage (2 workers, 3 speakers) started and caught while a worker writes a shard.

    Waits for that moment rather than a fixed time: on a quiet machine the whole ingest may be done
    after a few seconds, and a signal sent then would test nothing.
    """
    sf = listed(corpus(tmp_path / "sf", {s: [face_utt(command=c, n=84) for c in range(1, 5)] for s in (1, 2, 3)}))
    d = stage_dir(tmp_path, sf, workers=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.ingest"],
        cwd=d,
        env=stage_env(d, marker),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )
    scratch = tmp_path / "scratch" / "ingest"
    deadline = time.monotonic() + TIMEOUT
    while not list(scratch.glob(".sub_*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"ingest ended (exit {proc.returncode}) before any shard was being written"
    return proc


def test_killed_stage_leaves_no_orphan_workers(tmp_path):
    """SIGKILL of the stage (no cleanup possible there): its workers notice and end within seconds."""
    marker = uuid.uuid4().hex
    # stderr not piped: the workers inherit it, and reading it to its end would wait for them.
    proc = ingest_writing_a_shard(tmp_path, marker, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    while marked_processes(marker) and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    print(f"\nstage killed: its workers gone {time.monotonic() - t0:.1f} s later")
    assert marked_processes(marker) == []
    assert not list((tmp_path / "scratch" / "ingest").glob(".sub_*.tmp")), "half-written shard left behind"


def test_sigterm_stops_the_stage_and_its_workers(tmp_path):
    """SIGTERM mid-run (2 workers busy): exit 143 within seconds, workers gone, no half-written shard."""
    import signal

    marker = uuid.uuid4().hex
    proc = ingest_writing_a_shard(tmp_path, marker)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    print(f"\nSIGTERM: exit {proc.returncode} after {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 143, err
    assert marked_processes(marker) == []
    assert not list((tmp_path / "scratch" / "ingest").glob(".sub_*.tmp")), "half-written shard left behind"


def _flock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid {os.getpid()} on host test-host since now\n".encode())
    return fd


def test_concurrent_shard_builders_and_ingests(tmp_path):
    sf = listed(corpus(tmp_path / "sf", {1: [face_utt()], 101: [face_utt()], 121: [face_utt()]}))
    d = stage_dir(tmp_path, sf)
    scratch = tmp_path / "scratch" / "ingest"
    from tavse.common.config import load_config

    cfg = load_config(d / "params.yaml")
    plan = plan_ingest(cfg.ingest, cfg.data, work_dir=scratch)
    first = next(iter(plan.shards))
    shard = plan.shards[first][1]

    # A second builder of a shard another process is building (its lock held): a named skip, exit 0.
    fd = _flock(shard.parent / ".locks" / f"{shard.name}.lock")
    try:
        code, seconds, err = run_stage(d, "--shard", "0/1")
        print(f"\nshard builder while another builds sub_1: exit {code} after {seconds:.1f} s")
        assert code == 0, err
        assert (
            "sub_1_ia.zip: its shard is being built by another process (pid "
            f"{os.getpid()} on host test-host since now): skipped here (busy)"
        ) in err
        assert "built 2, reused 0, busy 1" in err and not plan.done(first)
    finally:
        os.close(fd)

    # Two real builders of the same task at once: each exits 0, every shard built once.
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stages.ingest", "--shard", "0/1"],
            cwd=d,
            env=stage_env(d),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    said = [re.search(r"done: built (\d+), reused (\d+), busy (\d+)", log) for log in logs]
    print(
        f"two concurrent builders: exit {[p.returncode for p in procs]} after {time.monotonic() - t0:.1f} s; "
        f"(built, reused, busy) {[m.groups() if m else None for m in said]}"
    )
    assert [p.returncode for p in procs] == [0, 0], logs
    assert all(plan.done(a) for a in plan.shards)

    # An ingest while another runs on the same scratch folder: a clear failure, nothing touched.
    fd = _flock(scratch / ".locks" / "ingest.lock")
    try:
        code, seconds, err = run_stage(d)
        print(f"ingest while another ingest runs: exit {code} after {seconds:.1f} s: {failure(err)}")
        assert code == 1 and f"another ingest is running on the scratch folder {scratch} (pid {os.getpid()}" in err, err
        assert all(plan.done(a) for a in plan.shards) and not (d / "ingest").exists()
    finally:
        os.close(fd)

    # Two real full ingests at once: one merges, the other fails clearly or finds the work done; outputs intact.
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stages.ingest"], cwd=d, env=stage_env(d), stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    codes = [p.returncode for p in procs]
    print(f"two concurrent ingests: exit {codes} after {time.monotonic() - t0:.1f} s")
    assert 0 in codes, logs
    for code, log in zip(codes, logs):
        assert code == 0 or "another ingest is running on the scratch folder" in log, log
        assert "FileNotFoundError" not in log
    assert (d / "ingest" / "manifests" / "train.csv").read_text().count("\n") == 2


def test_build_shards_names_a_speaker_without_utterances(tmp_path, tiny_corpus):
    sf = listed(corpus(tmp_path / "sf", {1: [face_utt(rgb=[])], 101: [face_utt()]}))
    cfg = with_ingest(tiny_corpus, workers=1)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, speakingfaces_dir=str(sf), subjects_csv=""))
    with pytest.raises(
        IngestError, match=r"1 speaker\(s\) yielded no utterance:\n  speaker 1 \(sub_1_ia.zip, split train\)"
    ):
        build_shards(cfg.ingest, cfg.data, 0, 2, work_dir=tmp_path / "scratch")
