"""Local stand-ins for the HuggingFace Hub and Zenodo (127.0.0.1 only) that tavse.download talks to.

The fake Hub answers the revision API, HEADs of resolve URLs with the LFS headers
(``X-Linked-Size``, ``X-Linked-Etag``, ``X-Repo-Commit``, a redirect to a "CDN" path) and ranged
GETs; it refuses requests without the right bearer token like a gated repo. The fake Zenodo
serves the record JSON with MD5s and the files, under both ``/files/`` and Zenodo's own
``/records/1227121/files/``. Connections can be dropped mid-file and bodies throttled.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from tavse.download.huggingface import speaker_path

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
            speaker_path(s): make_zip(f"sub_{s}_ia/trial_1/x.png", 60_000, 100 + s) for s in (1, 2, 3)
        }
        self.bad_md5: set[str] = set()
        self.bad_sha256: set[str] = set()  # repository paths whose X-Linked-Etag is wrong
        self.revisions = {"main": COMMIT, "v1.0": COMMIT_V1, COMMIT: COMMIT, COMMIT_V1: COMMIT_V1}
        self.drop_once: set[str] = set()
        self.slow: dict[str, float] = {}  # key -> bytes per second while sending
        self.fake_size: dict[str, int] = {}  # repository path -> size the Hub advertises instead of the real one
        self.active = 0  # file bodies being sent now
        self.max_active = 0
        # method, path, Range, Authorization of every request
        self.requests: list[tuple[str, str, str | None, str | None]] = []
        self.lock = threading.Lock()

    def record_json(self) -> bytes:
        files = [
            {
                "key": k,
                "size": len(v),
                "checksum": "md5:" + ("0" * 32 if k in self.bad_md5 else hashlib.md5(v).hexdigest()),
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

        def _send_bytes(self, data: bytes, key: str, head: bool, extra: dict[str, str] | None = None) -> None:
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
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
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
            rate = state.slow.get(key)
            if not rate:
                self.wfile.write(body)
                return
            with state.lock:
                state.active += 1
                state.max_active = max(state.max_active, state.active)
            try:  # throttled: 4 kB pieces at `rate` bytes/s
                for i in range(0, len(body), 4096):
                    self.wfile.write(body[i : i + 4096])
                    self.wfile.flush()
                    time.sleep(4096 / rate)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with state.lock:
                    state.active -= 1

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
            self.send_header("X-Linked-Size", str(state.fake_size.get(path, len(data))))
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
            elif self.path.startswith(("/files/", "/records/1227121/files/")):
                name = self.path.rsplit("/", 1)[-1]
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


@contextlib.contextmanager
def serve(state: FakeServer | None = None, host: str = "127.0.0.1") -> Iterator[tuple[FakeServer, str]]:
    """Run the fake servers on ``host`` (a free port) in a thread; yield the state and the base URL."""
    state = state or FakeServer()
    httpd = ThreadingHTTPServer((host, 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://{host}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
