"""Stage ``synth_corpus``: the embedded synthetic SpeakingFaces-format corpus."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import synth_corpus

if __name__ == "__main__":
    setup_logging()
    synth_corpus.run(load_config(stage="synth_corpus"))
