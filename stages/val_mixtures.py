"""Stage ``val_mixtures``: the frozen, ID-keyed validation mixture list shared by every variant."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.data.mixtures import build_validation_list

if __name__ == "__main__":
    setup_logging()
    build_validation_list(load_config(stage="val_mixtures"))
