"""Stage ``train@<variant>``: train one variant of params.yaml ``variants`` (:mod:`tavse.pipeline.train`).

Exit code 75 (EX_TEMPFAIL) after SIGUSR1/SIGTERM: the state was saved; run again to resume.
"""

import argparse
import logging
import sys

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import train
from tavse.training.loop import TrainingBusy

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant")
    variant = ap.parse_args().variant
    setup_logging()
    try:
        train.run(load_config(stage=f"train@{variant}"), variant)
    except TrainingBusy as exc:  # the reason, without a traceback (exit 1)
        logging.getLogger("tavse.train").error("train@%s failed: %s", variant, exc)
        sys.exit(1)
