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

import csv
import dataclasses
import io
import json
import logging
import multiprocessing as mp
import re
import shutil
import signal
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tavse.common.audio import frame_loudness_db, resample
from tavse.common.dvc_stage import code_fingerprint
from tavse.common.config import DataConfig, IngestConfig, params_hash
from tavse.corpus import manifest as corpus_manifest
from tavse.corpus import speakingfaces as sfc
from tavse.corpus import store
from tavse.corpus.errors import BadInput
from tavse.common.io import atomic_path, write_json
from tavse.common.paths import scratch_dir
from tavse.vision import mouth_roi
from tavse.vision.thermal_palette import iron_to_temperature

log = logging.getLogger("tavse.ingest")

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "utt_id", "speaker", "split", "trial", "position", "command", "n_frames", "n_samples", "duration_s",
    "detection_ratio", "box_side_mean", "box_side_std", "box_centre_std", "av_sync_r",
    "age", "gender", "ethnicity", "archive",
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
            int(r["Sub_ID"]): {"age": r.get("Age", ""), "gender": r.get("Gender", ""), "ethnicity": r.get("Ethnicity", "")}
            for r in csv.DictReader(fh)
        }


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def mouth_crops(rgb_frames: list[np.ndarray], thermal_frames: list[np.ndarray], cfg: IngestConfig,
                where: str) -> tuple[np.ndarray, np.ndarray, mouth_roi.MouthTrack]:
    """RGB crops (F, S, S, 3) and temperature-ordered thermal crops (F, S, S) around the tracked mouth.

    Raises BadInput("no_face") naming ``where`` if FaceMesh finds too few faces.
    """
    lips, ran = mouth_roi.detect_lips(rgb_frames, stride=cfg.landmark_stride)
    try:
        track = mouth_roi.track_from_lips(lips, ran, cfg.box_scale, cfg.smooth_frames)
    except ValueError:
        raise BadInput("no_face", where, "FaceMesh found no face in any frame") from None
    if track.detection_ratio < cfg.min_detection_ratio:
        raise BadInput("no_face", where, f"face found in {track.detection_ratio:.0%} of frames "
                                         f"(< min_detection_ratio {cfg.min_detection_ratio:.0%})")
    s = cfg.roi_size
    rgb = np.stack([mouth_roi.crop(f, b, s) for f, b in zip(rgb_frames, track.boxes)])
    thr = np.stack([mouth_roi.crop(iron_to_temperature(f), b, s) for f, b in zip(thermal_frames, track.boxes)])
    return rgb, thr, track


def process_utterance(utt: sfc.Utterance, cfg: IngestConfig, where: str) -> tuple[list[tuple[bytes, bytes]], dict, mouth_roi.MouthTrack]:
    """Crops, 16 kHz audio and metadata of one decoded utterance."""
    rgb, thr, track = mouth_crops(utt.rgb, utt.thermal, cfg, where)
    wav = resample(utt.audio, utt.sample_rate, cfg.sample_rate)
    n_frames = len(rgb)
    n_samples = round(n_frames * cfg.sample_rate / cfg.fps)
    wav = np.pad(wav, (0, max(0, n_samples - len(wav))))[:n_samples].astype(np.float32)
    loud = frame_loudness_db(wav, cfg.sample_rate, cfg.fps, n_frames)
    meta = {
        "fps": cfg.fps, "sample_rate": cfg.sample_rate,
        "boxes": np.round(track.boxes, 2).tolist(),
        "lip_gap": [None if not np.isfinite(g) else round(float(g), 5) for g in track.lip_gap],
    }
    return store.utterance_items(utt.key.utt_id, meta, rgb, thr, wav), {"av_sync_r": _pearson(track.lip_gap, loud)}, track


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
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            skip(BadInput("corrupt_archive", str(archive), f"not a readable zip archive: {exc}"))
            return
        with zf:
            utts, res.ignored = sfc.index_archive(zf, str(archive), speaker)
            for reason, n in res.ignored.items():
                log.warning("%s: ignored %d member(s): %s", archive, n, reason)
            if not utts:
                skip(BadInput("empty_archive", str(archive), "no utterances in the SpeakingFaces layout"))
            meta = subjects.get(speaker, {})
            for u in utts:
                try:
                    utt = sfc.load_utterance(zf, str(archive), u, cfg.frame_tolerance)
                    items, extra, track = process_utterance(utt, cfg, f"{archive}:{u.key.utt_id}")
                except BadInput as exc:
                    skip(exc)
                    continue
                b = track.boxes
                n = len(b)
                res.frames += n
                res.frames_run += int(track.ran.sum())
                res.frames_detected += int(track.detected.sum())
                res.rows.append({
                    "utt_id": u.key.utt_id, "speaker": speaker, "split": split, "trial": u.key.trial,
                    "position": u.key.position, "command": u.key.command, "n_frames": n,
                    "n_samples": round(n * cfg.sample_rate / cfg.fps), "duration_s": round(n / cfg.fps, 4),
                    "detection_ratio": round(track.detection_ratio, 4),
                    "box_side_mean": round(float(b[:, 2].mean()), 2), "box_side_std": round(float(b[:, 2].std()), 2),
                    "box_centre_std": round(float(np.hypot(b[:, 0].std(), b[:, 1].std())), 2),
                    "av_sync_r": None if extra["av_sync_r"] is None else round(extra["av_sync_r"], 4),
                    "age": meta.get("age", ""), "gender": meta.get("gender", ""),
                    "ethnicity": meta.get("ethnicity", ""), "archive": archive.name,
                })
                yield items

    with atomic_path(shard) as tmp:
        tmp.mkdir(parents=True)
        store.write_store(tmp / "lmdb", batches())
        res.seconds = time.perf_counter() - t0
        (tmp / "result.json").write_text(json.dumps(dataclasses.asdict(res), sort_keys=True))
    return res


def _shard_key(archive: Path, split: str, cfg: IngestConfig) -> str:
    with zipfile.ZipFile(archive) as zf:
        fp = sfc.archive_fingerprint(zf)
    relevant = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("workers", "out_dir", "report")}
    return params_hash({"cfg": relevant, "split": split, "archive": fp, "code": code_fingerprint("ingest")})


def _archive_key(archive: Path, split: str, cfg: IngestConfig) -> str:
    try:
        return _shard_key(archive, split, cfg)
    except (zipfile.BadZipFile, OSError, EOFError):
        # Unreadable archives are keyed by name and size; the worker reports them.
        st = archive.stat()
        return params_hash({"name": archive.name, "size": st.st_size, "code": code_fingerprint("ingest"), "split": split})


def exit_on_signal(signum: int, frame=None) -> None:
    """A SIGTERM handler: unwind (temporary shard folders removed, pool workers terminated), exit 128+signum.

    Further signals are ignored while unwinding, so that a repeated SIGTERM cannot cut the cleanup short.
    """
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _run_job(job: tuple[Path, str, IngestConfig, dict, Path]) -> SpeakerResult:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # A pool worker stopped (Pool.terminate) while it writes a shard removes the half-written
    # folder. Only then: an idle worker waits for its next task in a blocking C call that a Python
    # handler may never return from, so between tasks SIGTERM must kill it outright.
    signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        return ingest_speaker(*job)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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

    work: Path                      # the scratch folder of the shards
    archives: list[Path]            # every sub_{id}_ia.zip, in speaker order
    shards: dict[Path, tuple[str, Path]]  # archive → (split, shard folder), speaker order
    unsplit: list[str]              # archive names outside every split (not ingested)
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
    disagrees with the manifest or the manifest lists none.
    """
    folder = Path(data.speakingfaces_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: SpeakingFaces archive folder not found (params.yaml data.speakingfaces_dir). "
            "It is the input of the ingest stage: for the embedded synthetic default the stage "
            "synth_corpus writes it (`dvc repro synth_corpus`); for the real corpus download it "
            "(`python -m tavse.download speakingfaces --out DIR`) and point data.speakingfaces_dir at DIR, "
            "the folder that holds sub_{id}_ia.zip and manifest.json")
    listed = corpus_manifest.checked_files(folder, "speakingfaces", verify=verify)
    archives = sorted((p for p in listed if corpus_manifest.is_recording("speakingfaces", p.relative_to(folder).as_posix())),
                      key=sfc.speaker_id_of)
    if not archives:
        raise corpus_manifest.ManifestError(
            f"{corpus_manifest.manifest_path(folder)}: lists no sub_{{id}}_ia.zip archives (params.yaml data.speakingfaces_dir)")
    work = (work_dir or scratch_dir() / "ingest").resolve()
    shards, unsplit = {}, []
    for a in archives:
        split = data.split_of(sfc.speaker_id_of(a))
        if split is None:
            unsplit.append(a.name)
            log.warning("%s: speaker outside every split of %r, not ingested", a, data.speaker_split)
            continue
        shards[a] = (split, work / f"sub_{sfc.speaker_id_of(a)}-{_archive_key(a, split, cfg)}")
    return IngestPlan(work, archives, shards, unsplit, read_subjects(data.subjects_csv))


def _build(jobs: list, workers: int) -> None:
    """Run ``ingest_speaker`` over ``jobs``, in a pool of ``workers`` processes when that helps."""
    if not jobs:
        return
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for _ in tqdm(pool.imap_unordered(_run_job, jobs), total=len(jobs), desc="ingest speakers", unit="spk"):
                pass
    else:
        for job in tqdm(jobs, desc="ingest speakers", unit="spk"):
            ingest_speaker(*job)


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


def build_shards(cfg: IngestConfig, data: DataConfig, index: int, count: int,
                 work_dir: Path | None = None, verify: bool = False) -> dict[str, list[str]]:
    """Build the shards of task ``index`` of ``count`` (no merge, no DVC output).

    The archives that are in a split, in speaker order, are dealt round-robin: task ``index``
    gets archives ``index``, ``index + count``, ... The shard folders are those of
    :func:`run_ingest`, which afterwards finds them built and only merges. Returns the archive
    names by outcome: ``built``, ``reused`` (already built), ``unsplit`` (outside every split;
    listed by task 0 only).
    """
    for name, v in (("index", index), ("count", count)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"shard {index!r}/{count!r}: {name} must be a whole number")
    _check_shard(index, count)
    plan = plan_ingest(cfg, data, work_dir, verify)
    mine = list(plan.shards)[index::count]
    todo = [a for a in mine if not plan.done(a)]
    log.info("shard %d/%d: %d of %d archives (%s): %d to build, %d reused from %s", index, count, len(mine),
             len(plan.shards), ", ".join(a.name for a in mine) or "none", len(todo), len(mine) - len(todo), plan.work)
    _build([plan.job(a, cfg) for a in todo], cfg.workers)
    outcome = {"built": [a.name for a in todo], "reused": [a.name for a in mine if a not in todo],
               "unsplit": plan.unsplit if index == 0 else []}
    log.info("shard %d/%d done: built %d, reused %d", index, count, len(outcome["built"]), len(outcome["reused"]))
    return outcome


def run_ingest(cfg: IngestConfig, data: DataConfig, work_dir: Path | None = None, verify: bool = False) -> dict:
    """Ingest every archive of ``data.speakingfaces_dir`` into ``cfg.out_dir``; return the report.

    ``verify`` checks every archive's SHA-256 against the folder's manifest first (sizes always).
    """
    t0 = time.perf_counter()
    plan = plan_ingest(cfg, data, work_dir, verify)
    shards = plan.shards
    todo = [a for a in shards if not plan.done(a)]
    reused = len(shards) - len(todo)
    log.info("%d archives: %d shards to build, %d reused from %s", len(plan.archives), len(todo), reused, plan.work)
    _build([plan.job(a, cfg) for a in todo], cfg.workers)
    results = {a: _load_result(shards[a][1]) for a in shards}

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
        shutil.rmtree(shard, ignore_errors=True)
    log.info("ingest done in %.1f s (%d shards reused)", time.perf_counter() - t0, reused)
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
    return {
        "speaker_split": data.speaker_split,
        "archives": len(results) + len(unsplit),
        "archives_outside_splits": len(unsplit),
        "speakers": sum(s["speakers"] for s in per_split.values()),
        "utterances": sum(s["utterances"] for s in per_split.values()),
        "frames": sum(s["frames"] for s in per_split.values()),
        "detection_rate": round(sum(r.frames_detected for r in results) / run, 4) if run else None,
        "splits": per_split,
        "skipped": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "skipped_total": len(skipped),
        "ignored_members": dict(sorted(ignored.items())),
    }
