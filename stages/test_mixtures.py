"""Stage ``test_mixtures``: the frozen whole-utterance test mixture list shared by every variant."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.data.mixtures import build_test_list

if __name__ == "__main__":
    setup_logging()
    build_test_list(load_config(stage="test_mixtures"))
