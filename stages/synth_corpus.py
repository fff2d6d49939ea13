"""Stage ``synth_corpus``: the embedded synthetic SpeakingFaces-format corpus."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.corpus.manifest import write_synthetic_manifest
from tavse.synth.corpus import write_corpus

if __name__ == "__main__":
    setup_logging()
    cfg = load_config(stage="synth_corpus")
    write_corpus(cfg.synth, cfg.data, cfg.seed)
    write_synthetic_manifest(
        cfg.synth.out_dir, "speakingfaces", "synth_corpus", {"seed": cfg.seed, "preset": cfg.synth.preset}
    )
