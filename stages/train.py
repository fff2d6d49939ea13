"""Stage ``train@<variant>``: train one variant of params.yaml ``variants``.

With several GPUs visible (``--gres=gpu:N``) or ``$TAVSE_NPROC_PER_NODE`` > 1 the stage starts
one data-parallel rank per GPU (gloo ranks on CPU) with the same effective batch.
Exit code 75 (EX_TEMPFAIL) after SIGUSR1/SIGTERM: the state was saved; run again to resume.
"""

import argparse
import logging
import sys

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.training.distributed import main_or_launch
from tavse.training.loop import TrainingBusy, train_variant

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant")
    variant = ap.parse_args().variant
    setup_logging()
    try:
        main_or_launch(
            lambda: train_variant(load_config(stage=f"train@{variant}"), variant),
            [sys.executable, "-m", "stages.train", variant],
        )
    except TrainingBusy as exc:  # the reason, without a traceback (exit 1)
        logging.getLogger("tavse.train").error("train@%s failed: %s", variant, exc)
        sys.exit(1)
