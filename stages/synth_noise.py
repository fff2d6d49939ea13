"""Stage ``synth_noise``: the embedded synthetic DEMAND-format noise corpus."""

from tavse.config import load_config
from tavse.logs import setup_logging
from tavse.synth.noise import write_demand_corpus

if __name__ == "__main__":
    setup_logging()
    cfg = load_config().synth_noise
    write_demand_corpus(cfg.out_dir, cfg.environments, cfg.duration_s, cfg.channels, load_config().seed)
