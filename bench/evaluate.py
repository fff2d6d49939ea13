"""Metric throughput: items/s with 1 and with 2 worker processes on the same items.

    python -m bench.evaluate [--items 48]

Items are real frozen test mixtures (``evaluation.test_mixtures``; run ``dvc repro
test_mixtures`` first) with the oracle-IRM output as the "enhanced" signal, scored with every
metric (PESQ wb/nb, STOI, ESTOI, SI-SNR, SI-SNRi, SDR). Worker start-up is timed separately
(the pool is reused across chunks in the pipeline), then the items are scored.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import config, save
from tavse.data.dataset import MixtureSet
from tavse.data.mixtures import read_mixture_list
from tavse.evaluation.metrics import _spawn_pool, evaluate_items, metrics_row
from tavse.evaluation.results import rounded
from tavse.evaluation.scoring import oracle_irm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    args = ap.parse_args()
    cfg = config()
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    ds = MixtureSet(Path(cfg.ingest.out_dir) / "lmdb" / "test", cfg.noise.out_dir, mixtures, ())
    m = cfg.model
    items = []
    for i in range(args.items):
        b = ds[i % len(ds)]
        clean, noisy = b["clean"].numpy(), b["noisy"].numpy()
        items.append((clean, noisy, oracle_irm(clean, noisy, m.n_fft, m.win_length, m.hop_length)))
    seconds = sum(len(c) for c, _, _ in items) / 16000
    result = {"items": len(items), "audio_s": round(seconds, 1)}
    reference = None
    for workers in (1, 2):
        # Worker processes in both cases (single-threaded, as in the pipeline); started and
        # warmed up (imports) outside the timing.
        t0 = time.perf_counter()
        pool = _spawn_pool(workers)
        try:
            evaluate_items(items[:workers], metrics_row, workers, "warm-up", pool=pool)
            t1 = time.perf_counter()
            rows = evaluate_items(items, metrics_row, workers, f"{workers} worker(s)", pool=pool)
            t2 = time.perf_counter()
        finally:
            pool.shutdown()
        reference = reference or rows
        assert rounded(rows) == rounded(reference), "results differ between worker counts"
        result[f"workers_{workers}"] = {"items_per_s": round(len(items) / (t2 - t1), 2), "startup_s": round(t1 - t0, 2)}
    result["speedup"] = round(result["workers_2"]["items_per_s"] / result["workers_1"]["items_per_s"], 2)
    print(f"evaluation metrics on {len(items)} test items ({seconds:.0f} s of audio):")
    for w in (1, 2):
        r = result[f"workers_{w}"]
        print(f"  {w} worker(s): {r['items_per_s']:6.2f} items/s (pool start-up {r['startup_s']} s)")
    print(f"  speed-up {result['speedup']}x; saved {save('evaluate', result)}")


if __name__ == "__main__":
    main()
