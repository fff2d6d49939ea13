"""Stage ``noise``: DEMAND archives → 16 kHz noise split by environment, manifest, report."""

import argparse

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import noise

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify", action="store_true", help="check each file's SHA-256 against manifest.json first")
    args = ap.parse_args()
    setup_logging()
    noise.run(load_config(stage="noise"), verify=args.verify)
