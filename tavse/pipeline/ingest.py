"""Stage ``ingest``: SpeakingFaces archives → mouth-ROI LMDBs per split, manifests, a report.

Work is parallel over speakers. Each speaker becomes a *shard* (:mod:`tavse.ingest_shards`: its
own small LMDB plus its manifest rows) in a scratch folder keyed by the params, the code and the
archive's content, so a killed ingest resumes where it stopped. The shards are then merged in
speaker order into one LMDB per split, so the output bytes do not depend on the number of
workers or on how often the run was interrupted.

Across machines (a SLURM job array, ``slurm/ingest.sbatch --shards K``), :func:`build_shards`
builds the shards of one task of K outside DVC; ``dvc repro ingest`` (:func:`run_ingest`) then
finds them built and only merges.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tavse.common.config import Config, DataConfig, IngestConfig
from tavse.common.io import atomic_path, write_json
from tavse.common.locks import FileLock
from tavse.common.paths import scratch_dir
from tavse.corpus import manifest as corpus_manifest
from tavse.corpus import speakingfaces as sfc
from tavse.corpus import store
from tavse.corpus.speakingfaces import read_subjects
from tavse.ingest_shards import IngestError, SpeakerResult, archive_key, build_in_workers, shard_lock_path

log = logging.getLogger("tavse.ingest")


def run(cfg: Config, verify: bool = False, shard: tuple[int, int] | None = None) -> dict | None:
    """The stage (:func:`run_ingest`, returning its report), or with ``shard`` = (I, K) only the
    shards of task I of K (:func:`build_shards`, no outputs)."""
    if shard is None:
        return run_ingest(cfg.ingest, cfg.data, verify=verify)
    build_shards(cfg.ingest, cfg.data, *shard, verify=verify)
    return None


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
        shards[a] = (split, work / f"sub_{sfc.speaker_id_of(a)}-{archive_key(a, split, cfg)}")
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
    statuses = build_in_workers([plan.job(a, cfg) for a in todo], cfg.workers, wait=False)
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
    build_in_workers([plan.job(a, cfg) for a in todo], cfg.workers, wait=True)
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
        shard_lock = FileLock(shard_lock_path(shard))
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
    frames_run = sum(r.frames_run for r in results)
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
        "detection_rate": round(sum(r.frames_detected for r in results) / frames_run, 4) if frames_run else None,
        "palette_residual_max": max(residuals) if residuals else None,
        "splits": per_split,
        "skipped": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "skipped_total": len(skipped),
        "skip_ratio": round(len(skipped) / (len(skipped) + n_rows), 4) if skipped or n_rows else 0.0,
        "ignored_members": dict(sorted(ignored.items())),
    }
