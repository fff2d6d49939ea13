"""Stage ``synth_noise``: the embedded synthetic DEMAND-format noise corpus."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import synth_noise

if __name__ == "__main__":
    setup_logging()
    synth_noise.run(load_config(stage="synth_noise"))
