"""Stage ``test_mixtures``: the frozen test mixture list shared by every variant.

Whole test utterances x test noise x SNRs, drawn once from ``seed``.
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
    """Write ``evaluation.test_mixtures``; return its path."""
    ev = cfg.evaluation
    utts = read_utterance_manifest(Path(cfg.ingest.out_dir) / "manifests" / "test.csv")
    manifest = Path(cfg.noise.out_dir) / "manifest.csv"
    noise = read_noise_manifest(manifest, "test")
    mixtures = make_mixture_list(
        utts,
        noise,
        ev.snrs_db,
        cfg.seed,
        ev.mixtures_per_utterance,
        None,
        noise_kinds=read_noise_kinds(manifest, "test"),
    )
    write_mixture_list(ev.test_mixtures, mixtures)
    log.info(
        "%d test mixtures of %d utterances; per noise kind: %s -> %s",
        len(mixtures),
        len(utts),
        dict(sorted(Counter(m.noise_kind for m in mixtures).items())),
        ev.test_mixtures,
    )
    return Path(ev.test_mixtures)
