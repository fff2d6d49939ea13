"""Data-parallel training within one node: one process per GPU (or per CPU share), same result as one.

A run with ``N`` processes splits every global batch of ``train.batch_size`` samples into ``N``
equal slices (the effective batch does not change with the GPU count), averages gradients with
:class:`~torch.nn.parallel.DistributedDataParallel`, and normalises with batch statistics taken
over the whole global batch (:class:`CrossRankBatchNorm2d`), so it computes the single-process
run up to floating-point summation order.

Processes find each other through the environment variables ``torchrun`` sets (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): :func:`launch` sets them the
same way, so a stage started by ``torchrun --nproc-per-node N -m stages.train VARIANT`` works too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from tavse.training.signals import EXIT_PREEMPTED, STOP_SIGNALS

log = logging.getLogger("tavse.train")

NPROC_ENV = "TAVSE_NPROC_PER_NODE"  # processes per node: an integer, or "auto" (one per visible GPU)
_KILL_GRACE_S = 20.0  # after one rank fails, how long the others get before SIGKILL


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0 does the I/O: state files, curves, outputs, progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rank_slice(self, global_batch: int) -> slice:
        """This rank's part of a global batch (consecutive samples, equal parts)."""
        per_rank = local_batch_size(global_batch, self.world_size)
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Samples per process; the global batch must split evenly (ValueError naming the knob otherwise)."""
    if global_batch % world_size:
        raise ValueError(
            f"train.batch_size {global_batch} does not split evenly over {world_size} processes: "
            f"use a multiple of {world_size} (the effective batch is the same for any process count)"
        )
    return global_batch // world_size


def procs_per_node() -> int:
    """Processes to start: ``$TAVSE_NPROC_PER_NODE`` if set to a number, else one per visible GPU (at least 1)."""
    raw = os.environ.get(NPROC_ENV, "auto").strip() or "auto"
    if raw == "auto":
        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"${NPROC_ENV}={raw!r}: expected a positive integer or 'auto'") from None
    if n < 1:
        raise ValueError(f"${NPROC_ENV}={raw!r}: expected a positive integer or 'auto'")
    return n


def in_worker() -> bool:
    """True inside a process started by :func:`launch` or ``torchrun``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup() -> DistContext:
    """Join the process group described by the environment (nothing to do for a single process).

    NCCL with one GPU per process when CUDA is available, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world == 1:
        return DistContext(device=device)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=device if cuda else None)
    log.info("rank %d of %d (%s, %s)", rank, world, backend, device)
    return DistContext(rank, world, local_rank, device, backend)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def mean_over_ranks(ctx: DistContext, value: float) -> float:
    """The mean of a per-rank number over all ranks (the number itself for one process)."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop at the same step)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the samples of every rank.

    Same parameters, buffers and state-dict keys as :class:`~torch.nn.BatchNorm2d` (checkpoints
    load in either). Unlike ``torch.nn.SyncBatchNorm`` it runs on any device and backend (gloo on
    CPU included): the sums go through autograd-aware all-reduces, whose backward sums the
    gradients of the statistics over ranks. Mean first, then the centred sum of squares, as a
    numerically stable two-pass variance. Half-precision inputs (autocast) get float32 statistics.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if x.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) input, got {tuple(x.shape)}")
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        count = torch.tensor([float(xf.numel() // xf.shape[1])], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = count.item()
        mean = dist_fn.all_reduce(xf.sum(dim=(0, 2, 3))) / n
        centred = xf - mean.view(1, -1, 1, 1)
        var = dist_fn.all_reduce(centred.square().sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            # BatchNorm registers these buffers exactly when it tracks running statistics.
            assert self.num_batches_tracked is not None
            assert self.running_mean is not None and self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def cross_rank_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d turned into a :class:`CrossRankBatchNorm2d` (in place, same tensors)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
                device=None,
                dtype=None,
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            if child.affine:  # keep the very Parameter objects (an optimiser may already hold them)
                new.weight, new.bias = child.weight, child.bias
            setattr(module, name, new)
        else:
            cross_rank_batchnorm(child)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    """Run ``argv`` as ``nproc`` ranks on this node and return the run's exit status.

    Each child gets ``torchrun``'s environment variables, and ``OMP_NUM_THREADS`` set to its
    share of the CPU threads (``$OMP_NUM_THREADS``, else the CPUs this process may use). SIGUSR1, SIGTERM
    and SIGINT are forwarded to every rank (a Ctrl-C in the terminal reaches the ranks directly as well;
    :class:`~tavse.training.signals.StopRequest` counts the two as one). If a
    rank fails, the others are stopped (SIGTERM, then SIGKILL after a grace period). Status: 0
    when all succeed, :data:`~tavse.training.signals.EXIT_PREEMPTED` when the ranks saved and
    stopped, else the status of the rank that failed first.
    """
    port = _free_port()
    cpus = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    threads = str(max(1, cpus // nproc))
    procs: list[subprocess.Popen] = []
    for rank in range(nproc):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(nproc),
            LOCAL_WORLD_SIZE=str(nproc),
            GROUP_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS=threads,
        )
        procs.append(subprocess.Popen(argv, env=env))
    log.info("started %d ranks (pids %s, port %d)", nproc, [p.pid for p in procs], port)

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    first_failure: int | None = None  # the status of the rank that failed first, not of those stopped after it
    try:
        failed_at: float | None = None
        while any(p.poll() is None for p in procs):
            codes = [p.poll() for p in procs]
            if failed_at is None and any(c not in (None, 0, EXIT_PREEMPTED) for c in codes):
                failed_at = time.monotonic()
                first_failure = next(c for c in codes if c not in (None, 0, EXIT_PREEMPTED))
                log.error("a rank failed (exit codes %s): stopping the others", codes)
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            if failed_at is not None and time.monotonic() - failed_at > _KILL_GRACE_S:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    exit_codes = [p.returncode for p in procs]
    bad = [c for c in exit_codes if c not in (0, EXIT_PREEMPTED)]
    if bad:
        status = first_failure if first_failure is not None else bad[0]
        return status if status > 0 else 128 - status  # a rank killed by signal k: 128 + k, like a shell
    return EXIT_PREEMPTED if EXIT_PREEMPTED in exit_codes else 0


def main_or_launch(run: Callable[[], Any], argv: list[str]) -> None:
    """``run()`` here when this is a rank or one process per node is wanted; else launch ``argv`` as the ranks.

    ``argv`` is the command that starts this same entry point (it runs ``run()`` in each rank).
    """
    if in_worker() or procs_per_node() == 1:
        run()
        return
    sys.exit(launch(argv, procs_per_node()))
