"""Scoring systems on the frozen whole-utterance test mixtures (the ``evaluate@`` and ``reference`` stages).

A system maps a batch to its output per condition: a trained model (:class:`ModelSystem`, also
with each visual stream zeroed, for missing-modality robustness), the noisy input itself, or the
oracle ideal ratio mask (:func:`oracle_irm`). :func:`score` runs systems over ID-keyed mixtures in
chunks and returns per-item rows that keep every metric (a failed one as empty, with its reason),
so items pair up by ID downstream. Also the loading and inference :mod:`tavse.enhance` uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tavse.common.config import Config, ModelConfig, VariantConfig, section_from_dict
from tavse.common.progress import progress
from tavse.data.dataset import MixtureSet
from tavse.data.mixtures import Mixture
from tavse.evaluation.metrics import evaluate_items, input_row, metrics_row, worker_pool
from tavse.evaluation.results import rounded
from tavse.evaluation.samples import (
    speaker_of,
)
from tavse.models import TAVSE

log = logging.getLogger("tavse.evaluate")

CHUNK = 128  # items enhanced, then scored, at a time: bounds memory on the full corpus


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[TAVSE, dict]:
    """A trained model from its ``best.pt`` (safe ``weights_only`` load) and the checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = ckpt["config"]
    if "variant" not in config:
        raise ValueError(
            f"{path}: a checkpoint from before per-variant fusion settings (no config.variant): "
            "re-train it (dvc repro train@<variant>)"
        )
    model = TAVSE(
        section_from_dict(ModelConfig, config["model"], "model"),
        section_from_dict(VariantConfig, config["variant"], "variant"),
        ckpt["roi_size"],
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def conditions(modalities: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Evaluation conditions: all streams, then each visual stream zeroed in turn."""
    out: dict[str, tuple[str, ...]] = {"full": ()}
    for m in modalities:
        out[f"no_{m}"] = (m,)
    return out


@torch.no_grad()
def enhance_with_gates(model: TAVSE, noisy: torch.Tensor, visual: dict[str, torch.Tensor]) -> tuple[np.ndarray, dict]:
    """Enhance one whole utterance (full length in one pass); also its gate per visual stream
    (empty for models with fewer than two streams)."""
    out = model(noisy[None], {m: v[None] for m, v in visual.items()})
    return out["enhanced"][0].float().cpu().numpy(), {m: float(g[0]) for m, g in out["gates"].items()}


def enhance(model: TAVSE, noisy: torch.Tensor, visual: dict[str, torch.Tensor]) -> np.ndarray:
    """Enhance one whole utterance (full length in one pass)."""
    return enhance_with_gates(model, noisy, visual)[0]


def _meta(m: Mixture, system: str, condition: str) -> dict[str, Any]:
    return {
        "mix_id": m.mix_id,
        "utt_id": m.utt_id,
        "speaker": speaker_of(m.utt_id),
        "snr_db": m.snr_db,
        "noise_env": m.noise_env,
        "noise_kind": m.noise_kind,
        "system": system,
        "condition": condition,
    }


def _chunks(n: int) -> Iterator[range]:
    for start in range(0, n, CHUNK):
        yield range(start, min(n, start + CHUNK))


def oracle_irm(clean: np.ndarray, noisy: np.ndarray, n_fft: int, win_length: int, hop_length: int) -> np.ndarray:
    """The ideal-ratio-mask ceiling: sqrt(|S|^2 / (|S|^2 + |N|^2)) on the noisy STFT, noisy phase."""
    window = torch.hann_window(win_length, dtype=torch.float64)
    spec = lambda x: torch.stft(
        torch.from_numpy(x.astype(np.float64)), n_fft, hop_length, win_length, window, return_complex=True
    )
    s, y = spec(clean), spec(noisy)
    n = y - s
    mask = torch.sqrt(s.abs() ** 2 / (s.abs() ** 2 + n.abs() ** 2 + 1e-12))
    return torch.istft(mask * y, n_fft, hop_length, win_length, window, length=len(noisy)).numpy().astype(np.float32)


def score(cfg: Config, mixtures: list[Mixture], systems: dict[str, Any], desc: str) -> list[dict]:
    """Rows for every mixture x (system, condition); ``systems`` maps a name to a callable
    ``(batch) -> {condition: enhanced}``."""
    ds = MixtureSet(
        Path(cfg.ingest.out_dir) / "lmdb" / "test",
        cfg.noise.out_dir,
        mixtures,
        sorted({m for s in systems.values() for m in getattr(s, "modalities", ())}),
    )
    rows: list[dict] = []
    with worker_pool(cfg.evaluation.workers) as pool:  # one pool for all chunks: workers import torch once
        for chunk in _chunks(len(ds)):
            rows += _score_chunk(cfg, ds, mixtures, systems, chunk, desc, pool)
    return rows


def _score_chunk(
    cfg: Config, ds: MixtureSet, mixtures: list[Mixture], systems: dict[str, Any], chunk: range, desc: str, pool
) -> list[dict]:
    """Enhance one chunk of mixtures with every system, then score it (in parallel, input order kept).

    The noisy input's own scores (the floor of every improvement and delta) are computed once
    per mixture first and shared by all its systems and conditions.
    """
    pairs, items, metas = [], [], []
    for i in progress(chunk, desc=f"{desc}: enhance", unit="mix", leave=False):
        b = ds[i]
        clean, noisy = b["clean"].numpy(), b["noisy"].numpy()
        pairs.append((clean, noisy))
        for name, system in systems.items():
            for condition, est in system(b).items():
                items.append((len(pairs) - 1, est))
                metas.append(_meta(mixtures[i], name, condition))
    inputs = evaluate_items(pairs, input_row, cfg.evaluation.workers, f"{desc}: input scores", pool=pool)
    quads = [(*pairs[k], est, inputs[k]) for k, est in items]
    scored = evaluate_items(quads, metrics_row, cfg.evaluation.workers, f"{desc}: metrics", pool=pool)
    return [{**meta, **rounded(s)} for meta, s in zip(metas, scored)]


class ModelSystem:
    """A trained variant as a scoring system, with its missing-modality conditions; keeps the gate
    values of the full condition per mixture (``gates``)."""

    def __init__(self, model: TAVSE):
        self.model = model
        self.modalities = tuple(model.modalities)
        self.gates: dict[str, dict[str, float]] = {}

    def __call__(self, b: dict) -> dict[str, np.ndarray]:
        visual = {m: b[m] for m in self.modalities}
        out = {}
        for cond, zeroed in conditions(self.modalities).items():
            out[cond], gates = enhance_with_gates(
                self.model, b["noisy"], {m: torch.zeros_like(v) if m in zeroed else v for m, v in visual.items()}
            )
            if cond == "full" and gates:
                self.gates[b["mix_id"]] = gates
        return out
