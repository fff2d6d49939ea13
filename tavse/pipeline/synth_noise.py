"""Stage ``synth_noise``: the embedded synthetic DEMAND-format noise corpus (:mod:`tavse.synth.noise`)."""

from __future__ import annotations

from tavse.common.config import Config
from tavse.corpus.manifest import write_synthetic_manifest
from tavse.synth.noise import write_demand_corpus


def run(cfg: Config) -> None:
    """The environment archives under ``synth_noise.out_dir``, then their ``manifest.json`` (source ``synthetic``)."""
    sn = cfg.synth_noise
    write_demand_corpus(sn.out_dir, sn.environments, sn.duration_s, sn.channels, cfg.seed)
    write_synthetic_manifest(
        sn.out_dir,
        "demand",
        "synth_noise",
        {"seed": cfg.seed, "environments": list(sn.environments), "duration_s": sn.duration_s, "channels": sn.channels},
    )
