"""tavse.download against a local fake Zenodo + fake HuggingFace Hub (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tavse.corpus import manifest as mf
from tavse.dotenv import read_dotenv
from tavse.download import __main__ as cli
from tavse.download.errors import ChecksumError, DownloadError
from tavse.download.fetch import ManifestRecorder, RunOptions, check_free_space
from tavse.download.files import FileStatus, RemoteFile
from tavse.download.http import download_file
from tavse.download.huggingface import REVISION_ENV, download_speakingfaces, parse_speakers, speaker_path
from tavse.download.progress import STATE_NAME, RateWindow, StateFile, fmt_bytes, fmt_duration, fmt_rate, folder_lock
from tavse.download.secrets import check_token_transport, is_loopback_host
from tavse.download.status import demand_names, folder_status, speakingfaces_names
from tavse.download.zenodo import ZENODO_ENDPOINT_ENV, download_demand, select_demand
from tests.fake_servers import (
    COMMIT,
    COMMIT_V1,
    REPO,
    TOKEN,
    FakeServer,
    make_zip,
    serve,
)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes read before a dropped connection only reach disk chunk by chunk: use small chunks."""
    monkeypatch.setattr("tavse.download.http.CHUNK", 4096)


@pytest.fixture()
def server() -> Iterator[tuple[FakeServer, str]]:
    with serve() as running:
        yield running


def range_start(header: str | None) -> int:
    """Offset of a ``Range: bytes=N-`` request header (-1 if absent)."""
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else -1


def demand_kwargs(url: str) -> dict[str, object]:
    return {
        "record_url": f"{url}/api/records/1227121",
        "files_url": f"{url}/files",
        "backoff": 0.01,
    }


# --------------------------------------------------------------------------- pure helpers


def test_parse_speakers_and_dotenv(tmp_path: Path) -> None:
    assert parse_speakers("1-3, 121,2") == [1, 2, 3, 121]
    with pytest.raises(ValueError):
        parse_speakers("140-143")
    env = tmp_path / ".env"
    env.write_text(f'# comment\nOTHER=1\nexport HF_TOKEN="{TOKEN}"\n')
    assert read_dotenv(env)["HF_TOKEN"] == TOKEN


def test_a_bad_env_file_line_stops_the_run_by_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--env-file is read as tavse.cluster_setup reads it: a line that is not KEY=VALUE is an error
    (exit 1) naming the file and line, never the line's text (a token, maybe)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv(ZENODO_ENDPOINT_ENV, raising=False)
    env = tmp_path / ".env"
    env.write_text(f"# the token\nHF_TOKEN {TOKEN}\n")
    for corpus in ("speakingfaces", "demand"):
        assert cli.main([corpus, "--out", str(tmp_path / corpus), "--env-file", str(env)]) == 1
        err = capsys.readouterr().err
        assert f"error: {env}:2: expected KEY=VALUE" in err and TOKEN not in err
        assert not (tmp_path / corpus).exists()  # refused before anything was fetched or written


def test_select_demand_default_is_16k_plus_scafe_48k() -> None:
    files = [RemoteFile(n, "u") for n in ["A_16k.zip", "A_48k.zip", "SCAFE_48k.zip", "B_16k.zip"]]
    assert [f.name for f in select_demand(files)] == [
        "A_16k.zip",
        "B_16k.zip",
        "SCAFE_48k.zip",
    ]
    assert [f.name for f in select_demand(files, ["scafe", "A_48k.zip"])] == [
        "SCAFE_48k.zip",
        "A_48k.zip",
    ]
    with pytest.raises(DownloadError, match="NOPE"):
        select_demand(files, ["NOPE"])


# --------------------------------------------------------------------------- DEMAND


def demand_status(folder: Path, envs: list[str]) -> dict[str, FileStatus]:
    """Offline status of the given environments' zips."""
    return {r.name: r for r in folder_status(folder, "demand", demand_names(envs)).rows}


def test_demand_download_skip_resume_and_status(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    kw = demand_kwargs(url)
    expected = ["DKITCHEN_16k.zip", "NPARK_16k.zip", "SCAFE_48k.zip"]
    envs = ["DKITCHEN", "NPARK", "SCAFE"]
    assert [s.state for s in demand_status(tmp_path, envs).values()] == ["missing"] * 3

    # a part left by an earlier run, and a connection drop mid-file in this one
    (tmp_path / "NPARK_16k.zip.part").write_bytes(state.demand["NPARK_16k.zip"][:1000])
    state.drop_once.add("SCAFE_48k.zip")
    statuses = demand_status(tmp_path, envs)
    assert statuses["NPARK_16k.zip"].state == "partial" and statuses["NPARK_16k.zip"].local_bytes == 1000

    paths = download_demand(tmp_path, **kw)
    assert [p.name for p in paths] == expected
    for p in paths:
        assert p.read_bytes() == state.demand[p.name]
        zipfile.ZipFile(p).testzip()
    assert not list(tmp_path.glob("*.part"))
    gets = [(p, r) for m, p, r, _ in state.requests if m == "GET" and p.startswith("/files/")]
    assert ("/files/NPARK_16k.zip", "bytes=1000-") in gets  # cross-run resume
    scafe = [r for p, r in gets if p == "/files/SCAFE_48k.zip"]
    assert scafe[0] is None and 0 < range_start(scafe[1]) <= len(state.demand["SCAFE_48k.zip"]) // 2

    n_before = len(state.requests)
    download_demand(tmp_path, **kw)  # second run: only the record JSON is fetched
    assert [p for _, p, _, _ in state.requests[n_before:]] == ["/api/records/1227121"]
    # offline status: the run's selection from download-state.json, sizes known, no request
    st = folder_status(tmp_path, "demand")
    assert [(r.name, r.state, r.remote_bytes) for r in st.rows] == [
        (n, "complete", len(state.demand[n])) for n in expected
    ]
    assert len(state.requests) == n_before + 1


def test_demand_md5_mismatch_fails_naming_file(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    state.bad_md5.add("NPARK_16k.zip")
    with pytest.raises(ChecksumError, match="NPARK_16k.zip.*MD5"):
        download_demand(tmp_path, ["NPARK"], **demand_kwargs(url))
    assert not (tmp_path / "NPARK_16k.zip").exists()
    assert not (tmp_path / "NPARK_16k.zip.part").exists()


def test_demand_404_names_file(tmp_path: Path, server: tuple[FakeServer, str]) -> None:
    _, url = server
    remote = RemoteFile("GONE_16k.zip", f"{url}/files/GONE_16k.zip", size=10)
    with (
        requests.Session() as s,
        pytest.raises(DownloadError, match="404.*GONE_16k.zip"),
    ):
        download_file(s, remote, tmp_path, backoff=0.01)
    assert not (tmp_path / "GONE_16k.zip").exists()


def test_demand_cli_status_is_offline(
    server: tuple[FakeServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zips copied in by hand, no manifest, no state file: names from --envs, sizes unknown, no request."""
    state, url = server
    (tmp_path / "DKITCHEN_16k.zip").write_bytes(state.demand["DKITCHEN_16k.zip"])
    (tmp_path / "NPARK_16k.zip.part").write_bytes(b"x" * 10)
    rc = cli.main(
        [
            "demand",
            "--out",
            str(tmp_path),
            "--status",
            "--envs",
            "DKITCHEN,NPARK,SCAFE",
            "--record-url",
            f"{url}/api/records/1227121",
            "--base-url",
            f"{url}/files",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert re.search(r"DKITCHEN_16k.zip\s+complete", out)
    assert re.search(r"NPARK_16k.zip\s+partial", out)
    assert re.search(r"SCAFE_48k.zip\s+missing", out)
    assert "1 complete, 1 partial, 1 missing" in out
    assert "3 file(s) of unknown size" in out and "no run recorded in this folder" in out
    assert state.requests == []
    assert cli.main(["demand", "--out", str(tmp_path), "--status", "--envs", "NOPE"]) == 1
    assert "unknown environment 'NOPE'" in capsys.readouterr().err


# --------------------------------------------------------------------------- SpeakingFaces (fake Hub)


def test_speakingfaces_download_resume_skip(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    state.drop_once.add(speaker_path(2))
    paths = download_speakingfaces(tmp_path, [1, 2], TOKEN, endpoint=url, backoff=0.01)
    for p, s in zip(paths, (1, 2)):
        assert p == tmp_path / f"sub_{s}_ia.zip"
        assert p.read_bytes() == state.hf[speaker_path(s)]
    cdn = [r for m, p, r, _ in state.requests if m == "GET" and p == "/cdn/image_audio/sub_2_ia.zip"]
    assert cdn[0] is None and 0 < range_start(cdn[1]) <= len(state.hf[speaker_path(2)]) // 2

    n_before = len(state.requests)
    download_speakingfaces(tmp_path, [1, 2], TOKEN, endpoint=url, backoff=0.01)
    # second run skips: metadata only (the revision API, HEADs)
    assert all(m == "HEAD" or p.startswith("/api/") for m, p, _, _ in state.requests[n_before:])

    (tmp_path / "sub_3_ia.zip.part").write_bytes(b"PK")
    rows = {r.name: r.state for r in folder_status(tmp_path, "speakingfaces", speakingfaces_names([1, 3])).rows}
    assert rows == {"sub_1_ia.zip": "complete", "sub_3_ia.zip": "partial"}


def test_speakingfaces_sha256_mismatch_deletes_part(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    path = speaker_path(1)
    good = state.hf[path]
    # the Hub advertises the sha256 of `good`, but a stale part holds different leading bytes
    part = tmp_path / "sub_1_ia.zip.part"
    part.write_bytes(b"\0" * 100)
    with pytest.raises(ChecksumError, match="sub_1_ia.zip.*SHA256"):
        download_speakingfaces(tmp_path, [1], TOKEN, endpoint=url, backoff=0.01)
    assert not part.exists() and not (tmp_path / "sub_1_ia.zip").exists()
    download_speakingfaces(tmp_path, [1], TOKEN, endpoint=url, backoff=0.01)
    assert (tmp_path / "sub_1_ia.zip").read_bytes() == good


def test_speakingfaces_401_clear_and_token_never_shown(
    server: tuple[FakeServer, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, url = server
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    wrong = TOKEN + "WRONG"

    # library: wrong token -> clear message without the token
    with pytest.raises(DownloadError) as err:
        download_speakingfaces(tmp_path / "out", [1], wrong, endpoint=url, backoff=0.01)
    assert "token missing or no access to the gated dataset" in str(err.value)
    assert "accept the licence at" in str(err.value) and wrong not in str(err.value)

    # CLI, token from .env, failing (wrong token) then succeeding with a dropped connection
    (tmp_path / ".env").write_text(f"HF_TOKEN={wrong}\n")
    rc = cli.main(
        [
            "speakingfaces",
            "--out",
            "out",
            "--speakers",
            "1",
            "--endpoint",
            url,
            "--backoff",
            "0.01",
        ]
    )
    assert rc == 1
    (tmp_path / ".env").write_text(f"HF_TOKEN={TOKEN}\n")
    state.drop_once.add(speaker_path(3))
    assert (
        cli.main(
            [
                "speakingfaces",
                "--out",
                "out",
                "--speakers",
                "3",
                "--backoff",
                "0.01",
                "--endpoint",
                url,
            ]
        )
        == 0
    )
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", url)
    assert cli.main(["speakingfaces", "--out", "out", "--speakers", "1-3", "--status"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "token missing or no access to the gated dataset" in captured.err
    assert re.search(r"sub_1_ia.zip\s+missing", captured.out)
    assert re.search(r"sub_3_ia.zip\s+complete", captured.out)
    assert "interrupted" in caplog.text  # the drop was logged
    assert TOKEN not in text and wrong not in text
    # it was really sent
    assert any(a == f"Bearer {TOKEN}" for _, _, _, a in state.requests)


# --------------------------------------------------------------------------- manifests of downloads


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_speakingfaces_manifest_records_commit_sizes_hashes(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    download_speakingfaces(tmp_path, [2, 1], TOKEN, endpoint=url, backoff=0.01)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw == {
        "format": 1,
        "corpus": "speakingfaces",
        "source": {"type": "huggingface", "repo": REPO, "endpoint": url, "revision": "main", "commit": COMMIT},
        "files": [
            {
                "path": f"sub_{s}_ia.zip",
                "remote_path": f"image_audio/sub_{s}_ia.zip",
                "size": len(state.hf[speaker_path(s)]),
                "sha256": sha256(state.hf[speaker_path(s)]),
            }
            for s in (1, 2)
        ],
    }
    # every file came from the one resolved commit, never from the moving branch name
    resolves = [p for _, p, _, _ in state.requests if "/resolve/" in p]
    assert resolves and all(f"/resolve/{COMMIT}/" in p for p in resolves)
    assert [p for _, p, _, _ in state.requests if p.startswith("/api/")] == [f"/api/datasets/{REPO}/revision/main"]
    # read back: the stages' view
    assert mf.checked_files(tmp_path, "speakingfaces") == [tmp_path / "sub_1_ia.zip", tmp_path / "sub_2_ia.zip"]
    assert mf.verify_folder(tmp_path) == 2


def test_manifest_is_rewritten_after_each_file(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    """A file that fails (here: a checksum) is reported, the others are completed and listed; a rerun completes it."""
    state, url = server
    state.bad_sha256.add(speaker_path(2))
    with pytest.raises(ChecksumError, match="sub_2_ia.zip"):
        download_speakingfaces(tmp_path, [1, 2, 3], TOKEN, endpoint=url, backoff=0.01)
    m = mf.read_manifest(tmp_path, "speakingfaces")
    assert [f.path for f in m.files] == ["sub_1_ia.zip", "sub_3_ia.zip"] and m.source["commit"] == COMMIT
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".manifest*"))
    state.bad_sha256.clear()
    (tmp_path / "sub_2_ia.zip.part").write_bytes(state.hf[speaker_path(2)][:5000])  # as if killed mid-file
    listed = [tmp_path / "sub_1_ia.zip", tmp_path / "sub_3_ia.zip"]
    assert mf.checked_files(tmp_path, "speakingfaces") == listed  # the .part is not listed
    download_speakingfaces(tmp_path, [1, 2, 3], TOKEN, endpoint=url, backoff=0.01)
    assert [f.path for f in mf.read_manifest(tmp_path).files] == ["sub_1_ia.zip", "sub_2_ia.zip", "sub_3_ia.zip"]
    assert ("/cdn/image_audio/sub_2_ia.zip", "bytes=5000-") in [(p, r) for _, p, r, _ in state.requests]


def test_revision_pinned_by_cli_or_dotenv_and_one_commit_per_folder(
    server: tuple[FakeServer, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, url = server
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(REVISION_ENV, raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    base = ["speakingfaces", "--speakers", "1", "--endpoint", url, "--backoff", "0.01"]
    (tmp_path / ".env").write_text(f"{REVISION_ENV}=v1.0  # pinned snapshot\n")
    assert cli.main([*base, "--out", "pinned"]) == 0
    source = mf.read_manifest(tmp_path / "pinned").source
    assert (source["revision"], source["commit"]) == ("v1.0", COMMIT_V1)
    assert any(f"/resolve/{COMMIT_V1}/" in p for _, p, _, _ in state.requests)
    # --revision wins over .env; a folder holds one commit: another is refused with the way out
    assert cli.main([*base, "--out", "pinned", "--revision", "main", "--speakers", "2"]) == 1
    err = capsys.readouterr().err
    assert f"commit '{COMMIT_V1}'" in err and f"pass --revision {COMMIT_V1}" in err, err
    assert [f.path for f in mf.read_manifest(tmp_path / "pinned").files] == ["sub_1_ia.zip"]
    # the commit itself continues the snapshot
    assert cli.main([*base, "--out", "pinned", "--revision", COMMIT_V1, "--speakers", "2"]) == 0
    assert [f.path for f in mf.read_manifest(tmp_path / "pinned").files] == ["sub_1_ia.zip", "sub_2_ia.zip"]
    # an unknown revision: a clear 404
    assert cli.main([*base, "--out", "other", "--revision", "nope"]) == 1
    assert "HTTP 404: revision 'nope' of issai/Speaking_Faces not found" in capsys.readouterr().err


def test_earlier_image_audio_layout_is_moved_up_and_resumed(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    legacy = tmp_path / "image_audio"
    legacy.mkdir()
    (legacy / "sub_1_ia.zip").write_bytes(state.hf[speaker_path(1)])
    (legacy / "sub_2_ia.zip.part").write_bytes(state.hf[speaker_path(2)][:3000])
    download_speakingfaces(tmp_path, [1, 2], TOKEN, endpoint=url, backoff=0.01)
    assert not legacy.exists()
    assert [p.name for p in mf.checked_files(tmp_path, "speakingfaces")] == ["sub_1_ia.zip", "sub_2_ia.zip"]
    assert ("/cdn/image_audio/sub_2_ia.zip", "bytes=3000-") in [(p, r) for _, p, r, _ in state.requests]
    assert not any(p == "/cdn/image_audio/sub_1_ia.zip" for _, p, _, _ in state.requests)  # hashed, not fetched


def test_demand_manifest_records_record_md5_sha256(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    state, url = server
    download_demand(tmp_path, ["NPARK", "SCAFE"], **demand_kwargs(url))
    m = mf.read_manifest(tmp_path, "demand")
    assert m.source == {"type": "zenodo", "record": "1227121", "record_url": f"{url}/api/records/1227121"}
    assert [f.to_json() for f in m.files] == [
        {
            "path": n,
            "size": len(state.demand[n]),
            "md5": hashlib.md5(state.demand[n]).hexdigest(),
            "sha256": sha256(state.demand[n]),
        }
        for n in ("NPARK_16k.zip", "SCAFE_48k.zip")
    ]
    download_demand(tmp_path, ["DKITCHEN"], **demand_kwargs(url))  # a later run extends it
    assert [f.path for f in mf.read_manifest(tmp_path).files] == ["DKITCHEN_16k.zip", "NPARK_16k.zip", "SCAFE_48k.zip"]


def test_verify_rejects_same_size_content_change(
    server: tuple[FakeServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = server
    download_demand(tmp_path, ["NPARK"], **demand_kwargs(url))
    assert cli.main(["verify", str(tmp_path)]) == 0
    assert "all 1 file(s) match" in capsys.readouterr().out
    zip_path = tmp_path / "NPARK_16k.zip"
    data = bytearray(zip_path.read_bytes())
    data[100] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    # the size still matches: the stages' check passes, --verify catches it
    assert mf.checked_files(tmp_path, "demand") == [zip_path]
    with pytest.raises(mf.ChecksumMismatch, match=r"NPARK_16k\.zip: SHA256 [0-9a-f]{64}, but .*manifest\.json lists"):
        mf.checked_files(tmp_path, "demand", verify=True)
    assert cli.main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "NPARK_16k.zip" in err and "download the file again" in err
    # the download's --verify re-hashes files it would otherwise skip
    argv = [
        "demand",
        "--out",
        str(tmp_path),
        "--envs",
        "NPARK",
        "--record-url",
        f"{url}/api/records/1227121",
        "--base-url",
        f"{url}/files",
        "--backoff",
        "0.01",
    ]
    assert cli.main(argv) == 0  # without --verify: complete by size, skipped
    assert cli.main([*argv, "--verify"]) == 1
    assert re.search(r"NPARK_16k\.zip: MD5 mismatch.*delete it and run again", capsys.readouterr().err)


def test_manifest_command_for_local_archives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sf_dir = tmp_path / "sf"
    sf_dir.mkdir()
    for s in (3, 12):
        (sf_dir / f"sub_{s}_ia.zip").write_bytes(make_zip("x", 1000 + s, s))
    (sf_dir / "sub_13_ia.zip.part").write_bytes(b"PK")
    (sf_dir / "subjects.csv").write_text("Sub_ID\n3\n12\n")
    (sf_dir / "notes.txt").write_text("from a colleague's disk")
    assert cli.main(["manifest", str(sf_dir)]) == 0
    assert "speakingfaces, 3 file(s)" in capsys.readouterr().out
    m = mf.read_manifest(sf_dir, "speakingfaces")
    assert m.source == {"type": "local"}
    assert [f.path for f in m.files] == ["sub_12_ia.zip", "sub_3_ia.zip", "subjects.csv"]
    assert m.by_path()["sub_3_ia.zip"].sha256 == sha256((sf_dir / "sub_3_ia.zip").read_bytes())
    assert mf.unlisted_files(sf_dir, m) == ["notes.txt", "sub_13_ia.zip.part"]
    # a folder with nothing of a corpus, and a missing folder: errors that say so
    assert cli.main(["manifest", str(tmp_path / "sf" / "..")]) == 1
    assert "no corpus archives found" in capsys.readouterr().err
    assert cli.main(["manifest", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- runs of 1 TB: space, status, progress, jobs, token


def cdn_gets(state: FakeServer) -> list[str]:
    return [p for m, p, _, _ in state.requests if m == "GET" and p.startswith("/cdn/")]


def test_free_space_check_names_needed_and_free(
    server: tuple[FakeServer, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Hub advertises 10 PB for one archive: refused before any byte, needed vs free of the --out filesystem."""
    state, url = server
    state.fake_size[speaker_path(2)] = 10**16
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    argv = [
        "speakingfaces",
        "--out",
        str(tmp_path / "sf"),
        "--speakers",
        "1-2",
        "--endpoint",
        url,
        "--backoff",
        "0.01",
        "--retries",
        "0",
    ]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    free = fmt_bytes(__import__("shutil").disk_usage(tmp_path).free)
    assert re.search(
        r"sf: not enough free space: 10000\.\d\d TB still to download \(2 of 2 file\(s\); 0 B of "
        r"10000\.\d\d TB already on disk\), but the filesystem of --out \(mounted at /\S*\) has "
        r"[\d.]+ [kMGT]?B free",
        err,
    ), err
    assert "select fewer files (--speakers)" in err and "--skip-space-check" in err
    assert free.split()[1] in err
    assert cdn_gets(state) == []  # nothing was downloaded
    # --skip-space-check starts anyway (then fails on the impossible size: a different error)
    assert cli.main([*argv, "--skip-space-check"]) == 1
    assert "not enough free space" not in capsys.readouterr().err
    assert (tmp_path / "sf" / "sub_1_ia.zip").is_file()


def test_free_space_counts_only_the_missing_bytes(tmp_path: Path) -> None:
    """A sparse 10 TB .part (no blocks used) leaves 1000 bytes to fetch: the check passes; without it, it fails."""
    part = tmp_path / "sub_1_ia.zip.part"
    try:
        with open(part, "wb") as f:
            f.truncate(10**13)
    except OSError as exc:
        pytest.skip(f"{tmp_path}: no sparse 10 TB file on this filesystem ({exc})")
    remote = RemoteFile("sub_1_ia.zip", "u", size=10**13 + 1000)
    assert check_free_space(tmp_path, [remote]) == 1000
    part.unlink()
    with pytest.raises(DownloadError, match=r"10\.00 TB still to download \(1 of 1 file\(s\); 0 B of 10\.00 TB"):
        check_free_space(tmp_path, [remote])


def run_in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    """Start ``fn`` in a thread; the list receives its result or exception."""
    box: list = []

    def target() -> None:
        try:
            box.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the test
            box.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_parallel_jobs_resume_verify_and_one_manifest_writer(
    server: tuple[FakeServer, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--jobs 3: three archives stream at once (one with a part to resume, one whose connection drops)."""
    state, url = server
    caplog.set_level(logging.INFO)
    for s in (1, 2, 3):
        state.slow[speaker_path(s)] = 300_000  # 60 kB each: ~0.2 s
    state.drop_once.add(speaker_path(3))
    (tmp_path / "sub_2_ia.zip.part").write_bytes(state.hf[speaker_path(2)][:8192])
    opts = RunOptions(jobs=3, progress="log", progress_every=0.05, backoff=0.01)
    paths = download_speakingfaces(tmp_path, [1, 2, 3], TOKEN, endpoint=url, opts=opts)
    assert state.max_active >= 2, "the downloads did not overlap"
    for p, s in zip(paths, (1, 2, 3)):
        assert p.read_bytes() == state.hf[speaker_path(s)]
    assert ("/cdn/image_audio/sub_2_ia.zip", "bytes=8192-") in [(p, r) for _, p, r, _ in state.requests]
    m = mf.read_manifest(tmp_path, "speakingfaces")
    assert [(f.path, f.sha256) for f in m.files] == [
        (f"sub_{s}_ia.zip", sha256(state.hf[speaker_path(s)])) for s in (1, 2, 3)
    ]
    assert mf.verify_folder(tmp_path) == 3
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.tmp"))
    run = json.loads((tmp_path / STATE_NAME).read_text())["run"]
    assert run["state"] == "finished" and run["jobs"] == 3
    resumed_at = [range_start(r) for _, p, r, _ in state.requests if p == "/cdn/image_audio/sub_3_ia.zip"][-1]
    assert 0 < resumed_at <= len(state.hf[speaker_path(3)]) // 2
    # bytes received by this run: all but the part of sub_2 left by an earlier run (sub_3's drop lost nothing)
    assert run["received_bytes"] == sum(len(state.hf[speaker_path(s)]) for s in (1, 2, 3)) - 8192
    assert "interrupted at" in caplog.text


def test_manifest_recorder_many_threads(tmp_path: Path) -> None:
    """Entries put from 6 threads at once: every write atomic, the final manifest holds all of them."""
    rec = ManifestRecorder(tmp_path, mf.Manifest("speakingfaces", {"type": "local"}, []))
    errors: list[BaseException] = []

    def put(t: int) -> None:
        try:
            for i in range(8):
                rec.put(mf.FileEntry(f"sub_{t * 8 + i + 1}_ia.zip", i, "0" * 64))
                raw = json.loads((tmp_path / "manifest.json").read_text())  # never a half-written file
                assert raw["corpus"] == "speakingfaces"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(mf.read_manifest(tmp_path).files) == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_second_download_into_the_same_folder_is_refused(server: tuple[FakeServer, str], tmp_path: Path) -> None:
    _, url = server
    with (
        folder_lock(tmp_path),
        pytest.raises(
            DownloadError,
            match=r"another download into this folder is "
            r"running \(pid \d+ on ",
        ),
    ):
        download_speakingfaces(tmp_path, [1], TOKEN, endpoint=url, backoff=0.01)
    download_speakingfaces(tmp_path, [1], TOKEN, endpoint=url, backoff=0.01)  # released: goes ahead


def test_status_offline_while_running_and_after(
    server: tuple[FakeServer, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--status reads manifest, state file and files only: while a download runs (rate, ETA) and after it failed."""
    state, url = server
    caplog.set_level(logging.INFO)
    state.slow[speaker_path(2)] = 100_000  # 60 kB: ~0.6 s
    state.bad_sha256.add(speaker_path(3))
    opts = RunOptions(jobs=1, progress="log", progress_every=0.05, backoff=0.01)
    t, box = run_in_thread(download_speakingfaces, tmp_path, [1, 2, 3], TOKEN, endpoint=url, opts=opts)
    monkeypatch.setenv("HF_ENDPOINT", "https://unreachable.invalid")  # --status must not need it
    seen = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and t.is_alive():
        st = folder_status(tmp_path, "speakingfaces")
        if st.running and (st.run or {}).get("rate_bytes_per_s") and any(r.state == "partial" for r in st.rows):
            n = len(state.requests)
            assert cli.main(["speakingfaces", "--out", str(tmp_path), "--status"]) == 0
            seen = capsys.readouterr().out
            assert len(state.requests) == n  # offline
            break
        time.sleep(0.02)
    t.join(30)
    assert isinstance(box[0], ChecksumError)
    assert re.search(r"sub_1_ia\.zip\s+complete\s+0\.000 GB\s+0\.000 GB", seen), seen
    assert re.search(r"sub_2_ia\.zip\s+partial .*%", seen), seen
    assert re.search(r"sub_3_ia\.zip\s+missing", seen), seen
    assert re.search(r"total: 0\.000 of 0\.000 GB \(\d+\.\d%\); 1 of 3 file\(s\) complete", seen), seen
    assert re.search(
        r"download: running \(pid \d+ on .*, --jobs 1\); rate [\d.]+ [kM]B/s over its last 5m00s "
        r"\(logged \d+s ago\); ETA \d+s for the 0\.000 GB left",
        seen,
    ), seen
    # the plain progress lines of the run (stderr is not a terminal here): file, bytes, rate, ETA, then totals
    assert re.search(
        r"progress: sub_2_ia\.zip [\d.]+ kB of 6\d\.\d\d kB \(\d+\.\d%\), [\d.]+ kB/s, ETA \d+s", caplog.text
    )
    assert re.search(
        r"progress: total [\d.]+ kB of 1\d\d\.\d\d kB \(\d+\.\d%\), \d/3 files complete, \d active, "
        r"[\d.]+ kB/s \(last \d+s\), ETA \d+s",
        caplog.text,
    )

    # after: the run failed on sub_3; a part left as if killed; the status says so and estimates from the last rate
    (tmp_path / "sub_3_ia.zip.part").write_bytes(state.hf[speaker_path(3)][:20000])
    n = len(state.requests)
    assert cli.main(["speakingfaces", "--out", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert len(state.requests) == n
    sizes = [len(state.hf[speaker_path(s)]) for s in (1, 2, 3)]
    assert re.search(r"sub_3_ia\.zip\s+partial\s+0\.000 GB\s+0\.000 GB\s+3\d\.\d%", out), out
    assert f"total: {(sizes[0] + sizes[1] + 20000) / 1e9:.3f} of {sum(sizes) / 1e9:.3f} GB" in out
    assert "2 of 3 file(s) complete" in out and "2 complete, 1 partial, 0 missing" in out
    assert re.search(
        r"download: not running; the last run \(pid \d+ on .*\) failed: sub_3_ia\.zip: SHA256 mismatch", out
    )
    assert re.search(r"ETA at its last logged rate \([\d.]+ [kM]B/s\): \d+s for the 0\.000 GB left", out), out
    # an explicit selection: files never planned show an unknown size
    assert cli.main(["speakingfaces", "--out", str(tmp_path), "--status", "--speakers", "3-4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sub_4_ia\.zip\s+missing\s+0\.000 GB\s+\?", out) and "1 file(s) of unknown size" in out


def test_status_of_a_killed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A state file that says running while nobody holds the lock: running elsewhere while fresh, else killed."""
    remotes = [RemoteFile("sub_5_ia.zip", "u", size=4_000_000_000)]
    st = StateFile(tmp_path, "speakingfaces", {"type": "huggingface"}, remotes, 2, every=30)
    st.update_run(rate_bytes_per_s=50e6)
    (tmp_path / "sub_5_ia.zip.part").write_bytes(b"\0" * 1000)
    # updated just now (within 3 x --progress-every): a run whose lock this machine cannot see (NFS)
    assert cli.main(["speakingfaces", "--out", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"download: running by its state file \(pid \d+ on \S+, --jobs 2; its lock is not visible "
        r"from here\); rate 50\.0 MB/s \(logged 0s ago\); ETA 1m20s for the 4\.000 GB left",
        out,
    ), out
    # not updated for 10 minutes: killed
    st.data["run"]["updated"] -= 600
    st.write()
    assert cli.main(["speakingfaces", "--out", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "the last run (pid" in out and "stopped without finishing (killed?)" in out and "updated 10m00s ago" in out
    assert "ETA at its last logged rate (50.0 MB/s): 1m20s for the 4.000 GB left" in out
    # a new run holds the folder but has not written its state yet (it is listing the remote files)
    st.data["run"]["pid"] = 1  # the state file is of an earlier process
    st.write()
    with folder_lock(tmp_path):
        assert cli.main(["speakingfaces", "--out", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"download: running \(pid \d+ on host \S+ since [\d: -]+\); it has not written its state yet", out
    ), out
    assert "ETA at the rate the run before logged (50.0 MB/s): 1m20s for the 4.000 GB left" in out


def test_rate_window_and_formats() -> None:
    w = RateWindow(window=10)
    for t in range(31):
        w.add(float(t), t * 1000 if t < 20 else 20_000 + (t - 20) * 5000)  # 1 kB/s, then 5 kB/s
    assert w.rate() == pytest.approx(5000)  # only the last 10 s count
    assert fmt_duration(5400) == "1h30m" and fmt_duration(125) == "2m05s" and fmt_duration(None) == "?"
    assert fmt_duration(1.04e12 / 50e6) == "5h46m" and fmt_duration(1.04e12 / 200e6) == "1h26m"
    assert fmt_bytes(7.3e9) == "7.30 GB" and fmt_rate(48.2e6) == "48.2 MB/s"


def test_token_only_over_https_or_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--endpoint http://<this machine's LAN address> with a token: refused before any request reaches the server."""
    for ok in (
        "https://huggingface.co",
        "http://127.0.0.1:8000",
        "http://127.5.0.1",
        "http://localhost:1",
        "http://[::1]:80",
    ):
        check_token_transport(ok, TOKEN)
    check_token_transport("http://mirror.example.org", None)  # no token, nothing to leak
    for bad in ("http://mirror.example.org", "http://10.1.2.3:8080", "ftp://x.org"):
        with pytest.raises(DownloadError, match="refusing to send the HF token over plain") as err:
            check_token_transport(bad, TOKEN)
        assert TOKEN not in str(err.value)

    # a real server listening on a non-loopback address of this machine: it must see nothing
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            lan = s.getsockname()[0]
    except OSError:
        lan = ""
    if not lan or is_loopback_host(lan):
        pytest.skip("no non-loopback IPv4 address on this machine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with serve(host="0.0.0.0") as (state, url):
        endpoint = url.replace("0.0.0.0", lan)
        assert requests.get(f"{endpoint}/api/records/1227121", timeout=5).ok  # the server is reachable there
        state.requests.clear()
        assert cli.main(["speakingfaces", "--out", "o", "--speakers", "1", "--endpoint", endpoint]) == 1
        err = capsys.readouterr().err
        assert f"{endpoint}: refusing to send the HF token over plain http:// to {lan}" in err
        assert "Use an https:// URL (--endpoint / HF_ENDPOINT)" in err and TOKEN not in err
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert cli.main(["speakingfaces", "--out", "o", "--speakers", "1"]) == 1
        assert "refusing to send the HF token" in capsys.readouterr().err
        assert state.requests == []


def test_zenodo_endpoint_variable(
    server: tuple[FakeServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TAVSE_ZENODO_ENDPOINT replaces https://zenodo.org; files come from Zenodo's own /records/<id>/files/ path."""
    state, url = server
    monkeypatch.setenv(ZENODO_ENDPOINT_ENV, url)
    assert cli.main(["demand", "--out", str(tmp_path), "--envs", "NPARK", "--backoff", "0.01"]) == 0
    assert (tmp_path / "NPARK_16k.zip").read_bytes() == state.demand["NPARK_16k.zip"]
    assert [p for m, p, _, _ in state.requests if m == "GET"] == [
        "/api/records/1227121",
        "/records/1227121/files/NPARK_16k.zip",
    ]
