"""Train one variant: the same recipe for all four, resumable bit for bit after preemption.

Outputs (DVC): ``models/<variant>/best.pt`` (best validation weights, loadable with
``torch.load(..., weights_only=True)``, with the resolved config and the data hashes) and
``models/<variant>/summary.json``; dvclive metrics and plots in ``dvclive/<variant>/``.
Resumable state: ``$TAVSE_SCRATCH_DIR/train/<variant>-<hash>/state.pt``, keyed by everything
that defines the run, saved every ``train.checkpoint_every`` steps and on SIGUSR1/SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from tavse.config import Config, params_hash
from tavse.data.dataset import MixtureSet, TrainingSet, collate
from tavse.data.mixtures import read_mixture_list
from tavse.io import atomic_path
from tavse.losses import enhancement_loss, si_snr
from tavse.models import TAVSE, parameter_counts
from tavse.paths import scratch_dir
from tavse.training.schedule import param_groups, warmup_cosine
from tavse.training.signals import Preempted, StopRequest
from tavse.training.state import Progress, load_state, save_state

log = logging.getLogger("tavse.train")


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, cut to whole optimiser steps, started part-way when resuming.

    Cutting the tail keeps every step's micro-batches inside one epoch, so a step boundary is
    always a clean place to save and resume.
    """

    def __init__(self, n: int, seed: int, epoch: int, per_step: int, skip: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, epoch, skip
        self.used = (n // per_step) * per_step
        if self.used == 0:
            raise ValueError(f"{n} training segments are fewer than one optimiser step needs ({per_step}): "
                             "lower train.batch_size or train.grad_accum, or ingest more data")

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()[: self.used]

    def __iter__(self):
        return iter(self.order()[self.skip:])

    def __len__(self) -> int:
        return self.used - self.skip


def data_hashes(cfg: Config) -> dict[str, str]:
    """Content hashes (DVC's md5) of the data this training reads, from dvc.lock."""
    wanted = {cfg.ingest.out_dir, cfg.noise.out_dir, cfg.validation.out}
    found: dict[str, str] = {}
    lock = Path("dvc.lock")
    if lock.is_file():
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if out["path"] in wanted:
                    found[out["path"]] = out["md5"]
    return {p: found.get(p, "unknown (not in dvc.lock)") for p in sorted(wanted)}


def device_setup() -> tuple[torch.device, torch.dtype | None, bool]:
    """Device, autocast dtype (None on CPU: full precision) and whether a grad scaler is needed."""
    if not torch.cuda.is_available():
        return torch.device("cpu"), None, False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if torch.cuda.is_bf16_supported():
        return torch.device("cuda"), torch.bfloat16, False
    return torch.device("cuda"), torch.float16, True


def _to(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    visual = {m: batch[m].to(device, non_blocking=True) for m in ("rgb", "thermal") if m in batch}
    return batch["noisy"].to(device), batch["clean"].to(device), visual


@torch.no_grad()
def validate(model: TAVSE, loader: DataLoader, device, amp_dtype) -> dict:
    """Mean SI-SNR and SI-SNRi (dB) on the frozen validation list, overall and per input SNR."""
    model.eval()
    rows = []
    gates: dict[str, list[float]] = {}
    for batch in loader:
        noisy, clean, visual = _to(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            out = model(noisy, visual)
        est = out["enhanced"].float()
        s_est = si_snr(est, clean).cpu().numpy()
        s_in = si_snr(noisy, clean).cpu().numpy()
        for k, v in out["gates"].items():
            gates.setdefault(k, []).extend(v.float().cpu().tolist())
        rows += [(float(snr), a, b) for snr, a, b in zip(batch["snr_db"].tolist(), s_est, s_in)]
    model.train()
    arr = np.array(rows)
    res = {"si_snr": float(arr[:, 1].mean()), "si_snri": float((arr[:, 1] - arr[:, 2]).mean())}
    for snr in sorted(set(arr[:, 0])):
        sel = arr[:, 0] == snr
        res[f"si_snri_snr{snr:+g}"] = float((arr[sel, 1] - arr[sel, 2]).mean())
    res.update({f"gate_{k}": float(np.mean(v)) for k, v in gates.items()})
    return res


def run_key(cfg: Config, variant: str) -> str:
    """Hash of everything that defines a training run (resumable state is only reused on a match)."""
    return params_hash({
        "seed": cfg.seed, "variant": variant, "modalities": cfg.variants[variant], "train": dataclasses.asdict(cfg.train),
        "model": dataclasses.asdict(cfg.model), "mix": dataclasses.asdict(cfg.mix), "data": data_hashes(cfg),
        "roi": cfg.ingest.roi_size,
    })


def train_variant(cfg: Config, variant: str) -> dict:
    """Train ``variant`` to the end (or early stop) and write its DVC outputs; return the summary."""
    if variant not in cfg.variants:
        raise ValueError(f"unknown variant {variant!r}; params.yaml declares {sorted(cfg.variants)}")
    tc = cfg.train
    modalities = cfg.variants[variant]
    device, amp_dtype, use_scaler = device_setup()
    ingest = Path(cfg.ingest.out_dir)
    torch.manual_seed(cfg.seed)
    model = TAVSE(cfg.model, modalities, cfg.ingest.roi_size).to(device)
    counts = parameter_counts(model)
    log.info("%s: modalities %s, parameters %s", variant, modalities or "audio only", counts)

    train_set = TrainingSet(ingest / "lmdb" / "train", ingest / "manifests" / "train.csv", cfg.noise.out_dir, "train",
                            tc.segment_frames, cfg.mix.snrs_db, cfg.seed, modalities)
    val_set = MixtureSet(ingest / "lmdb" / "val", cfg.noise.out_dir, read_mixture_list(cfg.validation.out), modalities)
    val_loader = DataLoader(val_set, batch_size=tc.batch_size, shuffle=False, num_workers=0, collate_fn=collate)

    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    key = run_key(cfg, variant)
    state_path = scratch_dir().resolve() / "train" / f"{variant}-{key}" / "state.pt"
    live_dir = Path(tc.dvclive_dir) / variant
    if state_path.is_file():
        progress, best_weights = load_state(state_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        log.info("resuming %s from %s at step %d (epoch %d, batch %d)", variant, state_path, progress.step,
                 progress.epoch, progress.batch_in_epoch)
    else:
        progress, best_weights = Progress(), None
        shutil.rmtree(live_dir, ignore_errors=True)  # a fresh run starts fresh curves

    from dvclive import Live  # imported lazily: it pulls in DVC

    live = Live(str(live_dir), resume=progress.step > 0, save_dvc_exp=False, dvcyaml=None, report=None)
    stop = StopRequest()
    bar = tqdm(total=tc.max_steps, initial=progress.step, desc=f"train {variant}", unit="step", dynamic_ncols=True)
    samples_seen, t_start = 0, time.perf_counter()
    try:
        while progress.step < tc.max_steps and not progress.stopped_early:
            train_set.set_epoch(progress.epoch)
            sampler = EpochSampler(len(train_set), cfg.seed, progress.epoch, tc.batch_size * tc.grad_accum,
                                   progress.batch_in_epoch * tc.batch_size)
            loader = DataLoader(train_set, batch_size=tc.batch_size, sampler=sampler, drop_last=True,
                                num_workers=tc.num_workers, collate_fn=collate,
                                generator=torch.Generator().manual_seed(cfg.seed + progress.epoch),
                                persistent_workers=False)
            micro = 0
            for batch in loader:
                noisy, clean, visual = _to(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    out = model(noisy, visual)
                loss, parts = enhancement_loss(out["enhanced"], clean, tc.mag_loss_weight, cfg.model.n_fft,
                                               cfg.model.win_length, cfg.model.hop_length)
                (scaler.scale(loss / tc.grad_accum) if scaler else loss / tc.grad_accum).backward()
                progress.batch_in_epoch += 1
                micro += 1
                progress.loss_sum += float(loss)
                progress.loss_count += 1
                samples_seen += noisy.shape[0]
                if micro % tc.grad_accum:
                    continue
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                progress.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", samples_s=f"{samples_seen / (time.perf_counter() - t_start):.1f}")

                if progress.step % tc.eval_every == 0 or progress.step == tc.max_steps:
                    metrics = validate(model, val_loader, device, amp_dtype)
                    metrics["train_loss"] = progress.loss_sum / max(1, progress.loss_count)
                    metrics["lr"] = optimizer.param_groups[0]["lr"]
                    progress.loss_sum, progress.loss_count = 0.0, 0
                    improved = metrics["si_snr"] > progress.best_metric
                    if improved:
                        progress.best_metric, progress.best_step = metrics["si_snr"], progress.step
                        progress.evals_without_improvement = 0
                        best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    else:
                        progress.evals_without_improvement += 1
                    progress.history.append({"step": progress.step, **metrics})
                    live.step = progress.step
                    for k, v in metrics.items():
                        live.log_metric(("train/" if k in ("train_loss", "lr") else "val/") + k, v)
                    live.next_step()
                    tqdm.write(f"[{variant}] step {progress.step}: val SI-SNR {metrics['si_snr']:.2f} dB, "
                               f"SI-SNRi {metrics['si_snri']:.2f} dB, train loss {metrics['train_loss']:.3f}"
                               + (" *" if improved else ""))
                    if progress.evals_without_improvement >= tc.patience:
                        progress.stopped_early = True
                        log.info("%s: early stop at step %d (best step %d)", variant, progress.step, progress.best_step)

                done = progress.step >= tc.max_steps or progress.stopped_early
                if stop.requested or (progress.step % tc.checkpoint_every == 0 and not done):
                    save_state(state_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                               progress=progress, best_weights=best_weights)
                if stop.requested:
                    log.warning("%s: %s received; state saved at step %d to %s, exiting for requeue",
                                variant, stop.requested, progress.step, state_path)
                    raise Preempted(stop.requested)
                if done:
                    break
            else:
                tqdm.write(f"[{variant}] epoch {progress.epoch} done: step {progress.step}, "
                           f"{samples_seen / (time.perf_counter() - t_start):.1f} samples/s")
                progress.epoch += 1
                progress.batch_in_epoch = 0
    finally:
        bar.close()
        stop.restore()

    summary = finish(cfg, variant, model, best_weights, progress, counts)
    live.summary = {k: v for k, v in summary["best"].items() if isinstance(v, float)}
    live.make_summary()
    shutil.rmtree(state_path.parent, ignore_errors=True)
    return summary


def finish(cfg: Config, variant: str, model: TAVSE, best_weights: dict | None, progress: Progress, counts: dict) -> dict:
    """Write the best model and the summary (atomically)."""
    out = Path(cfg.train.out_dir) / variant
    best = next((h for h in progress.history if h["step"] == progress.best_step), {})
    summary = {
        "variant": variant, "modalities": cfg.variants[variant], "steps": progress.step,
        "best_step": progress.best_step, "stopped_early": progress.stopped_early,
        "best": best, "parameters": counts, "seed": cfg.seed, "data": data_hashes(cfg),
        "params_hash": run_key(cfg, variant),
    }
    checkpoint = {
        "state_dict": best_weights if best_weights is not None else model.state_dict(),
        "variant": variant, "modalities": list(cfg.variants[variant]), "roi_size": cfg.ingest.roi_size,
        "config": cfg.to_dict(), "data_hashes": summary["data"], "best_step": progress.best_step,
        "val": {k: v for k, v in best.items() if isinstance(v, (int, float))},
    }
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        torch.save(checkpoint, tmp / "best.pt")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
