"""The full resumable training state, saved atomically outside DVC's outputs.

Everything that decides the rest of the run is here: model, optimiser, scheduler and scaler
states, every RNG, the step and the position inside the epoch, early-stopping bookkeeping and
the best weights so far. Restoring it continues the run bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from tavse.common.io import atomic_path


@dataclass
class Progress:
    """Counters and early-stopping bookkeeping (plain data, saved with the state)."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    best_metric: float = float("-inf")
    best_step: int = -1
    evals_without_improvement: int = 0
    stopped_early: bool = False
    loss_sum: float = 0.0  # training loss summed since the last validation
    loss_count: int = 0
    history: list[dict] = field(default_factory=list)  # one row per validation


def canonical(obj):
    """A copy of ``obj`` whose pickle depends only on its content, not on where its objects came from.

    Pickle memoises by identity: an object met twice is written once and then referenced, so the
    bytes depend on which parts of the graph are the *same* object. That differs between objects
    built in this process (identifiers and literals are interned: the key ``"lr"`` of a metrics row
    is the very string that names the config field ``lr``) and the same values restored through
    ``torch.load`` (one fresh object per pickled string). A resumed run would then write a model
    file with equal tensors and values but other bytes, and another DVC hash.

    The copy is a tree: every dict (any mapping becomes a plain dict, order kept), list and tuple
    is new and every string is a new object shared with nothing (except the empty and one-character
    strings, which CPython keeps as singletons in every process). Numbers, booleans and None are
    pickled by value (subclasses such as ``numpy.float64`` become plain numbers); tensors are kept
    as they are (``torch.save`` keys them by storage). Any other type is refused: it could not be
    loaded with ``weights_only=True`` anyway.
    """
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (bool, int, float):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):  # e.g. numpy.float64: as the plain number
        return int(obj) if isinstance(obj, int) else float(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    raise TypeError(f"canonical: unsupported type {type(obj).__name__} in a saved output")


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so the file loads with ``weights_only=True``."""
    version, words, gauss = random.getstate()
    # legacy=True, the default, gives this tuple; numpy's stubs pick the dict overload for a call without arguments
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]))
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    path: Path, *, model, optimizer, scheduler, scaler, progress: Progress, best_weights: dict | None
) -> None:
    """Write the state to ``path`` atomically (a killed save leaves the previous one intact)."""
    blob = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "progress": asdict(progress),
        "best_weights": best_weights,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_state(path: Path, *, model, optimizer, scheduler, scaler) -> tuple[Progress, dict | None]:
    """Restore everything saved by :func:`save_state`; returns the progress and the best weights."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob["scaler"] is not None:
        scaler.load_state_dict(blob["scaler"])
    set_rng_state(blob["rng"])
    return Progress(**blob["progress"]), blob["best_weights"]
