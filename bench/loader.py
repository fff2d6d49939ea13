"""Training-loader read speed: 2.5 s segments from the ingest LMDB vs a per-frame-key layout.

    python -m bench.loader [--split train] [--samples 300]

A sample is what training reads: ``segment`` frames (70 = 2.5 s) of RGB and thermal crops and
the matching 16 kHz audio, at a random 7-frame-aligned start. The comparison layout, built in
the same run from the same crops, stores one key per frame (RGB as JPEG via simplejpeg,
thermal as PNG) as image datasets commonly do, so a sample costs 2 x 70 + 1 reads and 140
decodes instead of 3 reads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import simplejpeg

from bench.common import config, save
from tavse.corpus import store


def per_frame_layout(src: store.UtteranceStore, utts: list[str], path: Path) -> None:
    env = lmdb.open(str(path), map_size=8 << 30)
    with env.begin(write=True) as txn:
        for u in utts:
            rgb, thr = src.frames(u, "rgb"), src.frames(u, "thr")
            for f in range(len(rgb)):
                txn.put(f"{u}/rgb/{f:05d}".encode(), simplejpeg.encode_jpeg(rgb[f], quality=90, colorspace="RGB"))
                txn.put(f"{u}/thr/{f:05d}".encode(), cv2.imencode(".png", thr[f])[1].tobytes())
            txn.put(f"{u}/wav".encode(), src.audio(u).tobytes())
    env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="train")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--segment", type=int, default=70)
    args = ap.parse_args()
    cfg = config()
    src = store.UtteranceStore(Path(cfg.ingest.out_dir) / "lmdb" / args.split)
    env = store.open_readonly(src.path)
    with env.begin() as txn:
        utts = sorted({k.decode().rsplit("/", 1)[0] for k in txn.cursor().iternext(values=False)})
    env.close()
    utts = [u for u in utts if src.meta(u)["n_frames"] >= args.segment]
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(args.samples):
        u = utts[int(rng.integers(len(utts)))]
        starts = np.arange(0, src.meta(u)["n_frames"] - args.segment + 1, 7)
        picks.append((u, int(rng.choice(starts))))
    n_audio = args.segment * cfg.ingest.sample_rate // cfg.ingest.fps

    def ours():
        for u, s in picks:
            src.frames(u, "rgb", s, s + args.segment)
            src.frames(u, "thr", s, s + args.segment)
            src.audio(
                u, s * cfg.ingest.sample_rate // cfg.ingest.fps, s * cfg.ingest.sample_rate // cfg.ingest.fps + n_audio
            )

    with tempfile.TemporaryDirectory() as tmp:
        per_frame_layout(src, sorted({u for u, _ in picks}), Path(tmp) / "pf")
        penv = lmdb.open(str(Path(tmp) / "pf"), readonly=True, lock=False)

        def per_frame():
            with penv.begin() as txn:
                for u, s in picks:
                    _rgb = np.stack(
                        [
                            simplejpeg.decode_jpeg(txn.get(f"{u}/rgb/{f:05d}".encode()), colorspace="RGB")
                            for f in range(s, s + args.segment)
                        ]
                    )
                    _thr = np.stack(
                        [
                            cv2.imdecode(
                                np.frombuffer(txn.get(f"{u}/thr/{f:05d}".encode()), np.uint8), cv2.IMREAD_GRAYSCALE
                            )
                            for f in range(s, s + args.segment)
                        ]
                    )
                    wav = np.frombuffer(txn.get(f"{u}/wav".encode()), np.float32)
                    a0 = s * cfg.ingest.sample_rate // cfg.ingest.fps
                    wav[a0 : a0 + n_audio].copy()

        timings = {}
        for name, fn in (("lmdb_per_utterance", ours), ("per_frame_keys", per_frame)):
            fn()  # warm the page cache: both layouts then read from memory
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
        penv.close()
    result = {
        "samples": args.samples,
        "segment_frames": args.segment,
        "roi_size": src.meta(picks[0][0])["roi_size"],
        "samples_per_s": {k: round(args.samples / v, 1) for k, v in timings.items()},
        "speedup": round(timings["per_frame_keys"] / timings["lmdb_per_utterance"], 2),
    }
    print(f"loader, {args.samples} samples of {args.segment} frames (RGB + thermal crops + audio), one process:")
    for k, v in result["samples_per_s"].items():
        print(f"  {k:20s} {v:9.1f} samples/s")
    print(f"  speed-up {result['speedup']}x; saved {save('loader', result)}")


if __name__ == "__main__":
    main()
