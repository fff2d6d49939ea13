"""Training-step throughput and peak memory per variant and model size.

    python -m bench.train_step [--sizes small paper] [--batch-small 8] [--batch-paper 2] [--steps 5]

Each (size, variant) runs in a fresh process (so its peak memory is its own): ``--steps``
timed optimiser steps (forward, loss, backward, AdamW) after one warm-up step, on random
inputs of ``train.segment_frames`` frames at the size's crop side (paper: 96, small:
``ingest.roi_size``). Reports samples/s and peak memory (CPU: the process's max RSS; GPU: peak
allocated), with the batch size. Uses the GPU when one is visible.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from bench.common import config, save


def one(size: str, variant: str, batch: int, steps: int) -> dict:
    from tavse.losses import enhancement_loss
    from tavse.models import TAVSE, parameter_counts
    from tavse.training.loop import device_setup
    from tavse.training.schedule import param_groups
    import contextlib
    import dataclasses

    cfg = config()
    model_cfg = dataclasses.replace(cfg.model, size=size)
    roi = 96 if size == "paper" else cfg.ingest.roi_size
    device, amp, _ = device_setup()
    torch.manual_seed(0)
    model = TAVSE(model_cfg, cfg.variants[variant], roi).to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4)
    t_frames = cfg.train.segment_frames
    n = t_frames * cfg.ingest.sample_rate // cfg.ingest.fps
    noisy, clean = torch.randn(batch, n, device=device) * 0.1, torch.randn(batch, n, device=device) * 0.1
    visual = {"rgb": torch.rand(batch, t_frames, 3, roi, roi, device=device),
              "thermal": torch.rand(batch, t_frames, 1, roi, roi, device=device)}
    visual = {m: visual[m] for m in cfg.variants[variant]}

    def step():
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            out = model(noisy, visual)
        loss, _ = enhancement_loss(out["enhanced"], clean, 0.1, model_cfg.n_fft, model_cfg.win_length, model_cfg.hop_length)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"size": size, "variant": variant, "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
            "threads": torch.get_num_threads(), "batch": batch, "segment_frames": t_frames, "roi": roi,
            "samples_per_s": round(batch * steps / dt, 2), "s_per_step": round(dt / steps, 3),
            "peak_memory_mib": round(peak / 2**20, 1), "parameters": parameter_counts(model)["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "paper"])
    ap.add_argument("--batch-small", type=int, default=8)
    ap.add_argument("--batch-paper", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--one", nargs=3, metavar=("SIZE", "VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], int(args.one[2]), args.steps)))
        return
    rows = []
    for size in args.sizes:
        batch = args.batch_paper if size == "paper" else args.batch_small
        for variant in config().variants:
            out = subprocess.run([sys.executable, "-m", "bench.train_step", "--one", size, variant, str(batch),
                                  "--steps", str(args.steps)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{size:6s} {variant:18s} batch {batch:2d} on {row['device']:4s}: {row['samples_per_s']:7.2f} samples/s, "
                  f"{row['s_per_step']:7.3f} s/step, peak {row['peak_memory_mib']:8.1f} MiB, {row['parameters']:,} params")
    print(f"saved {save('train_step', {'rows': rows})}")


if __name__ == "__main__":
    main()
