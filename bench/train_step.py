"""Training-step cost and peak memory per variant and model size, beside the original design's audio path.

    python -m bench.train_step [--sizes small paper] [--threads 1] [--steps 5] [--precision fp32 bf16]

Each (size, variant, precision) runs in a fresh process (so its peak memory is its own):
``--steps`` timed optimiser steps (forward, loss, backward, AdamW) after one warm-up step, on
random inputs: small size at batch 8 x ``train.segment_frames`` frames of ``ingest.roi_size``
crops, paper size at batch 2 x 70 frames (2.5 s) of 96 px crops — the configuration the
original design's figures were measured in. A row ``original_audio`` times the original
design's audio U-Net (``bench/original_design.py``) on the same paper-size audio, side by
side. Reports CPU seconds per step (process time: meaningful on a shared machine at one
thread), wall seconds, samples/s and peak memory (CPU: max RSS; GPU: peak allocated). Uses
the GPU when one is visible (then times are wall).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

import torch

from bench.common import config, save
from tavse.models.summary import PAPER_ROI_SIZE

PAPER = {"batch": 2, "frames": 70, "roi": PAPER_ROI_SIZE}
# The original TAVSE design measured side by side by the issue that asked for this benchmark
# (CPU, one thread, batch 2, 2.5 s, 70 frames of 96 px): CPU seconds per step.
ORIGINAL_CPU_S = {"audio_only": 0.176, "audio_rgb_thermal": 19.2}


def one(size: str, variant: str, precision: str, steps: int, threads: int) -> dict:
    from bench.original_design import OriginalAudioUNet
    from tavse.losses import enhancement_loss
    from tavse.models import TAVSE, parameter_counts
    from tavse.training.loop import autocast, device_setup
    from tavse.training.schedule import param_groups

    torch.set_num_threads(threads)
    cfg = config()
    device, amp, _ = device_setup(precision=precision)
    paper = size == "paper" or variant == "original_audio"
    batch, frames, roi = (
        (PAPER["batch"], PAPER["frames"], PAPER["roi"]) if paper else (8, cfg.train.segment_frames, cfg.ingest.roi_size)
    )
    torch.manual_seed(0)
    if variant == "original_audio":
        model = OriginalAudioUNet(cfg.model.n_fft, cfg.model.win_length, cfg.model.hop_length).to(device)
        modalities: list[str] = []
        n_params = sum(p.numel() for p in model.parameters())
    else:
        model = TAVSE(dataclasses.replace(cfg.model, size=size), cfg.variants[variant], roi).to(device)
        modalities = cfg.variants[variant].streams
        n_params = parameter_counts(model)["total"]
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4)
    n = frames * cfg.ingest.sample_rate // cfg.ingest.fps
    noisy, clean = torch.randn(batch, n, device=device) * 0.1, torch.randn(batch, n, device=device) * 0.1
    shapes = {"rgb": 3, "thermal": 1}
    visual = {m: torch.rand(batch, frames, shapes[m], roi, roi, device=device) for m in modalities}

    def step() -> None:
        with autocast(device, amp):
            out = model(noisy) if variant == "original_audio" else model(noisy, visual)["enhanced"]
        loss, _ = enhancement_loss(out, clean)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cpu, wall = [], []
    for _ in range(steps):
        c0, w0 = time.process_time(), time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "size": "paper" if paper else size,
        "variant": variant,
        "precision": str(amp or "fp32"),
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "frames": frames,
        "roi": roi,
        "cpu_s_per_step": round(min(cpu), 3),
        "wall_s_per_step": round(min(wall), 3),
        "samples_per_s": round(batch / min(wall), 2),
        "peak_memory_mib": round(peak / 2**20, 1),
        "parameters": n_params,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "paper"])
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--one", nargs=3, metavar=("SIZE", "VARIANT", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, steps=args.steps, threads=args.threads)))
        return
    runs = [
        (size, variant, p)
        for p in args.precision
        for size in args.sizes
        for variant in [*config().variants, *(["original_audio"] if size == "paper" else [])]
    ]
    rows = []
    for size, variant, precision in runs:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.train_step",
                "--one",
                size,
                variant,
                precision,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        ref = ORIGINAL_CPU_S.get(variant) if row["size"] == "paper" else None
        print(
            f"{row['size']:6s} {variant:18s} {row['precision']:14s} batch {row['batch']} x {row['frames']} frames: "
            f"{row['cpu_s_per_step']:7.3f} CPU-s/step ({row['threads']} thread(s)), {row['wall_s_per_step']:7.3f} s wall, "
            f"peak {row['peak_memory_mib']:7.1f} MiB, {row['parameters']:,} params"
            + (f"  [original design: {ref} CPU-s, measured elsewhere]" if ref else "")
        )
    print(f"saved {save('train_step', {'rows': rows})}")


if __name__ == "__main__":
    main()
