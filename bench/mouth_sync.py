"""Does the ingested video carry the speech? Mouth opening measured on the stored crops vs loudness.

    python -m bench.mouth_sync [--split val]

For every utterance of the split, two per-frame mouth-opening measures from what ingest stored:
- ``lip_gap``: inner-lip gap / mouth width from the FaceMesh landmarks (stored per frame with
  the crops, frames FaceMesh ran on);
- ``dark_area``: share of dark pixels (mouth cavity) in the centre of the RGB crop — a
  measure on the crop's pixels alone;
each correlated (Pearson r) with the per-frame RMS level (dB) of the stored clean 16 kHz audio.
Reports r pooled over the split's frames (each utterance z-scored) and per speaker.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import config, save
from tavse.common.audio import frame_loudness_db
from tavse.corpus.store import UtteranceStore


def dark_area(rgb: np.ndarray) -> np.ndarray:
    """Per-frame share of pixels in the crop's central region darker than 40% of its median luma."""
    s = rgb.shape[1]
    c = rgb[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].astype(np.float32)
    luma = c @ np.array([0.299, 0.587, 0.114], np.float32)
    med = np.median(luma.reshape(len(luma), -1), axis=1)
    return (luma < 0.4 * med[:, None, None]).mean(axis=(1, 2))


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    cfg = config()
    root = Path(cfg.ingest.out_dir)
    store = UtteranceStore(root / "lmdb" / args.split)
    with open(root / "manifests" / f"{args.split}.csv") as fh:
        rows = list(csv.DictReader(fh))
    pooled = defaultdict(lambda: ([], []))
    per_speaker: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for r in rows:
        u = r["utt_id"]
        meta = store.meta(u)
        loud = frame_loudness_db(store.audio(u), meta["sample_rate"], meta["fps"], meta["n_frames"])
        gap = np.array([np.nan if g is None else g for g in meta["lip_gap"]])
        measures = {"lip_gap": gap, "dark_area": dark_area(store.frames(u, "rgb"))}
        for name, m in measures.items():
            ok = np.isfinite(m)
            if ok.sum() < 3 or m[ok].std() == 0:
                continue
            a, b = _z(m[ok]), _z(loud[ok])
            pooled[name][0].append(a), pooled[name][1].append(b)
            per_speaker[r["speaker"]][name][0].append(a), per_speaker[r["speaker"]][name][1].append(b)

    def r_of(pair) -> float:
        return round(float(np.corrcoef(np.concatenate(pair[0]), np.concatenate(pair[1]))[0, 1]), 4)

    result = {
        "split": args.split,
        "utterances": len(rows),
        "r_pooled": {k: r_of(v) for k, v in pooled.items()},
        "r_per_speaker": {
            s: {k: r_of(v) for k, v in d.items()} for s, d in sorted(per_speaker.items(), key=lambda x: int(x[0]))
        },
    }
    print(f"mouth opening on the ingested crops vs clean speech loudness, {args.split} split ({len(rows)} utterances):")
    for k, v in result["r_pooled"].items():
        print(
            f"  {k:10s} r = {v:.3f} (pooled)   per speaker: "
            + ", ".join(f"{s}: {d[k]:.3f}" for s, d in result["r_per_speaker"].items())
        )
    print(f"  saved {save('mouth_sync', result)}")


if __name__ == "__main__":
    main()
