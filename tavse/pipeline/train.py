"""Stage ``train@<variant>``: train one variant of params.yaml ``variants`` (:mod:`tavse.training.loop`).

With several GPUs visible (``--gres=gpu:N``) or ``$TAVSE_NPROC_PER_NODE`` > 1 the stage starts
one data-parallel rank per GPU (gloo ranks on CPU) with the same effective batch: each rank runs
``python -m stages.train <variant>`` again, which lands here as that rank.
"""

from __future__ import annotations

import sys

from tavse.common.config import Config
from tavse.training.distributed import main_or_launch
from tavse.training.loop import train_variant


def run(cfg: Config, variant: str) -> None:
    """Train ``variant`` here (one process, or this rank), or launch the ranks and wait for them."""
    main_or_launch(lambda: train_variant(cfg, variant), [sys.executable, "-m", "stages.train", variant])
