"""Stage ``val_mixtures``: the frozen, ID-keyed validation mixture list shared by every variant.

Segments of the val speakers' utterances, each with a noise slice of the val split and an SNR,
drawn once from ``seed``: every variant and every checkpoint is validated on the same mixtures.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tavse.common.config import Config
from tavse.data.mixtures import (
    make_mixture_list,
    read_noise_kinds,
    read_noise_manifest,
    read_utterance_manifest,
    write_mixture_list,
)

log = logging.getLogger("tavse.data.mixtures")


def run(cfg: Config) -> Path:
    """Write ``validation.out`` from the val manifests; return its path."""
    utts = sorted(read_utterance_manifest(Path(cfg.ingest.out_dir) / "manifests" / "val.csv"))
    manifest = Path(cfg.noise.out_dir) / "manifest.csv"
    noise = read_noise_manifest(manifest, "val")
    mixtures = make_mixture_list(
        utts,
        noise,
        cfg.validation.snrs_db,
        cfg.seed,
        per_utterance=cfg.validation.segments_per_utterance,
        segment_frames=cfg.train.segment_frames,
        noise_kinds=read_noise_kinds(manifest, "val"),
    )
    if not mixtures:
        raise ValueError(
            f"no validation mixtures: none of the {len(utts)} val utterances is "
            f"{cfg.train.segment_frames} frames or longer"
        )
    out = Path(cfg.validation.out)
    write_mixture_list(out, mixtures)
    snrs = Counter(m.snr_db for m in mixtures)
    kinds = Counter(m.noise_kind for m in mixtures)
    log.info(
        "%d validation mixtures of %d utterances, %d noise files; per SNR: %s; per noise kind: %s -> %s",
        len(mixtures),
        len({m.utt_id for m in mixtures}),
        len(noise),
        dict(sorted(snrs.items())),
        dict(sorted(kinds.items())),
        out,
    )
    return out
