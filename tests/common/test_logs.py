"""Quiet, useful logs: native start-up noise filtered, progress as lines off a terminal, Ctrl-C in one line."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from tavse.common.progress import LogProgress, progress_every
from tests.conftest import ROOT, default_sigint

LONGEST_LINE = 300  # characters: what a log line may take, so that a file or SLURM log stays readable


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with warnings as errors; stdout/stderr as text, line ends kept as written."""
    res = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
        timeout=300,
    )
    res.stdout, res.stderr = res.stdout.decode(), res.stderr.decode()
    return res


def assert_readable_log(text: str, workdir: Path | None = None) -> None:
    """No progress-bar redraws (carriage returns), no overlong line, no Python warning, no traceback.

    ``workdir``: the test's folder, counted as a short relative path would be in a real run.
    """
    assert "\r" not in text, "progress-bar redraws in a log file"
    shown = text.replace(f"{workdir}/", "") if workdir is not None else text
    longest = max(shown.splitlines(), key=len, default="")
    assert len(longest) <= LONGEST_LINE, f"a {len(longest)}-character line: {longest[:200]}..."
    for bad in ("Warning:", "W0000", "Traceback"):
        assert bad not in text, f"{bad!r} in the log:\n{text[-3000:]}"


def test_native_noise_is_dropped_and_everything_else_passes_in_order():
    res = _python(r"""
        import os, sys
        from tavse.common.logs import native_noise_filtered
        os.write(2, b"before\n")
        with native_noise_filtered():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
            os.write(2, b"W0000 00:00:1796173435.105269    4868 inference_feedback_manager.cc:114] Feedback manager "
                        b"requires a model with a single signature inference. Disabling support for feedback tensors.\n")
            os.write(2, b"E0000 00:00:1796173435.105269    4868 calculator_graph.cc:887] a real error\n")
            print("python stderr", file=sys.stderr, flush=True)
            with native_noise_filtered():  # nested: one redirection
                os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, b"bar 1/2\rbar 2/2\r")
            os.write(2, b"no newline at the end")
        os.write(2, b"\nafter: INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stderr == (
        "before\nE0000 00:00:1796173435.105269    4868 calculator_graph.cc:887] a real error\n"
        "python stderr\nbar 1/2\rbar 2/2\rno newline at the end\n"
        "after: INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    )


def test_facemesh_starts_silently():
    """Real FaceMesh runs (MediaPipe 0.10: absl and TFLite notices at every graph start and at the
    first face found in a process) print nothing, in both modes, with a face and without."""
    res = _python("""
        import cv2
        import numpy as np
        from tavse.vision import mouth_roi
        face = cv2.resize(cv2.cvtColor(cv2.imread(str(mouth_roi.WARMUP_FACE)), cv2.COLOR_BGR2RGB), (128, 128))
        for static in (True, False):
            lips, ran = mouth_roi.detect_lips([face, np.zeros((64, 64, 3), np.uint8)], static=static)
            assert ran.all() and not np.isnan(lips[0]).any() and np.isnan(lips[1]).all()
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr
    assert res.stderr == ""


def test_the_warmup_face_is_found():
    """Without it the once-per-process notice would come at the first real face, outside the filter."""
    import cv2

    from tavse.vision import mouth_roi

    with mouth_roi._new_face_mesh(True) as mesh:
        found = mesh.process(cv2.cvtColor(cv2.imread(str(mouth_roi.WARMUP_FACE)), cv2.COLOR_BGR2RGB))
    assert found.multi_face_landmarks


def test_progress_off_a_terminal_is_a_line_every_n_seconds():
    res = _python(
        """
        import time
        from tavse.common.logs import setup_logging
        from tavse.common.progress import progress
        setup_logging()
        bar = progress(total=40, desc="train x", unit="step")
        for i in range(40):
            time.sleep(0.025)
            bar.update(1)
            bar.set_postfix(loss=f"{-i:.3f}")
        bar.close()
        for _ in progress(range(3), desc="quiet", leave=False):
            pass
    """,
        TAVSE_PROGRESS_EVERY="0.3",
    )
    assert res.returncode == 0, res.stderr
    assert_readable_log(res.stderr)
    lines = res.stderr.splitlines()
    # About 1 s of work: a line every 0.3 s (2-4 of them, the machine may be slow), then the end line.
    assert 2 <= len(lines) - 1 <= 4, res.stderr
    assert all(" INFO tavse.progress: train x: " in line for line in lines)
    assert "/40 step (" in lines[0] and "ETA" in lines[0] and "loss=" in lines[0]
    assert "train x: 40/40 step in 00:0" in lines[-1]


def test_progress_on_a_terminal_is_a_tqdm_bar():
    """stderr a pseudo-terminal: a bar redrawn in place, log lines printed above it."""
    code = textwrap.dedent("""
        import logging, time
        from tavse.common.logs import setup_logging
        from tavse.common.progress import progress
        setup_logging()
        with progress(total=3, desc="bar", unit="x") as bar:
            for i in range(3):
                time.sleep(0.05)
                bar.update(1)
                logging.getLogger("tavse").info("line %d", i)
    """)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    os.close(slave)
    out, deadline = b"", time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert "\rbar: 100%" in text and "3/3" in text
    assert all(f"INFO tavse: line {i}" in text for i in range(3))


def test_progress_every_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("TAVSE_PROGRESS_EVERY", raising=False)
    assert progress_every() == 30.0
    monkeypatch.setenv("TAVSE_PROGRESS_EVERY", "5")
    assert progress_every() == 5.0 and LogProgress(total=1).every == 5.0
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("TAVSE_PROGRESS_EVERY", bad)
        with pytest.raises(ValueError, match="TAVSE_PROGRESS_EVERY"):
            progress_every()


def test_ctrl_c_outside_training_is_one_line_and_status_130():
    """What ``setup_logging`` gives every stage: no traceback, the process ends by SIGINT (a shell's 130)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tavse.common.logs import setup_logging\nsetup_logging()\n"
            "import time\nprint('ready', flush=True)\ntime.sleep(60)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        preexec_fn=default_sigint,
    )
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f'"{sys.executable}" -c "from tavse.common.logs import setup_logging; '
            'setup_logging(); import os, signal; os.kill(os.getpid(), signal.SIGINT)"; echo $?',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        preexec_fn=default_sigint,
    )
    assert shell.stdout == "130\n"
    for text in (err, shell.stderr):
        assert "Traceback" not in text and len(text.splitlines()) == 1, text
        assert "ERROR tavse: interrupted (Ctrl-C): `python -c ...` stopped before finishing; run it again" in text
