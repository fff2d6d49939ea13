"""Enhance one noisy recording with a trained TAVSE variant and the speaker's video.

    python -m tavse.enhance --model models/audio_thermal/best.pt --noisy noisy.wav \\
        --frames sub_121_ia.zip [--utterance s121_t1_p1_c0042] --out enhanced.wav

``--frames`` is a zip or a folder in the SpeakingFaces layout (aligned RGB and thermal frames,
``trial_{t}/<stream>/<file>``); the mouth is found and cropped exactly as ``ingest`` does, with
the ingest settings the model was trained with. The noisy WAV may have any sample rate (it is
resampled to 16 kHz) and must be mono; frame f covers [f/28, (f+1)/28) s of it. Prints the
real-time factor (processing time / audio duration).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tavse.common.audio import resample
from tavse.common.config import IngestConfig, load_config, section_from_dict
from tavse.corpus import speakingfaces as sfc
from tavse.evaluation.evaluate import enhance, load_model
from tavse.ingest import mouth_crops
from tavse.common.io import atomic_path, wav_bytes


def open_frames(path: Path):
    """A zip or a folder of SpeakingFaces frames, as something with ``namelist()`` and ``read()``."""
    if path.is_dir():
        return sfc.FolderArchive(path)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SystemExit(f"{path}: not a folder or a readable zip archive ({exc})") from None


def select_utterance(utts: list[sfc.UtteranceMembers], wanted: str | None, source: Path) -> sfc.UtteranceMembers:
    ids = [u.key.utt_id for u in utts]
    if not utts:
        raise SystemExit(f"{source}: no aligned RGB + thermal frames in the SpeakingFaces layout")
    if wanted is None:
        if len(utts) > 1:
            raise SystemExit(f"{source} holds {len(utts)} utterances; choose one with --utterance (e.g. {ids[0]})")
        return utts[0]
    if wanted not in ids:
        raise SystemExit(f"{source}: no utterance {wanted!r}; found {ids[:10]}{' ...' if len(ids) > 10 else ''}")
    return utts[ids.index(wanted)]


def run(model_path: Path, noisy_path: Path, frames_path: Path, out: Path, utterance: str | None) -> dict:
    t0 = time.perf_counter()
    model, ckpt = load_model(model_path)
    # The keys that shaped the training crops come from best.pt; the rest (paths, workers, skip
    # thresholds) only matter to the ingest stage and come from this checkout's params.yaml.
    crop = {**dataclasses.asdict(load_config().ingest), **ckpt["config"]["ingest"]}
    ingest_cfg = section_from_dict(IngestConfig, crop, f"{model_path}: ingest")
    audio, sr = sf.read(noisy_path, dtype="float32", always_2d=True)
    if audio.shape[1] != 1:
        raise SystemExit(f"{noisy_path}: expected a mono WAV, found {audio.shape[1]} channels")
    noisy = resample(audio[:, 0], sr, ingest_cfg.sample_rate)
    source = open_frames(frames_path)
    utts, _ = sfc.index_archive(source, str(frames_path), None)
    u = select_utterance(utts, utterance, frames_path)
    n_video = sfc.check_frames(sfc.UtteranceMembers(u.key, u.rgb, u.thermal, mic1="(not needed)"), str(frames_path),
                               ingest_cfg.frame_tolerance)
    n = min(n_video, int(len(noisy) * ingest_cfg.fps / ingest_cfg.sample_rate))
    rgb_frames, thermal_frames = sfc.load_frames(source, str(frames_path), u, n)
    rgb, thr, _ = mouth_crops(rgb_frames, thermal_frames, ingest_cfg, f"{frames_path}:{u.key.utt_id}")
    n_samples = round(n * ingest_cfg.sample_rate / ingest_cfg.fps)
    visual = {"rgb": torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255,
              "thermal": torch.from_numpy(thr).unsqueeze(1).float() / 255}
    x = torch.from_numpy(np.ascontiguousarray(noisy[:n_samples]))
    t1 = time.perf_counter()
    enhanced = enhance(model, x, {m: visual[m] for m in model.modalities})
    t2 = time.perf_counter()
    with atomic_path(out) as tmp:
        tmp.write_bytes(wav_bytes(np.clip(enhanced, -1, 1), ingest_cfg.sample_rate))
    seconds = n_samples / ingest_cfg.sample_rate
    return {"utterance": u.key.utt_id, "frames": n, "seconds": seconds, "dropped_s": max(0.0, len(noisy) / ingest_cfg.sample_rate - seconds),
            "rtf_model": (t2 - t1) / seconds, "rtf_total": (t2 - t0) / seconds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="models/<variant>/best.pt")
    ap.add_argument("--noisy", type=Path, required=True, help="noisy mono WAV (any rate)")
    ap.add_argument("--frames", type=Path, required=True, help="zip or folder in the SpeakingFaces layout")
    ap.add_argument("--utterance", help="utterance id, e.g. s121_t1_p1_c0042, if the source holds several")
    ap.add_argument("--out", type=Path, required=True, help="enhanced WAV (16 kHz)")
    args = ap.parse_args(argv)
    r = run(args.model, args.noisy, args.frames, args.out, args.utterance)
    print(f"{args.out}: {r['utterance']}, {r['seconds']:.2f} s enhanced from {r['frames']} frames; "
          f"real-time factor {r['rtf_model']:.3f} (model) / {r['rtf_total']:.3f} (with loading, face tracking, cropping)")
    if r["dropped_s"] > 1 / 28:
        print(f"warning: the last {r['dropped_s']:.2f} s of audio have no video frames and were not enhanced", file=sys.stderr)


if __name__ == "__main__":
    main()
