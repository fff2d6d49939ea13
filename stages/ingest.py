"""Stage ``ingest``: SpeakingFaces archives → mouth-ROI LMDBs, 16 kHz audio, manifests, report.

DVC runs it without arguments. ``--shard I/K`` (for the SLURM array of ``slurm/ingest.sbatch
--shards K``, outside DVC) only builds the speaker shards of task I of K in the scratch folder;
the stage run by ``dvc repro ingest`` afterwards finds them built and merges them.
A SIGTERM stops it cleanly (worker processes too); finished shards are kept for the next run.
"""

import argparse
import logging
import signal
import sys

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.corpus.errors import BadInput
from tavse.corpus.manifest import ManifestError
from tavse.ingest_shards import IngestError, exit_on_signal
from tavse.pipeline import ingest

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", metavar="I/K", help="build only the shards of task I of K (0 <= I < K), no outputs")
    ap.add_argument("--verify", action="store_true", help="check each archive's SHA-256 against manifest.json first")
    args = ap.parse_args()
    try:
        shard = None if args.shard is None else ingest.parse_shard(args.shard)
    except ValueError as exc:
        ap.error(f"--shard: {exc}")
    setup_logging()
    signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        ingest.run(load_config(stage="ingest"), verify=args.verify, shard=shard)
    except (IngestError, BadInput, ManifestError, FileNotFoundError) as exc:
        # Bad input or an unusable corpus: the reason, without a traceback (exit 1).
        logging.getLogger("tavse.ingest").error("ingest failed: %s", exc)
        sys.exit(1)
