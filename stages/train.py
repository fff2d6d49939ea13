"""Stage ``train@<variant>``: train one variant of params.yaml ``variants``.

Exit code 75 (EX_TEMPFAIL) after SIGUSR1/SIGTERM: the state was saved; run again to resume.
"""

import argparse

from tavse.config import load_config
from tavse.logs import setup_logging
from tavse.training.loop import train_variant

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant")
    setup_logging()
    train_variant(load_config(), ap.parse_args().variant)
