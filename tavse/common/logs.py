"""Logging shared by the stage entry points: one format, bars that survive log lines, quiet native code.

* :func:`setup_logging`: INFO lines ``HH:MM:SS LEVEL logger: message`` on stderr. On a terminal
  they are written through tqdm (a progress bar is cleared, the line printed, the bar redrawn);
  elsewhere (a file, a SLURM log, ``dvc repro`` output piped on) plainly. It also makes Ctrl-C
  (an uncaught KeyboardInterrupt) end with one line instead of a traceback; the process then
  ends by SIGINT as Python does (a shell reports exit status 130). Training handles SIGINT
  itself (save at the next step, exit 75: :mod:`tavse.training.signals`).
* :func:`native_noise_filtered`: MediaPipe (absl logging) and TensorFlow Lite write a fixed set of
  harmless lines straight to file descriptor 2 whenever a FaceMesh graph starts, and offer no
  switch to turn them off (absl's C++ log level is not reachable from Python; ``GLOG_minloglevel``
  and ``TF_CPP_MIN_LOG_LEVEL`` do not apply). Around graph creation only, fd 2 goes through a pipe
  that drops exactly those lines (:data:`NATIVE_NOISE`) and passes everything else on at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (progress bars) rather than a file or pipe (log lines)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False


class _TqdmHandler(logging.StreamHandler):
    """A stderr handler that prints through ``tqdm.write``, so that a line never lands inside a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def _interrupted_hook(previous):
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            args = getattr(sys, "orig_argv", sys.argv)[1:]
            command = " ".join(["python", *(a if len(a) <= 60 and "\n" not in a else "..." for a in args)])
            logging.getLogger("tavse").error(
                "interrupted (Ctrl-C): `%s` stopped before finishing; run it again", command
            )
            return
        previous(exc_type, exc, tb)

    hook.tavse_interrupt_hook = True
    return hook


def setup_logging() -> None:
    """INFO to stderr with the logger name (or the level in ``$TAVSE_LOG_LEVEL``); Ctrl-C without a traceback."""
    handler: logging.Handler = _TqdmHandler(sys.stderr) if stderr_is_terminal() else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    root = logging.getLogger()
    if not root.handlers:  # like basicConfig: a caller that configured logging first keeps its setup
        root.addHandler(handler)
    root.setLevel((os.environ.get("TAVSE_LOG_LEVEL") or "INFO").upper())
    if not getattr(sys.excepthook, "tavse_interrupt_hook", False):
        sys.excepthook = _interrupted_hook(sys.excepthook)


def ignore_ctrl_c_in_worker(*_args) -> None:
    """In a worker process: ignore SIGINT. Ctrl-C reaches every process of the terminal's process
    group; the parent decides (stops its workers, or saves and exits), and workers that raised
    KeyboardInterrupt themselves would print a traceback each or die under it. Usable as a pool
    initializer or a DataLoader ``worker_init_fn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Lines that native code writes to fd 2 when a FaceMesh graph starts (or first finds a face in a
# process) and that say nothing about the run.
NATIVE_NOISE = re.compile(
    rb"W\d{4} [\d:.]+ +\d+ inference_feedback_manager\.cc:\d+\] Feedback manager requires a model with a single "
    rb"signature inference\. Disabling support for feedback tensors\."
    rb"|W\d{4} [\d:.]+ +\d+ landmark_projection_calculator\.cc:\d+\] Using NORM_RECT without IMAGE_DIMENSIONS is "
    rb"only supported for the square ROI\. Provide IMAGE_DIMENSIONS or use PROJECTION_MATRIX\."
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
)


class _Fd2Filter:
    """fd 2 redirected into a pipe; a thread forwards each line that is not noise to the saved fd 2."""

    def __init__(self, noise: re.Pattern[bytes]):
        self.noise = noise
        sys.stderr.flush()
        self.saved = os.dup(2)
        read_end, write_end = os.pipe()
        out = os.dup(self.saved)
        self.thread = threading.Thread(target=self._forward, args=(read_end, out), name="fd2-filter", daemon=True)
        self.thread.start()
        os.dup2(write_end, 2)
        os.close(write_end)

    def _forward(self, read_end: int, out: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, 65536):
                pending += chunk
                # A line ends at \n; \r (a progress bar redrawing itself) is passed on at once too.
                *parts, pending = re.split(rb"(?<=[\n\r])", pending)
                for part in parts:
                    if not self.noise.fullmatch(part.rstrip(b"\r\n")):
                        _write_all(out, part)
            if pending and not self.noise.fullmatch(pending):
                _write_all(out, pending)
        finally:
            os.close(read_end)
            os.close(out)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # the pipe's last write end is gone: the thread reads to the end and stops
        os.close(self.saved)
        # A child started meanwhile may still hold the pipe open; the thread then keeps forwarding.
        self.thread.join(timeout=5)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


_filter_lock = threading.Lock()
_filter_users = 0
_filter: _Fd2Filter | None = None


@contextlib.contextmanager
def native_noise_filtered(noise: re.Pattern[bytes] = NATIVE_NOISE) -> Iterator[None]:
    """While active, drop the lines matching ``noise`` that anything in this process writes to fd 2.

    Everything else written to fd 2 meanwhile (Python's stderr included) is passed on unchanged
    and immediately, line by line. Nested and concurrent uses share one redirection.
    """
    global _filter_users, _filter
    with _filter_lock:
        if _filter_users == 0:
            _filter = _Fd2Filter(noise)
        _filter_users += 1
    try:
        yield
    finally:
        with _filter_lock:
            _filter_users -= 1
            if _filter_users == 0 and _filter is not None:
                _filter.close()
                _filter = None
