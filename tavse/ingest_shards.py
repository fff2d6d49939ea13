"""The ``ingest`` stage's shards: one speaker's archive → its own small LMDB of mouth crops and
16 kHz audio plus its manifest rows (:func:`ingest_speaker`), built in worker processes
(:func:`build_in_workers`) under a lock per shard.

A shard lives in a scratch folder keyed by the params, the code and the archive's content
(:func:`archive_key`), so a killed ingest resumes where it stopped. The stage
(:mod:`tavse.pipeline.ingest`) plans the shards and merges them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import TypeVar

import numpy as np

from tavse.common.audio import frame_loudness_db, resample
from tavse.common.config import IngestConfig, params_hash
from tavse.common.dvc_stage import code_fingerprint
from tavse.common.io import atomic_path
from tavse.common.locks import FileLock
from tavse.common.logs import ignore_ctrl_c_in_worker, setup_logging
from tavse.common.progress import progress
from tavse.corpus import speakingfaces as sfc
from tavse.corpus import store
from tavse.corpus.errors import BadInput
from tavse.vision import mouth_roi
from tavse.vision.mouth_crops import check_palette, mouth_crops

log = logging.getLogger("tavse.ingest")

T = TypeVar("T")


@dataclass
class SpeakerResult:
    """What one speaker's shard holds, as reported back to the merge."""

    speaker: int
    split: str
    archive: str
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {path, reason, message}
    ignored: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    frames_run: int = 0
    frames_detected: int = 0
    seconds: float = 0.0


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


# meta lip_gap rounding (fraction of the mouth width; 0.01 ~ 0.5 px): between CPUs the gap differs by
# ~1e-5 on average (FaceMesh float kernels), which changes ~0.2% of 2-decimal values, ~2% of 3-decimal ones.
LIP_GAP_DECIMALS = 2


def process_utterance(
    utt: sfc.Utterance, cfg: IngestConfig, where: str, detector: mouth_roi.LipDetector | None = None
) -> tuple[list[tuple[bytes, bytes]], dict, mouth_roi.MouthTrack]:
    """Crops, 16 kHz audio and metadata of one decoded utterance."""
    rgb, thr, track = mouth_crops(utt.rgb, utt.thermal, cfg, where, detector)
    wav = resample(utt.audio, utt.sample_rate, cfg.sample_rate)
    n_frames = len(rgb)
    n_samples = round(n_frames * cfg.sample_rate / cfg.fps)
    wav = np.pad(wav, (0, max(0, n_samples - len(wav))))[:n_samples].astype(np.float32)
    loud = frame_loudness_db(wav, cfg.sample_rate, cfg.fps, n_frames)
    # Stored with the precision the landmarks support across CPUs: the crop boxes as snapped (whole
    # or half pixels), the lip gap to LIP_GAP_DECIMALS; av_sync_r from those stored values.
    gap = [round(float(g), LIP_GAP_DECIMALS) if np.isfinite(g) else None for g in track.lip_gap]
    meta = {"fps": cfg.fps, "sample_rate": cfg.sample_rate, "boxes": np.round(track.boxes, 2).tolist(), "lip_gap": gap}
    gap_values = np.array([np.nan if g is None else g for g in gap])
    sync = _pearson(gap_values, loud)
    return store.utterance_items(utt.key.utt_id, meta, rgb, thr, wav), {"av_sync_r": sync}, track


# Decoding runs beside FaceMesh: one thread fetches the next utterance while the current one is
# processed, its PNGs decoded by DECODE_THREADS threads (cv2.imdecode releases the GIL). At most
# two decoded utterances are held per worker (the current one and the next): 2 x frames x 2 x
# 464x348x3 bytes, ~0.23 GB for the mean command (120 frames), ~0.4 GB for the longest (7.2 s).
DECODE_THREADS = 2  # 0: decode serially in the worker's thread (no prefetch)
# FaceMesh threads per worker (mouth_roi.LipDetector), the frames of a command split between them:
# up to LANDMARK_THREADS while the worker has cores of its own; one when the workers share them
# (more graphs than cores only switch between each other).
LANDMARK_THREADS = 2


def landmark_threads(workers: int) -> int:
    """FaceMesh threads for each of ``workers`` ingest processes on the CPUs this process may use."""
    return max(1, min(LANDMARK_THREADS, len(os.sched_getaffinity(0)) // max(1, workers)))


def _prefetched(load: Callable[[T], object], items: list[T]) -> Iterator[tuple[T, Future]]:
    """``(item, future of load(item))`` in order, the next item loading while the caller handles one.

    Serial (each item loaded when its turn comes) when DECODE_THREADS is 0.
    """
    if not DECODE_THREADS:
        for item in items:
            fut: Future = Future()
            try:
                fut.set_result(load(item))
            except BadInput as exc:
                fut.set_exception(exc)
            yield item, fut
        return
    with ThreadPoolExecutor(1, thread_name_prefix="ingest-prefetch") as ahead:
        nxt = ahead.submit(load, items[0]) if items else None
        try:
            for i, item in enumerate(items):
                cur, nxt = nxt, (ahead.submit(load, items[i + 1]) if i + 1 < len(items) else None)
                assert cur is not None  # submitted for this item in the previous turn
                yield item, cur
        finally:
            if nxt is not None:
                nxt.cancel()


def ingest_speaker(archive: Path, split: str, cfg: IngestConfig, subjects: dict, shard: Path) -> SpeakerResult:
    """Ingest one speaker archive into the shard folder ``shard`` (written atomically)."""
    import cv2

    cv2.setNumThreads(1)  # parallelism is over speakers
    t0 = time.perf_counter()
    speaker = sfc.speaker_id_of(archive)
    res = SpeakerResult(speaker=speaker, split=split, archive=archive.name)

    def skip(exc: BadInput) -> None:
        if cfg.on_error == "fail":
            raise exc
        log.warning("skipped %s", exc)
        res.skipped.append({"path": exc.path, "reason": exc.reason, "message": exc.message})

    def batches() -> Iterator[list[tuple[bytes, bytes]]]:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            skip(BadInput("corrupt_archive", str(archive), f"not a readable zip archive: {exc}"))
            return
        with zf, contextlib.ExitStack() as stack:
            frame_pool = (
                stack.enter_context(ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="ingest-png"))
                if DECODE_THREADS
                else None
            )
            utts, res.ignored = sfc.index_archive(zf, str(archive), speaker)
            for reason, n in res.ignored.items():
                log.warning("%s: ignored %d member(s): %s", archive, n, reason)
            if not utts:
                skip(BadInput("empty_archive", str(archive), "no utterances in the SpeakingFaces layout"))
            meta = subjects.get(speaker, {})

            def load(u: sfc.UtteranceMembers) -> sfc.Utterance:
                return sfc.load_utterance(zf, str(archive), u, cfg.frame_tolerance, frame_pool)

            for u, loading in _prefetched(load, utts):
                where = f"{archive}:{u.key.utt_id}"
                try:
                    utt = loading.result()
                    residual = check_palette(utt.thermal, cfg, where)
                    items, extra, track = process_utterance(utt, cfg, where, detector)
                except BadInput as exc:
                    skip(exc)
                    continue
                finally:
                    del loading
                b = track.boxes
                n = len(b)
                res.frames += n
                res.frames_run += int(track.ran.sum())
                res.frames_detected += int(track.detected.sum())
                res.rows.append(
                    {
                        "utt_id": u.key.utt_id,
                        "speaker": speaker,
                        "split": split,
                        "trial": u.key.trial,
                        "position": u.key.position,
                        "command": u.key.command,
                        "n_frames": n,
                        "n_samples": round(n * cfg.sample_rate / cfg.fps),
                        "duration_s": round(n / cfg.fps, 4),
                        "detection_ratio": round(track.detection_ratio, 4),
                        "box_side_mean": round(float(b[:, 2].mean()), 2),
                        "box_side_std": round(float(b[:, 2].std()), 2),
                        "box_centre_std": round(float(np.hypot(b[:, 0].std(), b[:, 1].std())), 2),
                        "av_sync_r": None if extra["av_sync_r"] is None else round(extra["av_sync_r"], 4),
                        "palette_residual": residual,
                        "age": meta.get("age", ""),
                        "gender": meta.get("gender", ""),
                        "ethnicity": meta.get("ethnicity", ""),
                        "archive": archive.name,
                    }
                )
                del utt
                yield items

    # The detector (and so the MediaPipe import) before the shard's temporary folder: the SystemExit
    # of a SIGTERM that lands while MediaPipe's native module initialises ends the process without
    # running any cleanup (seen in tests/pipeline/test_ingest_failures.py), which would leave that folder behind.
    with mouth_roi.LipDetector(landmark_threads(cfg.workers)) as detector, atomic_path(shard) as tmp:
        tmp.mkdir(parents=True)
        store.write_store(tmp / "lmdb", batches())
        res.seconds = time.perf_counter() - t0
        (tmp / "result.json").write_text(json.dumps(dataclasses.asdict(res), sort_keys=True))
    return res


def _shard_key(archive: Path, split: str, cfg: IngestConfig) -> str:
    with zipfile.ZipFile(archive) as zf:
        fp = sfc.archive_fingerprint(zf)
    relevant = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("workers", "out_dir", "report", "max_skip_ratio")
    }
    return params_hash({"cfg": relevant, "split": split, "archive": fp, "code": code_fingerprint("ingest")})


def archive_key(archive: Path, split: str, cfg: IngestConfig) -> str:
    try:
        return _shard_key(archive, split, cfg)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
        # Unreadable archives are keyed by name and size; the worker reports them.
        st = archive.stat()
        return params_hash(
            {"name": archive.name, "size": st.st_size, "code": code_fingerprint("ingest"), "split": split}
        )


def exit_on_signal(signum: int, frame=None) -> None:
    """A SIGTERM handler: unwind (temporary shard folders removed, pool workers terminated), exit 128+signum.

    Further signals are ignored while unwinding, so that a repeated SIGTERM cannot cut the cleanup short.
    """
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- locks
#
# Shard locks are tavse.common.locks.FileLock files in ``<work>/.locks/``, the scratch folder of
# the shards. The shard folders are written through a temporary folder and renamed (atomic_path),
# so even where the filesystem shows locks only on one host no output is ever half written.


class IngestError(RuntimeError):
    """Ingest cannot produce trustworthy outputs; the message names the speakers, reasons and params."""


def shard_lock_path(shard: Path) -> Path:
    return shard.parent / ".locks" / f"{shard.name}.lock"


def build_shard(job: tuple[Path, str, IngestConfig, dict, Path], wait: bool) -> str:
    """Build one shard under its lock: ``built``, ``reused`` (built meanwhile by another process)
    or ``busy`` (another process is building it and ``wait`` is False: skipped here, named in the log)."""
    archive, shard = job[0], job[4]
    lock = FileLock(shard_lock_path(shard))
    try:
        if not lock.acquire(wait=False):
            holder = lock.holder()
            if not wait:
                log.warning(
                    "%s: its shard is being built by another process (%s): skipped here (busy); "
                    "the merge (`dvc repro ingest`) waits for it",
                    archive.name,
                    holder,
                )
                return "busy"
            log.info("%s: waiting for another process building its shard (%s)", archive.name, holder)
            lock.acquire(wait=True)
        if (shard / "result.json").is_file():
            log.info("%s: shard built meanwhile by another process, reused", archive.name)
            return "reused"
        ingest_speaker(*job)
        return "built"
    finally:
        lock.close()


# --------------------------------------------------------------------------- worker processes


def _watch_parent(parent_pid: int) -> None:
    """In a worker: SIGTERM ourselves (clean unwind) as soon as the parent is gone (killed with SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _run_job(job: tuple[Path, str, IngestConfig, dict, Path], wait: bool = True) -> str:
    # A worker stopped (SIGTERM) while it writes a shard removes the half-written folder. Only
    # then: an idle worker waits for its next job in a blocking read that a Python handler may
    # never return from, so between jobs SIGTERM must kill it outright.
    signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        return build_shard(job, wait)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_main(conn, parent_pid: int) -> None:
    """Body of one worker process: for each job received, send ("ok", status) or ("error", pickled error, traceback).

    After an error the worker exits (the parent stops everything anyway).
    """
    ignore_ctrl_c_in_worker()
    setup_logging()
    _watch_parent(parent_pid)
    try:
        while True:
            try:
                job, wait = conn.recv()
            except EOFError:
                return
            if job is None:
                return
            try:
                conn.send(("ok", _run_job(job, wait)))
            except BaseException as exc:  # every failure must reach the parent
                text = "".join(traceback.format_exception(exc))
                try:
                    payload = pickle.dumps(exc)
                    pickle.loads(payload)  # an exception that cannot be rebuilt travels as text only
                except Exception:
                    payload = None
                try:
                    conn.send(("error", payload, text))
                except OSError:
                    pass
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise
                raise SystemExit(1) from None
    finally:
        conn.close()


def _worker_error(job, proc, msg) -> BaseException:
    """The exception to raise in the parent for a worker that failed or died."""
    archive = job[0]
    if msg is not None and msg[0] == "error":
        _, payload, text = msg
        exc = None
        if payload is not None:
            try:
                exc = pickle.loads(payload)
            except Exception:
                exc = None
        if isinstance(exc, BadInput):
            return exc
        if exc is None or isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return IngestError(f"{archive}: the worker building speaker {sfc.speaker_id_of(archive)} failed:\n{text}")
        exc.__cause__ = IngestError(f"in the worker building {archive.name}:\n{text}")
        return exc
    code = proc.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"ended with exit code {code}"
    hint = (
        " (SIGKILL: out of memory? each worker needs ~0.5 GB plus the FaceMesh model)"
        if code == -signal.SIGKILL
        else ""
    )
    return IngestError(
        f"{archive}: the worker process building speaker {sfc.speaker_id_of(archive)} {how}{hint} without a result"
    )


def _stop(workers: list) -> None:
    """End the workers: SIGTERM to each live one (a busy one removes its half-written shard),
    SIGKILL to any still alive after 30 s, then close their pipes."""
    for proc, _conn in workers:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 30
    for proc, conn in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()


def build_in_workers(jobs: list, workers: int, wait: bool = True) -> dict[Path, str]:
    """Build the shards of ``jobs`` (:func:`build_shard`), in ``workers`` processes when that helps.

    Returns each archive's status. The workers are spawned processes, each fed one job at a time
    through its own pipe. The first failure of any of them (an exception, which always reaches
    this process: unpicklable ones as text, or the process dying) stops the others and is raised
    here; so does a SIGTERM of this process (the stage's handler raises SystemExit). A worker whose
    parent is killed outright terminates itself (``_watch_parent``): no orphans.
    """
    statuses: dict[Path, str] = {}
    if not jobs:
        return statuses
    if workers <= 1 or len(jobs) == 1:
        for job in progress(jobs, desc="ingest speakers", unit="spk"):
            statuses[job[0]] = build_shard(job, wait)
        return statuses
    ctx = mp.get_context("spawn")
    queue = list(jobs)
    pool: list = []  # (process, pipe end)
    busy: dict = {}  # pipe end -> (process, job)
    try:
        for _ in range(min(workers, len(jobs))):
            here, there = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(there, os.getpid()), name="ingest-worker", daemon=True)
            proc.start()
            there.close()
            pool.append((proc, here))
        idle = list(pool)
        with progress(total=len(jobs), desc="ingest speakers", unit="spk") as bar:
            while queue or busy:
                while queue and idle:
                    proc, conn = idle.pop()
                    job = queue.pop(0)
                    conn.send((job, wait))
                    busy[conn] = (proc, job)
                sentinels = {proc.sentinel: conn for conn, (proc, _) in busy.items()}
                for ready in mp_connection.wait(list(busy) + list(sentinels), timeout=5):
                    conn = sentinels.get(ready, ready)
                    if conn not in busy:
                        continue
                    proc, job = busy[conn]
                    msg = None
                    if conn.poll():
                        try:
                            msg = conn.recv()
                        except (EOFError, OSError):
                            msg = None
                    if msg is not None and msg[0] == "ok":
                        del busy[conn]
                        statuses[job[0]] = msg[1]
                        idle.append((proc, conn))
                        bar.update()
                        continue
                    proc.join(5)  # an error message is sent just before the worker exits
                    raise _worker_error(job, proc, msg)
        for _, conn in pool:
            conn.send((None, None))
    finally:
        _stop(pool)
    return statuses
