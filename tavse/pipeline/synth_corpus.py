"""Stage ``synth_corpus``: the embedded synthetic SpeakingFaces-format corpus (:mod:`tavse.synth.corpus`)."""

from __future__ import annotations

from tavse.common.config import Config
from tavse.corpus.manifest import write_synthetic_manifest
from tavse.synth.corpus import write_corpus


def run(cfg: Config) -> None:
    """The speaker archives under ``synth.out_dir``, then their ``manifest.json`` (source ``synthetic``)."""
    write_corpus(cfg.synth, cfg.data, cfg.seed)
    write_synthetic_manifest(
        cfg.synth.out_dir, "speakingfaces", "synth_corpus", {"seed": cfg.seed, "preset": cfg.synth.preset}
    )
