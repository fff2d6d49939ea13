"""Stage ``val_mixtures``: the frozen, ID-keyed validation mixture list shared by every variant."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import val_mixtures

if __name__ == "__main__":
    setup_logging()
    val_mixtures.run(load_config(stage="val_mixtures"))
