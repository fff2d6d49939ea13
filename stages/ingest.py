"""Stage ``ingest``: SpeakingFaces archives → mouth-ROI LMDBs, 16 kHz audio, manifests, report."""

from tavse.config import load_config
from tavse.ingest import run_ingest
from tavse.logs import setup_logging

if __name__ == "__main__":
    setup_logging()
    cfg = load_config()
    run_ingest(cfg.ingest, cfg.data)
