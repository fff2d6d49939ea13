"""Stage ``noise``: DEMAND-layout recordings → 16 kHz noise, split by environment, with a manifest and a report.

The stage copies chosen channels of chosen environments into per-split folders at 16 kHz,
splitting BY ENVIRONMENT so no noise recording is shared between training and evaluation.

Output format is 16-bit PCM: DEMAND itself is 16-bit, so 16 kHz sources are copied
integer-for-integer (bit-exact, no re-quantisation), files are half the size of float, and
only resampled (48 kHz) audio is rounded once, with any overshoot clipped and counted.

Each environment's noise kind (stationary, transient or babble: :data:`NOISE_KINDS`, from
:mod:`tavse.corpus.noise_kinds`) goes into the manifest's ``kind`` column and, per split, into
the report; a split without some kind is logged as a warning, an environment of no known kind
is refused.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from pathlib import Path
from typing import TypedDict

import numpy as np
from scipy.signal import resample_poly

from tavse.common.config import Config
from tavse.common.io import atomic_path, wav_bytes, write_json
from tavse.common.rates import SAMPLE_RATE
from tavse.corpus import manifest as corpus_manifest
from tavse.corpus.demand import DemandSource, discover_demand, read_channel
from tavse.corpus.noise_kinds import KINDS, kind_of

log = logging.getLogger("tavse.noise")

MANIFEST_COLUMNS = ("split", "env", "kind", "channel", "path", "n_samples", "duration_s", "rms_dbfs", "source")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class _SplitReport(TypedDict):
    """One split's entry of the ``prepare_noise`` report (typed: its values are of mixed types)."""

    environments: list[str]
    files: int
    seconds: float
    kinds: dict[str, list[str]]
    missing_kinds: list[str]


def run(cfg: Config, verify: bool = False) -> dict:
    """The stage: :func:`prepare_noise` over ``data.demand_dir`` with the ``noise`` params, and its report."""
    report = prepare_noise(cfg.data.demand_dir, cfg.noise.out_dir, cfg.noise.splits, cfg.noise.channels, verify=verify)
    write_json(cfg.noise.report, report)
    return report


def _validate_splits(splits: dict[str, list[str]]) -> dict[str, str]:
    """env -> split, refusing an environment in two splits (channels of one env share a split)."""
    if not splits:
        raise ValueError("no splits given")
    owner: dict[str, str] = {}
    for split, envs in splits.items():
        if not _SPLIT_RE.match(split):
            raise ValueError(f"split name {split!r} must be letters, digits, '_' or '-' (it becomes a folder)")
        if isinstance(envs, str) or not envs:
            raise ValueError(f"split {split!r} must list at least one environment, got {envs!r}")
        for env in envs:
            if env in owner:
                where = "twice in split" if owner[env] == split else "in splits"
                other = f"{owner[env]!r}" if owner[env] == split else f"{owner[env]!r} and {split!r}"
                raise ValueError(
                    f"environment {env!r} listed {where} {other}; noise is split by environment, "
                    "each environment must belong to exactly one split"
                )
            owner[env] = split
    return owner


def _to_pcm16(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Round float samples (full scale 1.0 = 32768, soundfile's convention) to int16; count clips."""
    scaled = np.rint(x * 32768.0)
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    return np.clip(scaled, -32768, 32767).astype(np.int16), clipped


def prepare_noise(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: dict[str, list[str]],
    channels: list[int],
    sample_rate: int = SAMPLE_RATE,
    verify: bool = False,
) -> dict:
    """Write ``out_dir/{split}/{ENV}_chNN.wav`` (PCM_16 at ``sample_rate``) and ``out_dir/manifest.csv``.

    ``splits`` maps split name -> environment names. The recordings are those
    ``source_dir/manifest.json`` lists (each checked to exist with its listed size, hashes too
    with ``verify``; files it does not list are ignored). Returns a report: files/seconds and the
    environments of each noise kind per split (``kinds``, ``missing_kinds``), the source and kind
    of each environment, unused environments, totals. ``out_dir`` is
    replaced atomically, so a failure leaves the previous contents (or nothing).
    """
    owner = _validate_splits(splits)
    kinds = {env: kind_of(env) for env in sorted(owner)}  # ValueError naming an environment of no known kind
    _check_channels(channels, sample_rate)
    source_dir = Path(source_dir)
    listed, found, unused = _sources(source_dir, owner, verify)
    split_report = _split_report(splits, kinds)
    rows: list[dict[str, str]] = []
    env_report: dict[str, dict] = {}
    total_clipped = 0
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for split in sorted(splits):
            (tmp / split).mkdir()
            for env in sorted(splits[split]):
                src = found[env][0]
                if len(found[env]) > 1:
                    log.info(
                        "%s: using %s (also present: %s)", env, src.name, ", ".join(s.name for s in found[env][1:])
                    )
                source_rates = set()
                for ch in channels:
                    row, rate, clipped = _write_channel(tmp, split, env, kinds[env], src, ch, sample_rate, listed)
                    source_rates.add(rate)
                    total_clipped += clipped
                    rows.append(row)
                    split_report[split]["files"] += 1
                    split_report[split]["seconds"] += int(row["n_samples"]) / sample_rate
                env_report[env] = {
                    "split": split,
                    "kind": kinds[env],
                    "source": src.name,
                    "source_kind": src.kind,
                    "source_rate": sorted(source_rates),
                    "resampled": any(r != sample_rate for r in source_rates),
                }
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")

    for entry in split_report.values():
        entry["seconds"] = round(entry["seconds"], 6)
    log.info(
        "noise done: %s (%d Hz): %s",
        out_dir,
        sample_rate,
        ", ".join(f"{split} {e['files']} file(s), {e['seconds']:.0f} s" for split, e in split_report.items()),
    )
    return {
        "sample_rate": sample_rate,
        "channels": [int(c) for c in channels],
        "splits": split_report,
        "environments": env_report,
        "unused_environments": unused,
        "n_unused_environments": len(unused),
        "total_files": len(rows),
        "total_seconds": round(sum(e["seconds"] for e in split_report.values()), 6),
        "clipped_samples": total_clipped,
    }


def _check_channels(channels: list[int], sample_rate: int) -> None:
    if (
        not channels
        or len(set(channels)) != len(channels)
        or any(not isinstance(c, (int, np.integer)) or not 1 <= c <= 99 for c in channels)
    ):
        raise ValueError(f"channels must be distinct integers 1-99 (DEMAND ch01..ch16), got {channels!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")


def _sources(
    source_dir: Path, owner: dict[str, str], verify: bool
) -> tuple[set[str], dict[str, list[DemandSource]], list[str]]:
    """The files ``source_dir/manifest.json`` lists, the sources of each environment found among them,
    and the environments found in no split; FileNotFoundError naming what a split needs and is missing."""
    if not source_dir.is_dir():
        raise FileNotFoundError(
            f"DEMAND source folder {source_dir} does not exist or is not a folder (params.yaml data.demand_dir)"
        )
    listed = {
        p.relative_to(source_dir).as_posix() for p in corpus_manifest.checked_files(source_dir, "demand", verify=verify)
    }
    found = discover_demand(source_dir, listed)
    missing = sorted(set(owner) - set(found))
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise FileNotFoundError(
            f"environment(s) {', '.join(missing)} not found in {source_dir} "
            f"(expected {{ENV}}_16k.zip, {{ENV}}_48k.zip or {{ENV}}/chNN.wav listed in its {corpus_manifest.MANIFEST_NAME}; "
            f"found: {have})"
        )
    unused = sorted(set(found) - set(owner))
    if unused:
        log.info(
            "%d DEMAND environment(s) in %s not in any split, left out: %s", len(unused), source_dir, ", ".join(unused)
        )
    return listed, found, unused


def _split_report(splits: dict[str, list[str]], kinds: dict[str, str]) -> dict[str, _SplitReport]:
    """Each split's entry of the report (files and seconds still 0), warning of a split that misses a noise kind."""
    split_report: dict[str, _SplitReport] = {
        s: {
            "environments": sorted(envs),
            "files": 0,
            "seconds": 0.0,
            "kinds": {k: sorted(e for e in envs if kinds[e] == k) for k in KINDS},
            "missing_kinds": [k for k in KINDS if not any(kinds[e] == k for e in envs)],
        }
        for s, envs in sorted(splits.items())
    }
    for s, entry in split_report.items():
        if entry["missing_kinds"]:
            log.warning(
                "noise split %r has no %s noise (environments: %s); its mixtures will not cover that kind",
                s,
                " or ".join(entry["missing_kinds"]),
                ", ".join(entry["environments"]),
            )
    return split_report


def _write_channel(
    tmp: Path, split: str, env: str, kind: str, src: DemandSource, ch: int, sample_rate: int, listed: set[str]
) -> tuple[dict[str, str], int, int]:
    """Channel ``ch`` of ``env`` as ``tmp/{split}/{env}_chNN.wav`` (PCM_16 at ``sample_rate``);
    returns its manifest row, the source's rate and the samples clipped."""
    rel_src = f"{env}/ch{ch:02d}.wav"
    if src.kind == "folder" and (src.path / f"ch{ch:02d}.wav").is_file() and rel_src not in listed:
        source_dir = src.path.parent
        raise FileNotFoundError(
            f"{src.path / f'ch{ch:02d}.wav'}: channel {ch} of {env} is not listed in "
            f"{corpus_manifest.manifest_path(source_dir)}; rewrite the manifest "
            f"(`python -m tavse.download manifest {source_dir}`)"
        )
    x, rate, label = read_channel(src, ch)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g)
    pcm, clipped = _to_pcm16(x)
    if clipped:
        log.warning("%s: %d samples clipped after resampling to %d Hz", label, clipped, sample_rate)
    rel = f"{split}/{env}_ch{ch:02d}.wav"
    (tmp / rel).write_bytes(wav_bytes(pcm, sample_rate, "PCM_16"))
    rms = math.sqrt(float(np.mean(np.square(pcm / 32768.0))))
    row = {
        "split": split,
        "env": env,
        "kind": kind,
        "channel": str(ch),
        "path": rel,
        "n_samples": str(pcm.size),
        "duration_s": f"{pcm.size / sample_rate:.6f}",
        "rms_dbfs": f"{20 * math.log10(rms):.2f}" if rms > 0 else "-inf",
        "source": label,
    }
    return row, rate, clipped
