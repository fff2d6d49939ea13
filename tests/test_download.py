"""tavse.download against a local fake Zenodo + fake HuggingFace Hub (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from tavse import download as dl
from tavse.corpus import manifest as mf

TOKEN = "hf_TESTsecretTOKEN0123456789"
REPO = "issai/Speaking_Faces"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_V1 = "89abcdef0123456789abcdef0123456789abcdef"


def make_zip(member: str, n_bytes: int, seed: int) -> bytes:
    """A small stored zip whose payload is deterministic pseudo-random bytes."""
    payload = hashlib.sha256(str(seed).encode()).digest() * (n_bytes // 32 + 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(member, payload[:n_bytes])
    return buf.getvalue()


class FakeServer:
    """State of the fake servers: files, checksums to publish, connections to drop, request log."""

    def __init__(self) -> None:
        self.demand: dict[str, bytes] = {
            name: make_zip(f"{name.split('_')[0]}/ch01.wav", 40_000 + i * 1000, i)
            for i, name in enumerate(
                [
                    "DKITCHEN_16k.zip",
                    "DKITCHEN_48k.zip",
                    "NPARK_16k.zip",
                    "NPARK_48k.zip",
                    "SCAFE_48k.zip",
                ]
            )
        }
        self.hf: dict[str, bytes] = {
            dl.speaker_path(s): make_zip(f"sub_{s}_ia/trial_1/x.png", 60_000, 100 + s)
            for s in (1, 2, 3)
        }
        self.bad_md5: set[str] = set()
        self.bad_sha256: set[str] = set()  # repository paths whose X-Linked-Etag is wrong
        self.revisions = {"main": COMMIT, "v1.0": COMMIT_V1, COMMIT: COMMIT, COMMIT_V1: COMMIT_V1}
        self.drop_once: set[str] = set()
        # method, path, Range, Authorization of every request
        self.requests: list[tuple[str, str, str | None, str | None]] = []
        self.lock = threading.Lock()

    def record_json(self) -> bytes:
        files = [
            {
                "key": k,
                "size": len(v),
                "checksum": "md5:"
                + ("0" * 32 if k in self.bad_md5 else hashlib.md5(v).hexdigest()),
                "links": {"self": f"/api/records/1227121/files/{k}/content"},
            }
            for k, v in self.demand.items()
        ]
        return json.dumps({"id": 1227121, "files": files}).encode()


def make_handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _log(self) -> None:
            with state.lock:
                state.requests.append(
                    (
                        self.command,
                        self.path,
                        self.headers.get("Range"),
                        self.headers.get("Authorization"),
                    )
                )

        def _send_bytes(
            self, data: bytes, key: str, head: bool, extra: dict[str, str] | None = None
        ) -> None:
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
                )
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            with state.lock:
                drop = key in state.drop_once
                state.drop_once.discard(key)
            if drop:  # send half, then cut the connection
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _hf(self, head: bool) -> None:
            api = f"/api/datasets/{REPO}/revision/"
            if self.path.startswith(api):  # the Hub's revision API: revision -> commit sha
                revision = unquote(self.path[len(api) :])
                if revision not in state.revisions:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RevisionNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"id": REPO, "sha": state.revisions[revision]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return
            if self.path.startswith("/cdn/"):
                path = self.path[len("/cdn/") :]
                self._send_bytes(state.hf[path], path, head)
                return
            match = re.fullmatch(rf"/datasets/{REPO}/resolve/([^/]+)/(.+)", self.path)
            if not match or unquote(match.group(1)) not in state.revisions:
                self.send_error(404)
                return
            commit, path = state.revisions[unquote(match.group(1))], match.group(2)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.send_header("X-Error-Code", "GatedRepo")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path not in state.hf:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.hf[path]
            # LFS-style: metadata in X-Linked-*, bytes on the "CDN"
            self.send_response(302)
            self.send_header("Location", f"/cdn/{path}")
            self.send_header("X-Repo-Commit", commit)
            sha = "f" * 64 if path in state.bad_sha256 else hashlib.sha256(data).hexdigest()
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", '"abc"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _route(self, head: bool) -> None:
            self._log()
            if self.path == "/api/records/1227121":
                body = state.record_json()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
            elif self.path.startswith("/files/"):
                name = self.path[len("/files/") :]
                if name not in state.demand:
                    self.send_error(404)
                    return
                self._send_bytes(state.demand[name], name, head)
            else:
                self._hf(head)

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

    return Handler


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes read before a dropped connection only reach disk chunk by chunk: use small chunks."""
    monkeypatch.setattr(dl, "CHUNK", 4096)


@pytest.fixture()
def server() -> Iterator[tuple[FakeServer, str]]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


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
    assert dl.parse_speakers("1-3, 121,2") == [1, 2, 3, 121]
    with pytest.raises(ValueError):
        dl.parse_speakers("140-143")
    env = tmp_path / ".env"
    env.write_text(f'# comment\nOTHER=1\nexport HF_TOKEN="{TOKEN}"\n')
    assert dl.read_dotenv(env)["HF_TOKEN"] == TOKEN


def test_select_demand_default_is_16k_plus_scafe_48k() -> None:
    files = [
        dl.RemoteFile(n, "u")
        for n in ["A_16k.zip", "A_48k.zip", "SCAFE_48k.zip", "B_16k.zip"]
    ]
    assert [f.name for f in dl.select_demand(files)] == [
        "A_16k.zip",
        "B_16k.zip",
        "SCAFE_48k.zip",
    ]
    assert [f.name for f in dl.select_demand(files, ["scafe", "A_48k.zip"])] == [
        "SCAFE_48k.zip",
        "A_48k.zip",
    ]
    with pytest.raises(dl.DownloadError, match="NOPE"):
        dl.select_demand(files, ["NOPE"])


# --------------------------------------------------------------------------- DEMAND


def test_demand_download_skip_resume_and_status(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    kw = demand_kwargs(url)
    expected = ["DKITCHEN_16k.zip", "NPARK_16k.zip", "SCAFE_48k.zip"]
    assert [s.state for s in dl.status_demand(tmp_path, **kw)] == ["missing"] * 3

    # a part left by an earlier run, and a connection drop mid-file in this one
    (tmp_path / "NPARK_16k.zip.part").write_bytes(state.demand["NPARK_16k.zip"][:1000])
    state.drop_once.add("SCAFE_48k.zip")
    statuses = {s.name: s for s in dl.status_demand(tmp_path, **kw)}
    assert (
        statuses["NPARK_16k.zip"].state == "partial"
        and statuses["NPARK_16k.zip"].local_bytes == 1000
    )

    paths = dl.download_demand(tmp_path, **kw)
    assert [p.name for p in paths] == expected
    for p in paths:
        assert p.read_bytes() == state.demand[p.name]
        zipfile.ZipFile(p).testzip()
    assert not list(tmp_path.glob("*.part"))
    gets = [
        (p, r)
        for m, p, r, _ in state.requests
        if m == "GET" and p.startswith("/files/")
    ]
    assert ("/files/NPARK_16k.zip", "bytes=1000-") in gets  # cross-run resume
    scafe = [r for p, r in gets if p == "/files/SCAFE_48k.zip"]
    assert (
        scafe[0] is None
        and 0 < range_start(scafe[1]) <= len(state.demand["SCAFE_48k.zip"]) // 2
    )

    n_before = len(state.requests)
    dl.download_demand(tmp_path, **kw)  # second run: only the record JSON is fetched
    assert [p for _, p, _, _ in state.requests[n_before:]] == ["/api/records/1227121"]
    assert [s.state for s in dl.status_demand(tmp_path, **kw)] == ["complete"] * 3


def test_demand_md5_mismatch_fails_naming_file(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    state.bad_md5.add("NPARK_16k.zip")
    with pytest.raises(dl.ChecksumError, match="NPARK_16k.zip.*MD5"):
        dl.download_demand(tmp_path, ["NPARK"], **demand_kwargs(url))
    assert not (tmp_path / "NPARK_16k.zip").exists()
    assert not (tmp_path / "NPARK_16k.zip.part").exists()


def test_demand_404_names_file(tmp_path: Path, server: tuple[FakeServer, str]) -> None:
    _, url = server
    remote = dl.RemoteFile("GONE_16k.zip", f"{url}/files/GONE_16k.zip", size=10)
    with (
        requests.Session() as s,
        pytest.raises(dl.DownloadError, match="404.*GONE_16k.zip"),
    ):
        dl.download_file(s, remote, tmp_path, backoff=0.01)
    assert not (tmp_path / "GONE_16k.zip").exists()


def test_demand_cli_status(
    server: tuple[FakeServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = server
    (tmp_path / "DKITCHEN_16k.zip").write_bytes(state.demand["DKITCHEN_16k.zip"])
    (tmp_path / "NPARK_16k.zip.part").write_bytes(b"x" * 10)
    rc = dl.main(
        [
            "demand",
            "--out",
            str(tmp_path),
            "--status",
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
    assert not any(
        m == "GET" and p.startswith("/files/") for m, p, _, _ in state.requests
    )


# --------------------------------------------------------------------------- SpeakingFaces (fake Hub)


def test_speakingfaces_download_resume_skip(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    state.drop_once.add(dl.speaker_path(2))
    paths = dl.download_speakingfaces(
        tmp_path, [1, 2], TOKEN, endpoint=url, backoff=0.01
    )
    for p, s in zip(paths, (1, 2)):
        assert p == tmp_path / f"sub_{s}_ia.zip"
        assert p.read_bytes() == state.hf[dl.speaker_path(s)]
    cdn = [
        r
        for m, p, r, _ in state.requests
        if m == "GET" and p == "/cdn/image_audio/sub_2_ia.zip"
    ]
    assert (
        cdn[0] is None
        and 0 < range_start(cdn[1]) <= len(state.hf[dl.speaker_path(2)]) // 2
    )

    n_before = len(state.requests)
    dl.download_speakingfaces(tmp_path, [1, 2], TOKEN, endpoint=url, backoff=0.01)
    # second run skips: metadata only (the revision API, HEADs)
    assert all(m == "HEAD" or p.startswith("/api/") for m, p, _, _ in state.requests[n_before:])

    (tmp_path / "sub_3_ia.zip.part").write_bytes(b"PK")
    rows = {
        r.name: r.state
        for r in dl.status_speakingfaces(tmp_path, [1, 3], TOKEN, endpoint=url)
    }
    assert rows == {"sub_1_ia.zip": "complete", "sub_3_ia.zip": "partial"}


def test_speakingfaces_sha256_mismatch_deletes_part(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    path = dl.speaker_path(1)
    good = state.hf[path]
    # the Hub advertises the sha256 of `good`, but a stale part holds different leading bytes
    part = tmp_path / "sub_1_ia.zip.part"
    part.write_bytes(b"\0" * 100)
    with pytest.raises(dl.ChecksumError, match="sub_1_ia.zip.*SHA256"):
        dl.download_speakingfaces(tmp_path, [1], TOKEN, endpoint=url, backoff=0.01)
    assert not part.exists() and not (tmp_path / "sub_1_ia.zip").exists()
    dl.download_speakingfaces(tmp_path, [1], TOKEN, endpoint=url, backoff=0.01)
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
    with pytest.raises(dl.DownloadError) as err:
        dl.download_speakingfaces(
            tmp_path / "out", [1], wrong, endpoint=url, backoff=0.01
        )
    assert "token missing or no access to the gated dataset" in str(err.value)
    assert "accept the licence at" in str(err.value) and wrong not in str(err.value)

    # CLI, token from .env, failing (wrong token) then succeeding with a dropped connection
    (tmp_path / ".env").write_text(f"HF_TOKEN={wrong}\n")
    rc = dl.main(
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
    state.drop_once.add(dl.speaker_path(3))
    assert (
        dl.main(
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
    assert (
        dl.main(["speakingfaces", "--out", "out", "--speakers", "1-3", "--status"]) == 0
    )
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


def test_speakingfaces_manifest_records_commit_sizes_hashes(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    dl.download_speakingfaces(tmp_path, [2, 1], TOKEN, endpoint=url, backoff=0.01)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw == {
        "format": 1,
        "corpus": "speakingfaces",
        "source": {"type": "huggingface", "repo": REPO, "endpoint": url, "revision": "main", "commit": COMMIT},
        "files": [
            {
                "path": f"sub_{s}_ia.zip",
                "remote_path": f"image_audio/sub_{s}_ia.zip",
                "size": len(state.hf[dl.speaker_path(s)]),
                "sha256": sha256(state.hf[dl.speaker_path(s)]),
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


def test_manifest_is_rewritten_after_each_file(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    """A download that stops (here: a checksum failure on the 2nd file) leaves a valid manifest of the complete ones."""
    state, url = server
    state.bad_sha256.add(dl.speaker_path(2))
    with pytest.raises(dl.ChecksumError, match="sub_2_ia.zip"):
        dl.download_speakingfaces(tmp_path, [1, 2, 3], TOKEN, endpoint=url, backoff=0.01)
    m = mf.read_manifest(tmp_path, "speakingfaces")
    assert [f.path for f in m.files] == ["sub_1_ia.zip"] and m.source["commit"] == COMMIT
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".manifest*"))
    state.bad_sha256.clear()
    (tmp_path / "sub_3_ia.zip.part").write_bytes(state.hf[dl.speaker_path(3)][:5000])  # as if killed mid-file
    assert mf.checked_files(tmp_path, "speakingfaces") == [tmp_path / "sub_1_ia.zip"]  # the .part is not listed
    dl.download_speakingfaces(tmp_path, [1, 2, 3], TOKEN, endpoint=url, backoff=0.01)
    assert [f.path for f in mf.read_manifest(tmp_path).files] == ["sub_1_ia.zip", "sub_2_ia.zip", "sub_3_ia.zip"]


def test_revision_pinned_by_cli_or_dotenv_and_one_commit_per_folder(
    server: tuple[FakeServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, url = server
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(dl.REVISION_ENV, raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    base = ["speakingfaces", "--speakers", "1", "--endpoint", url, "--backoff", "0.01"]
    (tmp_path / ".env").write_text(f"{dl.REVISION_ENV}=v1.0  # pinned snapshot\n")
    assert dl.main([*base, "--out", "pinned"]) == 0
    source = mf.read_manifest(tmp_path / "pinned").source
    assert (source["revision"], source["commit"]) == ("v1.0", COMMIT_V1)
    assert any(f"/resolve/{COMMIT_V1}/" in p for _, p, _, _ in state.requests)
    # --revision wins over .env; a folder holds one commit: another is refused with the way out
    assert dl.main([*base, "--out", "pinned", "--revision", "main", "--speakers", "2"]) == 1
    err = capsys.readouterr().err
    assert f"commit '{COMMIT_V1}'" in err and f"pass --revision {COMMIT_V1}" in err, err
    assert [f.path for f in mf.read_manifest(tmp_path / "pinned").files] == ["sub_1_ia.zip"]
    # the commit itself continues the snapshot
    assert dl.main([*base, "--out", "pinned", "--revision", COMMIT_V1, "--speakers", "2"]) == 0
    assert [f.path for f in mf.read_manifest(tmp_path / "pinned").files] == ["sub_1_ia.zip", "sub_2_ia.zip"]
    # an unknown revision: a clear 404
    assert dl.main([*base, "--out", "other", "--revision", "nope"]) == 1
    assert "HTTP 404: revision 'nope' of issai/Speaking_Faces not found" in capsys.readouterr().err


def test_earlier_image_audio_layout_is_moved_up_and_resumed(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    legacy = tmp_path / "image_audio"
    legacy.mkdir()
    (legacy / "sub_1_ia.zip").write_bytes(state.hf[dl.speaker_path(1)])
    (legacy / "sub_2_ia.zip.part").write_bytes(state.hf[dl.speaker_path(2)][:3000])
    dl.download_speakingfaces(tmp_path, [1, 2], TOKEN, endpoint=url, backoff=0.01)
    assert not legacy.exists()
    assert [p.name for p in mf.checked_files(tmp_path, "speakingfaces")] == ["sub_1_ia.zip", "sub_2_ia.zip"]
    assert ("/cdn/image_audio/sub_2_ia.zip", "bytes=3000-") in [(p, r) for _, p, r, _ in state.requests]
    assert not any(p == "/cdn/image_audio/sub_1_ia.zip" for _, p, _, _ in state.requests)  # hashed, not fetched


def test_demand_manifest_records_record_md5_sha256(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    state, url = server
    dl.download_demand(tmp_path, ["NPARK", "SCAFE"], **demand_kwargs(url))
    m = mf.read_manifest(tmp_path, "demand")
    assert m.source == {"type": "zenodo", "record": "1227121", "record_url": f"{url}/api/records/1227121"}
    assert [f.to_json() for f in m.files] == [
        {"path": n, "size": len(state.demand[n]), "md5": hashlib.md5(state.demand[n]).hexdigest(),
         "sha256": sha256(state.demand[n])}
        for n in ("NPARK_16k.zip", "SCAFE_48k.zip")
    ]
    dl.download_demand(tmp_path, ["DKITCHEN"], **demand_kwargs(url))  # a later run extends it
    assert [f.path for f in mf.read_manifest(tmp_path).files] == ["DKITCHEN_16k.zip", "NPARK_16k.zip", "SCAFE_48k.zip"]


def test_verify_rejects_same_size_content_change(
    server: tuple[FakeServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = server
    dl.download_demand(tmp_path, ["NPARK"], **demand_kwargs(url))
    assert dl.main(["verify", str(tmp_path)]) == 0
    assert "all 1 file(s) match" in capsys.readouterr().out
    zip_path = tmp_path / "NPARK_16k.zip"
    data = bytearray(zip_path.read_bytes())
    data[100] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    # the size still matches: the stages' check passes, --verify catches it
    assert mf.checked_files(tmp_path, "demand") == [zip_path]
    with pytest.raises(mf.ChecksumMismatch, match=r"NPARK_16k\.zip: SHA256 [0-9a-f]{64}, but .*manifest\.json lists"):
        mf.checked_files(tmp_path, "demand", verify=True)
    assert dl.main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "NPARK_16k.zip" in err and "download the file again" in err
    # the download's --verify re-hashes files it would otherwise skip
    argv = ["demand", "--out", str(tmp_path), "--envs", "NPARK", "--record-url", f"{url}/api/records/1227121",
            "--base-url", f"{url}/files", "--backoff", "0.01"]
    assert dl.main(argv) == 0  # without --verify: complete by size, skipped
    assert dl.main([*argv, "--verify"]) == 1
    assert re.search(r"NPARK_16k\.zip: MD5 mismatch.*delete it and run again", capsys.readouterr().err)


def test_manifest_command_for_local_archives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sf_dir = tmp_path / "sf"
    sf_dir.mkdir()
    for s in (3, 12):
        (sf_dir / f"sub_{s}_ia.zip").write_bytes(make_zip("x", 1000 + s, s))
    (sf_dir / "sub_13_ia.zip.part").write_bytes(b"PK")
    (sf_dir / "subjects.csv").write_text("Sub_ID\n3\n12\n")
    (sf_dir / "notes.txt").write_text("from a colleague's disk")
    assert dl.main(["manifest", str(sf_dir)]) == 0
    assert "speakingfaces, 3 file(s)" in capsys.readouterr().out
    m = mf.read_manifest(sf_dir, "speakingfaces")
    assert m.source == {"type": "local"}
    assert [f.path for f in m.files] == ["sub_12_ia.zip", "sub_3_ia.zip", "subjects.csv"]
    assert m.by_path()["sub_3_ia.zip"].sha256 == sha256((sf_dir / "sub_3_ia.zip").read_bytes())
    assert mf.unlisted_files(sf_dir, m) == ["notes.txt", "sub_13_ia.zip.part"]
    # a folder with nothing of a corpus, and a missing folder: errors that say so
    assert dl.main(["manifest", str(tmp_path / "sf" / "..")]) == 1
    assert "no corpus archives found" in capsys.readouterr().err
    assert dl.main(["manifest", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: folder not found" in capsys.readouterr().err
