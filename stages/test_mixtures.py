"""Stage ``test_mixtures``: the frozen whole-utterance test mixture list shared by every variant."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import test_mixtures

if __name__ == "__main__":
    setup_logging()
    test_mixtures.run(load_config(stage="test_mixtures"))
