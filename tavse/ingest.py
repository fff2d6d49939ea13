"""The ``ingest`` stage: SpeakingFaces archives → mouth-ROI LMDBs per split, manifests, a report.

Work is parallel over speakers. Each speaker becomes a *shard* (its own small LMDB plus its
manifest rows) in a scratch folder keyed by the params, the code and the archive's content,
so a killed ingest resumes where it stopped. The shards are then merged in speaker order into
one LMDB per split, so the output bytes do not depend on the number of workers or on how
often the run was interrupted.

Across machines (a SLURM job array, ``slurm/ingest.sbatch --shards K``), :func:`build_shards`
builds the shards of one task of K outside DVC; ``dvc repro ingest`` (:func:`run_ingest`) then
finds them built and only merges.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import multiprocessing as mp
import os
import pickle
import re
import shutil
import signal
import threading
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from pathlib import Path

import numpy as np

from tavse.common.audio import frame_loudness_db, resample
from tavse.common.config import DataConfig, IngestConfig, params_hash
from tavse.common.dvc_stage import code_fingerprint
from tavse.common.io import atomic_path, write_json
from tavse.common.locks import FileLock
from tavse.common.logs import ignore_ctrl_c_in_worker, setup_logging
from tavse.common.paths import scratch_dir
from tavse.common.progress import progress
from tavse.corpus import manifest as corpus_manifest
from tavse.corpus import speakingfaces as sfc
from tavse.corpus import store
from tavse.corpus.errors import BadInput
from tavse.vision import mouth_roi
from tavse.vision.thermal_palette import iron_residual, iron_to_temperature

log = logging.getLogger("tavse.ingest")

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "utt_id",
    "speaker",
    "split",
    "trial",
    "position",
    "command",
    "n_frames",
    "n_samples",
    "duration_s",
    "detection_ratio",
    "box_side_mean",
    "box_side_std",
    "box_centre_std",
    "av_sync_r",
    "palette_residual",
    "age",
    "gender",
    "ethnicity",
    "archive",
)


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


def read_subjects(path: str) -> dict[int, dict[str, str]]:
    """Speaker metadata from a SpeakingFaces ``subjects.csv`` ({} when the path is empty or absent)."""
    if not path or not Path(path).is_file():
        return {}
    with open(path, newline="") as fh:
        return {
            int(r["Sub_ID"]): {
                "age": r.get("Age", ""),
                "gender": r.get("Gender", ""),
                "ethnicity": r.get("Ethnicity", ""),
            }
            for r in csv.DictReader(fh)
        }


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def mouth_crops(
    rgb_frames: list[np.ndarray],
    thermal_frames: list[np.ndarray],
    cfg: IngestConfig,
    where: str,
    detector: mouth_roi.LipDetector | None = None,
) -> tuple[np.ndarray, np.ndarray, mouth_roi.MouthTrack]:
    """RGB crops (F, S, S, 3) and temperature-ordered thermal crops (F, S, S) around the tracked mouth.

    FaceMesh detects every ``landmark_stride``-th frame from scratch; the smoothed boxes are
    snapped to whole pixels and cropped with integer arithmetic (see :mod:`tavse.vision.mouth_roi`),
    so that landmark differences between CPUs far below a pixel rarely change a crop byte.
    ``detector``: an open :class:`~tavse.vision.mouth_roi.LipDetector` (same landmarks, see there).
    Raises BadInput("no_face") naming ``where`` if FaceMesh finds too few faces.
    """
    try:
        track = mouth_roi.track_mouth(rgb_frames, cfg.landmark_stride, cfg.box_scale, cfg.smooth_frames, detector)
    except ValueError:
        raise BadInput("no_face", where, "FaceMesh found no face in any frame") from None
    if track.detection_ratio < cfg.min_detection_ratio:
        raise BadInput(
            "no_face",
            where,
            f"face found in {track.detection_ratio:.0%} of frames "
            f"(< min_detection_ratio {cfg.min_detection_ratio:.0%})",
        )
    s = cfg.roi_size
    rgb = np.stack([mouth_roi.crop(f, b, s) for f, b in zip(rgb_frames, track.boxes)])
    thr = np.stack(
        [mouth_roi.crop(f, b, s, pixel_map=iron_to_temperature) for f, b in zip(thermal_frames, track.boxes)]
    )
    return rgb, thr, track


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
    gap = np.array([np.nan if g is None else g for g in gap])
    return store.utterance_items(utt.key.utt_id, meta, rgb, thr, wav), {"av_sync_r": _pearson(gap, loud)}, track


def palette_residual(thermal_frames: list[np.ndarray]) -> float:
    """How far an utterance's thermal frames are from FLIR Iron pseudo-colour (RGB units, 2 decimals).

    The median over the first, middle and last frame of each frame's median
    :func:`~tavse.vision.thermal_palette.iron_residual`, on every second row and column (the
    median barely moves; a quarter of the cost, ~0.5 ms per frame). 1.41 for the real
    SpeakingFaces fixture frame, 0.0 for the synthetic corpus (exact Iron colours); 25 for that
    frame in greyscale, 16 in inferno, 83 in jet, 105 for natural RGB. ``ingest.max_palette_residual``
    (6 by default: 4x above real, 2.7x below the nearest other palette) decides.
    """
    idx = sorted({0, len(thermal_frames) // 2, len(thermal_frames) - 1})
    per_frame = [float(np.median(iron_residual(np.ascontiguousarray(thermal_frames[i][::2, ::2])))) for i in idx]
    return round(float(np.median(per_frame)), 2)


def check_palette(thermal_frames: list[np.ndarray], cfg: IngestConfig, where: str) -> float:
    """The utterance's :func:`palette_residual`; BadInput ``thermal_not_iron`` naming ``where`` above the threshold.

    ingest maps Iron colours back to temperatures: a greyscale or other-palette frame would be
    "inverted" into meaningless crops without this check.
    """
    r = palette_residual(thermal_frames)
    if r > cfg.max_palette_residual:
        raise BadInput(
            "thermal_not_iron",
            where,
            f"thermal frames are not FLIR Iron pseudo-colour: median distance to the Iron palette {r:.1f} "
            f"RGB units > ingest.max_palette_residual {cfg.max_palette_residual:g} (greyscale or another "
            "palette; the dataset's thr_image_cmd frames are Iron, about 1.4)",
        )
    return r


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


def _prefetched(load, items: list) -> Iterator[tuple[object, Future]]:
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
    # running any cleanup (seen in tests/test_ingest_failures.py), which would leave that folder behind.
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


def _archive_key(archive: Path, split: str, cfg: IngestConfig) -> str:
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


def _shard_lock_path(shard: Path) -> Path:
    return shard.parent / ".locks" / f"{shard.name}.lock"


def build_shard(job: tuple[Path, str, IngestConfig, dict, Path], wait: bool) -> str:
    """Build one shard under its lock: ``built``, ``reused`` (built meanwhile by another process)
    or ``busy`` (another process is building it and ``wait`` is False: skipped here, named in the log)."""
    archive, shard = job[0], job[4]
    lock = FileLock(_shard_lock_path(shard))
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


def _build(jobs: list, workers: int, wait: bool = True) -> dict[Path, str]:
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


# --------------------------------------------------------------------------- plan, shards, merge


def _load_result(shard: Path) -> SpeakerResult:
    return SpeakerResult(**json.loads((shard / "result.json").read_text()))


def _write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else r[k] for k in MANIFEST_FIELDS})
    path.write_text(buf.getvalue())


def _shard_batches(stores: list[Path]) -> Iterator[list[tuple[bytes, bytes]]]:
    for path in stores:
        batch: list[tuple[bytes, bytes]] = []
        for k, v in store.iter_items(path):
            batch.append((k, v))
            if len(batch) >= 64:
                yield batch
                batch = []
        if batch:
            yield batch


@dataclass
class IngestPlan:
    """Every speaker shard of one ingest: where it lives and whether it is already built."""

    work: Path  # the scratch folder of the shards
    archives: list[Path]  # every sub_{id}_ia.zip, in speaker order
    shards: dict[Path, tuple[str, Path]]  # archive → (split, shard folder), speaker order
    unsplit: list[str]  # archive names outside every split (not ingested)
    subjects: dict

    def done(self, archive: Path) -> bool:
        return (self.shards[archive][1] / "result.json").is_file()

    def job(self, archive: Path, cfg: IngestConfig) -> tuple[Path, str, IngestConfig, dict, Path]:
        split, shard = self.shards[archive]
        return archive, split, cfg, self.subjects, shard


def plan_ingest(cfg: IngestConfig, data: DataConfig, work_dir: Path | None = None, verify: bool = False) -> IngestPlan:
    """The shards of ``data.speakingfaces_dir`` and their scratch folders (keyed by params, code, content).

    The archives are those ``manifest.json`` in the folder lists (each checked to exist with its
    listed size; files it does not list are ignored), never a glob. Raises FileNotFoundError
    naming the folder when it or its manifest is missing, ManifestError when an archive
    disagrees with the manifest or the manifest lists none. Warns once when ``data.subjects_csv``
    gives no metadata for some of the speakers.
    """
    folder = Path(data.speakingfaces_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: SpeakingFaces archive folder not found (params.yaml data.speakingfaces_dir). "
            "It is the input of the ingest stage: for the embedded synthetic default the stage "
            "synth_corpus writes it (`dvc repro synth_corpus`); for the real corpus download it "
            "(`python -m tavse.download speakingfaces --out DIR`) and point data.speakingfaces_dir at DIR, "
            "the folder that holds sub_{id}_ia.zip and manifest.json"
        )
    listed = corpus_manifest.checked_files(folder, "speakingfaces", verify=verify)
    archives = sorted(
        (p for p in listed if corpus_manifest.is_recording("speakingfaces", p.relative_to(folder).as_posix())),
        key=sfc.speaker_id_of,
    )
    if not archives:
        raise corpus_manifest.ManifestError(
            f"{corpus_manifest.manifest_path(folder)}: lists no sub_{{id}}_ia.zip archives (params.yaml data.speakingfaces_dir)"
        )
    work = (work_dir or scratch_dir() / "ingest").resolve()
    shards, unsplit = {}, []
    for a in archives:
        split = data.split_of(sfc.speaker_id_of(a))
        if split is None:
            unsplit.append(a.name)
            log.warning("%s: speaker outside every split of %r, not ingested", a, data.speaker_split)
            continue
        shards[a] = (split, work / f"sub_{sfc.speaker_id_of(a)}-{_archive_key(a, split, cfg)}")
    subjects = read_subjects(data.subjects_csv)
    warning = sfc.speaker_metadata_warning(data.subjects_csv, subjects, [sfc.speaker_id_of(a) for a in shards])
    if warning:
        log.warning("%s", warning)
    return IngestPlan(work, archives, shards, unsplit, subjects)


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/K"`` → (I, K) with 0 ≤ I < K; ValueError with the reason otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise ValueError(f"shard {spec!r}: expected INDEX/COUNT with whole numbers, e.g. 0/4 (tasks 0..COUNT-1)")
    index, count = int(m.group(1)), int(m.group(2))
    _check_shard(index, count)
    return index, count


def _check_shard(index: int, count: int) -> None:
    if count < 1:
        raise ValueError(f"shard {index}/{count}: COUNT must be at least 1")
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: INDEX must be in 0..{count - 1} (tasks are numbered from 0)")


def _reasons(skipped: list[dict]) -> str:
    return ", ".join(f"{r} x{n}" for r, n in sorted(Counter(s["reason"] for s in skipped).items()))


def check_speakers(results: dict[Path, SpeakerResult]) -> None:
    """IngestError naming every speaker that yielded no utterance, with its skips by reason and an example."""
    empty = [r for r in results.values() if not r.rows]
    if not empty:
        return
    lines = []
    for r in empty:
        first = r.skipped[0] if r.skipped else None
        example = f"; e.g. {first['path']}: {first['message']}" if first else ""
        lines.append(
            f"  speaker {r.speaker} ({r.archive}, split {r.split}): no utterance ingested, "
            f"{len(r.skipped)} skipped ({_reasons(r.skipped) or 'nothing found'}){example}"
        )
    raise IngestError(
        f"{len(empty)} speaker(s) yielded no utterance:\n"
        + "\n".join(lines)
        + "\nEach speaker in a split must give at least one utterance: fix or re-download these archives, "
        "or check their layout with `python -m tavse.inspect ARCHIVE`"
    )


def check_outputs(results: dict[Path, SpeakerResult], cfg: IngestConfig) -> None:
    """IngestError when a split ends empty or more than ``ingest.max_skip_ratio`` of the utterances were skipped."""
    rows = [row for r in results.values() for row in r.rows]
    skipped = [s for r in results.values() for s in r.skipped]
    empty = [s for s in SPLITS if not any(row["split"] == s for row in rows)]
    if empty:
        raise IngestError(
            f"split(s) {', '.join(empty)} ended with no utterance ({len(rows)} ingested in all): "
            "check data.speaker_split / data.speaker_splits against the archives of data.speakingfaces_dir"
        )
    ratio = len(skipped) / (len(skipped) + len(rows))
    if ratio > cfg.max_skip_ratio:
        worst = Counter(s["path"].split(":")[0] for s in skipped).most_common(3)
        raise IngestError(
            f"{len(skipped)} of {len(skipped) + len(rows)} utterances skipped ({ratio:.0%} > "
            f"ingest.max_skip_ratio {cfg.max_skip_ratio:.0%}): {_reasons(skipped)}; most from "
            + ", ".join(f"{Path(p).name} ({n})" for p, n in worst)
            + ". See the warnings above for each item; raise ingest.max_skip_ratio only if this is expected"
        )


def build_shards(
    cfg: IngestConfig, data: DataConfig, index: int, count: int, work_dir: Path | None = None, verify: bool = False
) -> dict[str, list[str]]:
    """Build the shards of task ``index`` of ``count`` (no merge, no DVC output).

    The archives that are in a split, in speaker order, are dealt round-robin: task ``index``
    gets archives ``index``, ``index + count``, ... The shard folders are those of
    :func:`run_ingest`, which afterwards finds them built and only merges. Returns the archive
    names by outcome: ``built``, ``reused`` (already built, or built meanwhile by another
    process), ``busy`` (being built by another process right now, e.g. a resubmitted array
    task: skipped here), ``unsplit`` (outside every split; listed by task 0 only). Raises
    IngestError when one of its speakers yields no utterance.
    """
    for name, v in (("index", index), ("count", count)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"shard {index!r}/{count!r}: {name} must be a whole number")
    _check_shard(index, count)
    plan = plan_ingest(cfg, data, work_dir, verify)
    mine = list(plan.shards)[index::count]
    todo = [a for a in mine if not plan.done(a)]
    log.info(
        "shard %d/%d: %d of %d archives (%s): %d to build, %d reused from %s",
        index,
        count,
        len(mine),
        len(plan.shards),
        ", ".join(a.name for a in mine) or "none",
        len(todo),
        len(mine) - len(todo),
        plan.work,
    )
    statuses = _build([plan.job(a, cfg) for a in todo], cfg.workers, wait=False)
    outcome = {
        "built": [a.name for a in todo if statuses[a] == "built"],
        "reused": [a.name for a in mine if a not in todo or statuses[a] == "reused"],
        "busy": [a.name for a in todo if statuses[a] == "busy"],
        "unsplit": plan.unsplit if index == 0 else [],
    }
    check_speakers({a: _load_result(plan.shards[a][1]) for a in mine if plan.done(a)})
    log.info(
        "shard %d/%d done: built %d, reused %d, busy %d (being built by another process)",
        index,
        count,
        len(outcome["built"]),
        len(outcome["reused"]),
        len(outcome["busy"]),
    )
    return outcome


def run_ingest(cfg: IngestConfig, data: DataConfig, work_dir: Path | None = None, verify: bool = False) -> dict:
    """Ingest every archive of ``data.speakingfaces_dir`` into ``cfg.out_dir``; return the report.

    ``verify`` checks every archive's SHA-256 against the folder's manifest first (sizes always).
    One ingest at a time per scratch folder: a second one fails at once naming the first (pid,
    host); shards that array tasks are still building are waited for. Raises IngestError (no
    output written) when a speaker yields no utterance, a split ends empty or the skip ratio
    passes ``ingest.max_skip_ratio``.
    """
    t0 = time.perf_counter()
    plan = plan_ingest(cfg, data, work_dir, verify)
    lock = FileLock(plan.work / ".locks" / "ingest.lock")
    if not lock.acquire(wait=False):
        holder = lock.holder()
        lock.close()
        raise IngestError(
            f"another ingest is running on the scratch folder {plan.work} ({holder}): wait for it to "
            "end, or give this one its own scratch folder (TAVSE_SCRATCH_DIR)"
        )
    try:
        return _merge(plan, cfg, data, t0)
    finally:
        lock.close()


def _merge(plan: IngestPlan, cfg: IngestConfig, data: DataConfig, t0: float) -> dict:
    shards = plan.shards
    todo = [a for a in shards if not plan.done(a)]
    reused = len(shards) - len(todo)
    log.info("%d archives: %d shards to build, %d reused from %s", len(plan.archives), len(todo), reused, plan.work)
    _build([plan.job(a, cfg) for a in todo], cfg.workers, wait=True)
    results = {a: _load_result(shards[a][1]) for a in shards}
    check_speakers(results)
    check_outputs(results, cfg)

    out = Path(cfg.out_dir)
    with atomic_path(out) as tmp:
        (tmp / "manifests").mkdir(parents=True)
        for split in SPLITS:
            in_split = [a for a in shards if shards[a][0] == split]
            store.write_store(tmp / "lmdb" / split, _shard_batches([shards[a][1] / "lmdb" for a in in_split]))
            _write_manifest(tmp / "manifests" / f"{split}.csv", [r for a in in_split for r in results[a].rows])
        skipped = [s for r in results.values() for s in r.skipped]
        with open(tmp / "skipped.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=("path", "reason", "message"), lineterminator="\n")
            w.writeheader()
            w.writerows(skipped)

    report = build_report(results.values(), skipped, plan.unsplit, data)
    write_json(cfg.report, report)
    for _, shard in shards.values():
        # Under the shard's lock: a builder (a late array task) waiting for it then sees it gone and
        # rebuilds it into a shard of its own; it never reads a half-deleted one.
        shard_lock = FileLock(_shard_lock_path(shard))
        if shard_lock.acquire(wait=False):
            shutil.rmtree(shard, ignore_errors=True)
            shard_lock.close(unlink=True)
        else:
            shard_lock.close()
    log.info(
        "ingest done in %.1f s (%d shards reused): %s (%s), %d skipped, face detection rate %s; report %s",
        time.perf_counter() - t0,
        reused,
        out,
        ", ".join(f"{split} {s['utterances']} utt. of {s['speakers']} spk." for split, s in report["splits"].items()),
        report["skipped_total"],
        "n/a" if report["detection_rate"] is None else f"{report['detection_rate']:.1%}",
        cfg.report,
    )
    return report


def build_report(results, skipped: list[dict], unsplit: list[str], data: DataConfig) -> dict:
    """The ingest report (a DVC metrics file): counts per split, detection rate, skips by reason."""
    results = list(results)
    per_split = {}
    for split in SPLITS:
        rs = [r for r in results if r.split == split]
        rows = [row for r in rs for row in r.rows]
        sync = [row["av_sync_r"] for row in rows if row["av_sync_r"] is not None]
        per_split[split] = {
            "speakers": len({row["speaker"] for row in rows}),
            "utterances": len(rows),
            "frames": sum(row["n_frames"] for row in rows),
            "hours": round(sum(row["duration_s"] for row in rows) / 3600, 4),
            "av_sync_r_mean": round(float(np.mean(sync)), 4) if sync else None,
        }
    run = sum(r.frames_run for r in results)
    ignored: Counter = Counter()
    for r in results:
        ignored.update(r.ignored)
    residuals = [row["palette_residual"] for r in results for row in r.rows]
    n_rows = sum(s["utterances"] for s in per_split.values())
    return {
        "speaker_split": data.speaker_split,
        "archives": len(results) + len(unsplit),
        "archives_outside_splits": len(unsplit),
        "speakers": sum(s["speakers"] for s in per_split.values()),
        "utterances": n_rows,
        "frames": sum(s["frames"] for s in per_split.values()),
        "detection_rate": round(sum(r.frames_detected for r in results) / run, 4) if run else None,
        "palette_residual_max": max(residuals) if residuals else None,
        "splits": per_split,
        "skipped": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "skipped_total": len(skipped),
        "skip_ratio": round(len(skipped) / (len(skipped) + n_rows), 4) if skipped or n_rows else 0.0,
        "ignored_members": dict(sorted(ignored.items())),
    }
