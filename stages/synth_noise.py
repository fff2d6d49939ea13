"""Stage ``synth_noise``: the embedded synthetic DEMAND-format noise corpus."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.corpus.manifest import write_synthetic_manifest
from tavse.synth.noise import write_demand_corpus

if __name__ == "__main__":
    setup_logging()
    cfg = load_config(stage="synth_noise")
    sn = cfg.synth_noise
    write_demand_corpus(sn.out_dir, sn.environments, sn.duration_s, sn.channels, cfg.seed)
    write_synthetic_manifest(
        sn.out_dir,
        "demand",
        "synth_noise",
        {"seed": cfg.seed, "environments": list(sn.environments), "duration_s": sn.duration_s, "channels": sn.channels},
    )
