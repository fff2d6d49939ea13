"""Open a page in real headless Chromium (Debian's ``chromium``) and report what a browser sees.

Talks the Chrome DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3 and 4,
NUL-separated JSON), so no port and no websocket library are needed. The Network domain reports
every request the page makes; a request for anything but a ``data:`` or ``file:`` URL is one that
would leave the machine.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

LOCAL_SCHEMES = ("data:", "file:", "about:")

# Waits (inside the page) until every <audio> has loaded its metadata or failed, and every <img> has
# decoded or failed, then lists them.
MEDIA_CHECK = """
new Promise(resolve => {
  const audios = [...document.querySelectorAll('audio')], imgs = [...document.images];
  const settled = () => audios.every(a => a.readyState >= 1 || a.error) && imgs.every(i => i.complete);
  const report = () => resolve(JSON.stringify({
    audio: audios.map(a => ({readyState: a.readyState, error: a.error ? a.error.code : null,
                             duration: a.duration, src: a.currentSrc.slice(0, 40)})),
    images: imgs.map(i => ({complete: i.complete, width: i.naturalWidth, src: i.currentSrc.slice(0, 40)})),
    svgs: document.querySelectorAll('svg').length,
    scripts: document.scripts.length,
    height: document.documentElement.scrollHeight,
    text: document.body.innerText}));
  const t0 = Date.now();
  const poll = () => (settled() || Date.now() - t0 > %d) ? report() : setTimeout(poll, 100);
  poll();
})
"""


def chromium_binary() -> str:
    """Debian's chromium; a clear error where it is not installed (``scripts/setup.sh`` installs it)."""
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError(
            "chromium not found: install Debian's package (apt-get install chromium; "
            "scripts/setup.sh does this when it runs as root)"
        )
    return found


class DevTools:
    """A headless Chromium and a DevTools session over the debugging pipe."""

    def __init__(self, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:  # Chromium reads commands on fd 3 and writes replies and events on fd 4
            # Copies first: a pipe end may itself be fd 3 or 4 (dup2 onto itself would keep it close-on-exec).
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [
                chromium_binary(),
                "--headless",
                "--no-sandbox",
                "--remote-debugging-pipe",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            preexec_fn=child_fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the debugging pipe (exit code {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """Run one DevTools command and return its result (events seen meanwhile go to ``events``)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def inspect_page(
    page: Path,
    screenshot: Path | None = None,
    width: int = 1280,
    height: int = 1000,
    media_timeout_ms: int = 30000,
    full_page: bool = False,
) -> dict:
    """Open ``page`` (file://) in headless Chromium; return what loaded and every request it made.

    Returns ``audio`` / ``images`` (per element: readyState, error, duration / decoded width),
    ``svgs`` and ``scripts`` (counts), ``height`` (px), ``text`` (the page's visible text),
    ``requests`` (every URL the page asked for), ``external`` (those not ``data:``/``file:``),
    ``failed`` (requests that failed, with the reason) and ``console`` (console errors). With
    ``screenshot``, a PNG of the first ``height`` pixels of the page at ``width`` (of the whole page
    with ``full_page``) is written there.
    """
    with tempfile.TemporaryDirectory(prefix="tavse-chromium-") as profile:
        dt = DevTools(Path(profile))
        try:
            target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Network", "Page", "Runtime", "Log"):
                dt.send(f"{domain}.enable", session=session)
            dt.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            dt.events.clear()
            dt.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            dt.wait_for("Page.loadEventFired", timeout=120)
            res = dt.send(
                "Runtime.evaluate",
                {"expression": MEDIA_CHECK % media_timeout_ms, "awaitPromise": True, "returnByValue": True},
                session=session,
                timeout=media_timeout_ms / 1000 + 30,
            )
            if "exceptionDetails" in res:
                raise RuntimeError(f"media check failed in the page: {res['exceptionDetails']}")
            seen = json.loads(res["result"]["value"])
            if screenshot is not None:
                if full_page:  # the viewport as tall as the page: one picture of all of it
                    dt.send(
                        "Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": seen["height"], "deviceScaleFactor": 1, "mobile": False},
                        session=session,
                    )
                shot = dt.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=120)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.5)  # let late events (a request started by a load) arrive
            dt.send("Runtime.evaluate", {"expression": "1"}, session=session)
        finally:
            dt.close()
    requests = [ev["params"]["request"]["url"] for ev in dt.events if ev.get("method") == "Network.requestWillBeSent"]
    failed = [
        {
            "url": next(
                (
                    ev2["params"]["request"]["url"]
                    for ev2 in dt.events
                    if ev2.get("method") == "Network.requestWillBeSent"
                    and ev2["params"]["requestId"] == ev["params"]["requestId"]
                ),
                "?",
            ),
            "error": ev["params"].get("errorText"),
        }
        for ev in dt.events
        if ev.get("method") == "Network.loadingFailed"
    ]
    console = [
        ev["params"]["entry"]
        for ev in dt.events
        if ev.get("method") == "Log.entryAdded" and ev["params"]["entry"].get("level") == "error"
    ]
    console += [ev["params"] for ev in dt.events if ev.get("method") == "Runtime.exceptionThrown"]
    return {
        **seen,
        "requests": requests,
        "failed": failed,
        "console": console,
        "external": [u for u in requests if not u.startswith(LOCAL_SCHEMES)],
    }
