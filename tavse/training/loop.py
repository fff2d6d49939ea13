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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from tavse.common.config import STREAMS, Config, IngestConfig, params_hash
from tavse.common.io import atomic_path
from tavse.common.locks import held_alone
from tavse.common.paths import scratch_dir
from tavse.common.progress import progress as progress_bar
from tavse.common.seeding import stable_seed
from tavse.data.dataset import MixtureSet, TrainingSet, collate
from tavse.data.mixtures import read_mixture_list
from tavse.data.staging import stage_copy, staging_root
from tavse.losses import enhancement_loss, si_snr, silence_attenuation_db, speech_activity
from tavse.models import TAVSE, draw_stream_keep, parameter_counts
from tavse.training import distributed
from tavse.training.schedule import param_groups, warmup_cosine
from tavse.training.signals import Preempted, StopRequest, ignore_stop_signals
from tavse.training.state import Progress, canonical, load_state, save_state

log = logging.getLogger("tavse.train")


class RunSampler(Sampler[tuple[int, int]]):
    """Every epoch's seeded permutation, one epoch after the other, as ``(epoch, index)`` keys.

    One sampler (and one DataLoader with persistent workers) serves the whole run: the key
    tells the dataset which epoch's mixture to build, so no per-epoch loader is needed.
    Each epoch is cut to whole optimiser steps, so a step's micro-batches never straddle two
    epochs and a step boundary is always a clean place to save and resume. The order is that
    of the global batches; with several data-parallel ranks each rank yields its slice of every
    global micro-batch, so the ranks together see exactly what a single process sees.
    Endless: the training loop stops taking batches.

    Args:
        n: dataset size. seed: the permutations. batch_size: global micro-batch size.
        grad_accum: micro-batches per optimiser step. start_epoch, skip_batches: where a
        resumed run continues (global micro-batches of ``start_epoch`` already consumed).
        rank_slice: this rank's part of a global micro-batch.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        batch_size: int,
        grad_accum: int,
        start_epoch: int = 0,
        skip_batches: int = 0,
        rank_slice: slice = slice(None),
    ):
        self.n, self.seed, self.batch_size, self.rank_slice = n, seed, batch_size, rank_slice
        self.start_epoch, self.skip_batches = start_epoch, skip_batches
        per_step = batch_size * grad_accum
        self.used = (n // per_step) * per_step
        if self.used == 0:
            raise ValueError(
                f"{n} training segments are fewer than one optimiser step needs ({per_step}): "
                "lower train.batch_size or train.grad_accum, or ingest more data"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Global micro-batches in one epoch."""
        return self.used // self.batch_size

    def order(self, epoch: int) -> list[int]:
        """The epoch's global order of sample indices (whole optimiser steps)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()[: self.used]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip, b = self.start_epoch, self.skip_batches * self.batch_size, self.batch_size
        while True:
            rest = self.order(epoch)[skip:]
            for k in range(0, len(rest), b):
                yield from ((epoch, i) for i in rest[k : k + b][self.rank_slice])
            epoch, skip = epoch + 1, 0


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


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX-512 BF16), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def device_setup(
    device: torch.device | None = None, precision: str = "auto"
) -> tuple[torch.device, torch.dtype | None, bool]:
    """Device (default: the first GPU, else CPU), autocast dtype (None: full precision), grad scaler needed.

    ``precision`` (``train.precision``): ``fp32``; ``bf16`` (autocast on any device); ``auto``:
    on a GPU bf16 where supported, else fp16 with a grad scaler; on a CPU bf16 only where the
    CPU has bf16 units (measured faster there, slower on CPUs that emulate it).
    """
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if precision == "fp32":
        return device, None, False
    if precision == "bf16":
        return device, torch.bfloat16, False
    if precision != "auto":
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda":
        return (device, torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (device, torch.float16, True)
    return device, (torch.bfloat16 if cpu_has_bf16_units() else None), False


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype``, or a no-op context when it is None."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _to(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    visual = {m: batch[m].to(device, non_blocking=True) for m in STREAMS if m in batch}
    return batch["noisy"].to(device), batch["clean"].to(device), visual


SELECTION_METRIC = "si_snri_active"
# The DVC metrics of a training (dvclive/<variant>/metrics.json): the best checkpoint's validation
# figures, the same keys for every variant and named like evaluate's test metrics, so that
# `dvc metrics show` lines them up in the same columns (the path tells validation from test).
LIVE_SUMMARY = ("si_snri", SELECTION_METRIC)


@torch.no_grad()
def validate(model: TAVSE, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None) -> dict:
    """Validation means (dB) on the frozen list, overall and per input SNR, and the mean gate per stream.

    ``si_snri_active`` (SI-SNR improvement on target-active samples) is the selection metric
    (:data:`SELECTION_METRIC`): a model cannot raise it by attenuating target-silent stretches,
    which plain ``si_snri`` rewards and ``silence_atten_db`` measures.
    """
    model.eval()
    rows: list[tuple[float, ...]] = []
    gates: dict[str, list[float]] = {}
    for batch in loader:
        noisy, clean, visual = _to(batch, device)
        with autocast(device, amp_dtype):
            out = model(noisy, visual)
        est = out["enhanced"].float()
        active = speech_activity(clean)
        cols = [
            si_snr(est, clean),
            si_snr(noisy, clean),
            si_snr(est, clean, mask=active),
            si_snr(noisy, clean, mask=active),
            silence_attenuation_db(est, noisy, active),
        ]
        for k, v in out["gates"].items():
            gates.setdefault(k, []).extend(v.float().cpu().tolist())
        rows += zip(batch["snr_db"].tolist(), *(c.double().cpu().tolist() for c in cols))
    model.train()
    arr = np.array(rows)
    snr, est, inp, est_a, inp_a, atten = arr.T
    res = {
        "si_snr": float(est.mean()),
        "si_snri": float((est - inp).mean()),
        "si_snri_active": float((est_a - inp_a).mean()),
        "silence_atten_db": float(np.nanmean(atten)),
    }
    for value in sorted(set(snr)):
        sel = snr == value
        res[f"si_snri_snr{value:+g}"] = float((est[sel] - inp[sel]).mean())
        res[f"si_snri_active_snr{value:+g}"] = float((est_a[sel] - inp_a[sel]).mean())
    res.update({f"gate_{k}": float(np.mean(v)) for k, v in gates.items()})
    return res


def run_key(cfg: Config, variant: str) -> str:
    """Hash of everything that defines a training run (resumable state is only reused on a match)."""
    return params_hash(
        {
            "variant": variant,
            "variant_config": dataclasses.asdict(cfg.variants[variant]),
            "train": dataclasses.asdict(cfg.train),
            "model": dataclasses.asdict(cfg.model),
            "mix": dataclasses.asdict(cfg.mix),
            "data": data_hashes(cfg),
            "roi": cfg.ingest.roi_size,
        }
    )


def train_variant(cfg: Config, variant: str) -> dict | None:
    """Train ``variant`` to the end (or early stop) and write its DVC outputs; return the summary.

    Runs as one rank of a data-parallel run when the environment describes one (see
    :mod:`tavse.training.distributed`); rank 0 writes every file and returns the summary,
    the other ranks return None.
    """
    if variant not in cfg.variants:
        raise ValueError(f"unknown variant {variant!r}; params.yaml declares {sorted(cfg.variants)}")
    ctx = distributed.setup()
    state_path = scratch_dir().resolve() / "train" / f"{variant}-{run_key(cfg, variant)}" / "state.pt"
    try:
        with _sole_training(state_path.parent, variant) if ctx.is_main else contextlib.nullcontext():
            return _train(cfg, variant, ctx, state_path)
    finally:
        distributed.teardown(ctx)


class TrainingBusy(RuntimeError):
    """Another process is training the same run (variant and settings) in the same scratch folder."""


def _sole_training(run_dir: Path, variant: str) -> contextlib.AbstractContextManager:
    """Hold ``run_dir/.lock`` while training: a second process training the same run in the same
    scratch folder would overwrite the first one's resumable state, and the first one's clean-up at
    the end would delete that folder under the second one."""
    return held_alone(
        run_dir / ".lock",
        lambda holder: TrainingBusy(
            f"{run_dir}: another process is training {variant} with the same settings in this scratch folder "
            f"({holder}); wait for it to end, or give this run a scratch folder of its own (TAVSE_SCRATCH_DIR)"
        ),
        f"a second training of {variant} with the same settings here would not be refused",
    )


@dataclasses.dataclass
class _Run:
    """What one training holds from step to step (built by :func:`_start`)."""

    cfg: Config
    variant: str
    ctx: distributed.DistContext
    state_path: Path
    net: TAVSE
    model: TAVSE | DistributedDataParallel  # the wrapper in a data-parallel run
    device: torch.device
    amp_dtype: torch.dtype | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    progress: Progress
    best_weights: dict | None
    counts: dict[str, int]
    sampler: RunSampler
    val_loader: DataLoader
    live: Any  # dvclive.Live on rank 0, None elsewhere


def _train(cfg: Config, variant: str, ctx: distributed.DistContext, state_path: Path) -> dict | None:
    run, loader = _start(cfg, variant, ctx, state_path)
    tc = cfg.train
    batches = iter(loader)
    stop = StopRequest(announce=ctx.is_main)
    bar = progress_bar(
        total=tc.max_steps, initial=run.progress.step, desc=f"train {variant}", unit="step", disable=not ctx.is_main
    )
    samples_seen, t_start = 0, time.perf_counter()
    try:
        while run.progress.step < tc.max_steps and not run.progress.stopped_early:
            loss_value, samples = train_one_step(run, batches)
            samples_seen += samples
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", samples_s=f"{samples_seen / (time.perf_counter() - t_start):.1f}")
            _end_of_epoch(run, samples_seen / (time.perf_counter() - t_start))
            if run.progress.step % tc.eval_every == 0 or run.progress.step == tc.max_steps:
                _validate_and_track(run)
            _save_or_preempt(run, stop)
    finally:
        del batches, loader  # the last references: the workers shut down now, not when a traceback is freed
        bar.close()
        stop.restore()

    if not ctx.is_main:
        return None
    return _finish_run(run)


def _start(cfg: Config, variant: str, ctx: distributed.DistContext, state_path: Path) -> tuple[_Run, DataLoader]:
    """The model (seeded), the data, the optimiser and schedule, resumed from ``state_path`` when it
    exists, the dvclive log on rank 0, and the training loader. The order of these steps is part of
    the recipe: it fixes what the seeded generators draw."""
    tc = cfg.train
    spec = cfg.variants[variant]
    rank_slice = ctx.rank_slice(tc.batch_size)
    device, amp_dtype, use_scaler = device_setup(ctx.device, tc.precision)
    torch.manual_seed(tc.seed)
    net = TAVSE(cfg.model, spec, cfg.ingest.roi_size)
    if ctx.distributed:
        distributed.cross_rank_batchnorm(net)
    net.to(device)
    counts = parameter_counts(net)
    if ctx.is_main:
        parts = ", ".join(f"{k} {v / 1e3:.1f}k" for k, v in counts.items() if k != "total" and v)
        log.info(
            "%s: streams %s, %.1fk parameters (%s), %d process(es), %d sample(s) per process per micro-batch, "
            "autocast %s",
            variant,
            "+".join(spec.streams) or "audio only",
            counts["total"] / 1e3,
            parts,
            ctx.world_size,
            len(range(tc.batch_size)[rank_slice]),
            str(amp_dtype or "off").replace("torch.", ""),
        )

    data = staged_inputs(cfg, ctx)
    train_set = TrainingSet(
        data["ingest"] / "lmdb" / "train",
        data["ingest"] / "manifests" / "train.csv",
        data["noise"],
        "train",
        tc.segment_frames,
        cfg.mix.snrs_db,
        tc.seed,
        spec.streams,
        cfg.mix.babble,
    )
    val_set = MixtureSet(
        data["ingest"] / "lmdb" / "val", data["noise"], read_mixture_list(cfg.validation.out), spec.streams
    )
    val_loader = DataLoader(val_set, batch_size=tc.batch_size, shuffle=False, num_workers=0, collate_fn=collate)

    optimizer = torch.optim.AdamW(param_groups(net, tc.weight_decay), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    live_dir = Path(tc.dvclive_dir) / variant
    best_weights: dict | None
    if state_path.is_file():
        progress, best_weights = load_state(
            state_path, model=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        if ctx.is_main:
            log.info(
                "resuming %s from %s at step %d (epoch %d, batch %d)",
                variant,
                state_path,
                progress.step,
                progress.epoch,
                progress.batch_in_epoch,
            )
    else:
        progress, best_weights = Progress(), None
        if ctx.is_main:
            shutil.rmtree(live_dir, ignore_errors=True)  # a fresh run starts fresh curves
    if not ctx.is_main:
        best_weights = None  # only rank 0 writes them
    model: TAVSE | DistributedDataParallel = net
    if ctx.distributed:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    live = None
    if ctx.is_main:
        from dvclive import Live  # imported lazily: it pulls in DVC

        if progress.step > 0:
            drop_rows_after(live_dir / "plots" / "metrics", progress.step)
        live = Live(str(live_dir), resume=progress.step > 0, save_dvc_exp=False, dvcyaml=None, report=None)

    # One loader for the whole run: its workers start once and stay (forking a fresh worker per
    # epoch cost seconds of copy-on-write faults each time).
    sampler = RunSampler(
        len(train_set), tc.seed, tc.batch_size, tc.grad_accum, progress.epoch, progress.batch_in_epoch, rank_slice
    )
    loader = DataLoader(
        train_set,
        batch_size=len(range(tc.batch_size)[rank_slice]),
        sampler=sampler,
        num_workers=tc.num_workers,
        persistent_workers=tc.num_workers > 0,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(tc.seed),
        worker_init_fn=ignore_stop_signals,
    )
    run = _Run(
        cfg, variant, ctx, state_path, net, model, device, amp_dtype, optimizer, scheduler, scaler, progress,
        best_weights, counts, sampler, val_loader, live,
    )  # fmt: skip
    return run, loader


def train_one_step(run: _Run, batches: Iterator[dict]) -> tuple[float, int]:
    """One optimiser step over ``train.grad_accum`` micro-batches; returns the last micro-batch's
    loss (mean over ranks) and the samples the step took on all ranks together."""
    tc, ctx, spec, progress = run.cfg.train, run.ctx, run.cfg.variants[run.variant], run.progress
    rank_slice = ctx.rank_slice(tc.batch_size)
    n_streams = len(spec.streams)
    loss_value, samples = float("nan"), 0
    for micro in range(tc.grad_accum):
        noisy, clean, visual = _to(next(batches), run.device)
        keep = None
        if n_streams and spec.modality_dropout > 0:
            # One draw per global micro-batch, seeded by its place in the run: the same on
            # every rank and after a resume, whatever else used the global RNG.
            g = torch.Generator().manual_seed(
                stable_seed("modality_dropout", tc.seed, progress.epoch, progress.batch_in_epoch)
            )
            keep = draw_stream_keep(tc.batch_size, n_streams, spec.modality_dropout, g)[rank_slice]
        last_micro = micro == tc.grad_accum - 1
        sync: contextlib.AbstractContextManager = contextlib.nullcontext()
        if isinstance(run.model, DistributedDataParallel) and not last_micro:
            sync = run.model.no_sync()  # gradients are all-reduced once, at the step's last micro-batch
        with sync:
            with autocast(run.device, run.amp_dtype):
                out = run.model(noisy, visual, keep)
            loss, _ = enhancement_loss(out["enhanced"], clean)
            run.scaler.scale(loss / tc.grad_accum).backward()
        progress.batch_in_epoch += 1
        loss_value = distributed.mean_over_ranks(ctx, loss.detach().item())
        progress.loss_sum += loss_value
        progress.loss_count += 1
        samples += noisy.shape[0] * ctx.world_size
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.net.parameters(), tc.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    progress.step += 1
    return loss_value, samples


def _end_of_epoch(run: _Run, samples_per_s: float) -> None:
    """Move the counters to the next epoch when this step used the epoch's last micro-batch."""
    progress = run.progress
    if progress.batch_in_epoch != run.sampler.batches_per_epoch:
        return
    if run.ctx.is_main:
        # DEBUG: the progress lines carry the rate; on a small corpus epochs take seconds.
        log.debug(
            "%s: epoch %d done at step %d, %.1f samples/s", run.variant, progress.epoch, progress.step, samples_per_s
        )
    progress.epoch += 1
    progress.batch_in_epoch = 0


def _save_or_preempt(run: _Run, stop: StopRequest) -> None:
    """Save the resumable state every ``train.checkpoint_every`` steps (not at the end: the run's
    outputs follow at once) and when a stop signal reached any rank; after a stop, raise Preempted."""
    ctx, progress, tc = run.ctx, run.progress, run.cfg.train
    done = progress.step >= tc.max_steps or progress.stopped_early
    stopping = distributed.any_rank(ctx, stop.requested is not None)
    if ctx.is_main and (stopping or (progress.step % tc.checkpoint_every == 0 and not done)):
        save_state(
            run.state_path,
            model=run.net,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            scaler=run.scaler,
            progress=progress,
            best_weights=run.best_weights,
        )
    if stopping:
        distributed.barrier(ctx)  # every rank leaves after the state is on disk
        signame = stop.requested or "stop on another rank"
        if ctx.is_main:
            log.warning(
                "%s: %s received; state saved at step %d to %s, exiting for requeue",
                run.variant,
                signame,
                progress.step,
                run.state_path,
            )
        raise Preempted(signame)


def _finish_run(run: _Run) -> dict:
    """Rank 0 at the end: the DVC outputs, the dvclive summary, the resumable state removed."""
    cfg, variant = run.cfg, run.variant
    summary = finish(cfg, variant, run.net, run.best_weights, run.progress, run.counts, run.ctx.world_size)
    run.live.summary = {k: summary["best"][k] for k in LIVE_SUMMARY}  # the curves keep every other figure
    run.live.make_summary()
    shutil.rmtree(run.state_path.parent, ignore_errors=True)
    best = summary["best"]
    log.info(
        "%s done: %d steps%s; best validation speech-active SI-SNRi %.2f dB (SI-SNRi %.2f dB) at step %d -> %s",
        variant,
        summary["steps"],
        ", early stop" if summary["stopped_early"] else "",
        best.get(SELECTION_METRIC, float("nan")),
        best.get("si_snri", float("nan")),
        summary["best_step"],
        Path(cfg.train.out_dir) / variant / "best.pt",
    )
    return summary


def _validate_and_track(run: _Run) -> None:
    """Validate (rank 0), log the curves, keep the best weights by :data:`SELECTION_METRIC` (rank 0),
    decide early stop."""
    ctx, progress, live, variant = run.ctx, run.progress, run.live, run.variant
    metrics = None
    if ctx.is_main:
        metrics = validate(run.net, run.val_loader, run.device, run.amp_dtype)
        metrics["train_loss"] = progress.loss_sum / max(1, progress.loss_count)
        metrics["lr"] = run.optimizer.param_groups[0]["lr"]
    metrics = distributed.from_main(ctx, metrics)
    progress.loss_sum, progress.loss_count = 0.0, 0
    improved = metrics[SELECTION_METRIC] > progress.best_metric
    if improved:
        progress.best_metric, progress.best_step = metrics[SELECTION_METRIC], progress.step
        progress.evals_without_improvement = 0
        if ctx.is_main:
            run.best_weights = {k: v.detach().cpu().clone() for k, v in run.net.state_dict().items()}
    else:
        progress.evals_without_improvement += 1
    progress.history.append({"step": progress.step, **metrics})
    if live is not None:
        live.step = progress.step
        for k, v in metrics.items():
            live.log_metric(("train/" if k in ("train_loss", "lr") else "val/") + k, v)
        live.next_step()
        log.info(
            "%s step %d: val SI-SNRi %.2f dB, speech-active %.2f dB%s, silence %.1f dB; train loss %.3f",
            variant,
            progress.step,
            metrics["si_snri"],
            metrics["si_snri_active"],
            " (best so far)" if improved else f" (best {progress.best_metric:.2f} at step {progress.best_step})",
            metrics["silence_atten_db"],
            metrics["train_loss"],
        )
    if progress.evals_without_improvement >= run.cfg.train.patience:
        progress.stopped_early = True
        if ctx.is_main:
            log.info("%s: early stop at step %d (best step %d)", variant, progress.step, progress.best_step)


def drop_rows_after(curves_dir: Path, step: int) -> None:
    """Remove the rows past ``step`` from every dvclive curve (``*.tsv``) under ``curves_dir``.

    A run killed without saving (SIGKILL, node failure) may have logged validations after its
    last saved state; resuming from that state logs them again, so the old rows must go.
    """
    for tsv in sorted(curves_dir.rglob("*.tsv")):
        header, *rows = tsv.read_text().splitlines()
        col = header.split("\t").index("step")
        keep = [r for r in rows if int(r.split("\t")[col]) <= step]
        if len(keep) < len(rows):
            log.warning(
                "%s: dropping %d row(s) logged after the saved state (step %d)", tsv, len(rows) - len(keep), step
            )
            with atomic_path(tsv) as tmp:
                tmp.write_text("\n".join([header, *keep]) + "\n")


def staged_inputs(cfg: Config, ctx: distributed.DistContext) -> dict[str, Path]:
    """The ingest and noise folders to read: copies on node-local disk when ``$TAVSE_STAGE_DIR`` is set.

    Local rank 0 copies (or reuses an identical earlier copy); the other ranks wait for it.
    """
    sources = {"ingest": Path(cfg.ingest.out_dir), "noise": Path(cfg.noise.out_dir)}
    root = staging_root()
    if root is None:
        return sources
    if ctx.local_rank == 0:
        staged = {k: stage_copy(v, root) for k, v in sources.items()}
    distributed.barrier(ctx)
    if ctx.local_rank != 0:
        staged = {k: stage_copy(v, root, copy=False) for k, v in sources.items()}
    return staged


def trained_config(cfg: Config, variant: str) -> dict:
    """The params a trained model depends on (all declared by train@ in dvc.yaml), stored in best.pt."""
    return {
        "model": dataclasses.asdict(cfg.model),
        "variant": dataclasses.asdict(cfg.variants[variant]),
        "train": dataclasses.asdict(cfg.train),
        "mix": dataclasses.asdict(cfg.mix),
        "ingest": {k: getattr(cfg.ingest, k) for k in IngestConfig.MODEL_INPUT_KEYS},
    }


def finish(
    cfg: Config,
    variant: str,
    model: TAVSE,
    best_weights: dict | None,
    progress: Progress,
    counts: dict,
    world_size: int = 1,
) -> dict:
    """Write the best model and the summary (atomically)."""
    out = Path(cfg.train.out_dir) / variant
    best = next((h for h in progress.history if h["step"] == progress.best_step), {})
    summary = {
        "variant": variant,
        "modalities": cfg.variants[variant].streams,
        "steps": progress.step,
        "best_step": progress.best_step,
        "stopped_early": progress.stopped_early,
        "best": best,
        "parameters": counts,
        "seed": cfg.train.seed,
        "data": data_hashes(cfg),
        "params_hash": run_key(cfg, variant),
        "processes": world_size,
    }
    # canonical(): the same bytes whether the history row and best weights were made in this
    # process or restored from the resumable state (pickle memoises shared objects by identity).
    checkpoint = canonical(
        {
            "state_dict": best_weights if best_weights is not None else model.state_dict(),
            "variant": variant,
            "modalities": list(cfg.variants[variant].streams),
            "roi_size": cfg.ingest.roi_size,
            "config": trained_config(cfg, variant),
            "data_hashes": summary["data"],
            "best_step": progress.best_step,
            "val": {k: v for k, v in best.items() if isinstance(v, (int, float))},
        }
    )
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        torch.save(checkpoint, tmp / "best.pt")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
