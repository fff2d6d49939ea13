"""Stage ``evaluate@<variant>``: per-item metrics, summaries with CIs, samples, missing-modality rows."""

import argparse

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import evaluate

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant")
    setup_logging()
    variant = ap.parse_args().variant
    evaluate.run(load_config(stage=f"evaluate@{variant}"), variant)
