"""Stage ``reference``: the noisy input (floor) and the oracle ideal ratio mask (ceiling) on the test list."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import reference

if __name__ == "__main__":
    setup_logging()
    reference.run(load_config(stage="reference"))
