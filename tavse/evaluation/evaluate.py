"""``test_mixtures``, ``evaluate@<variant>`` and ``reference``: metrics on frozen whole-utterance mixtures.

Every variant, every experiment and the reference rows (the noisy input itself and an oracle
ideal ratio mask) are scored on the same ID-keyed test list. Each multimodal variant is also
scored with each of its visual streams zeroed (missing-modality robustness). Per item rows
keep every metric, a failed one as empty with its reason, so items pair up by ID downstream.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from tavse.common.config import Config, ModelConfig, section_from_dict
from tavse.common.progress import progress
from tavse.data.dataset import MixtureSet
from tavse.data.mixtures import (Mixture, read_mixture_list)
from tavse.evaluation.metrics import evaluate_items, input_row, metrics_row, worker_pool
from tavse.evaluation.results import rounded, write_results
from tavse.common.io import atomic_path, wav_bytes
from tavse.models import TAVSE

log = logging.getLogger("tavse.evaluate")

SAMPLE_RATE = 16000
CHUNK = 128  # items enhanced, then scored, at a time: bounds memory on the full corpus
def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[TAVSE, dict]:
    """A trained model from its ``best.pt`` (safe ``weights_only`` load) and the checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = TAVSE(section_from_dict(ModelConfig, ckpt["config"]["model"], "model"), ckpt["modalities"], ckpt["roi_size"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def conditions(modalities: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Evaluation conditions: all streams, then each visual stream zeroed in turn."""
    out: dict[str, tuple[str, ...]] = {"full": ()}
    for m in modalities:
        out[f"no_{m}"] = (m,)
    return out


@torch.no_grad()
def enhance(model: TAVSE, noisy: torch.Tensor, visual: dict[str, torch.Tensor]) -> np.ndarray:
    """Enhance one whole utterance (full length in one pass)."""
    out = model(noisy[None], {m: v[None] for m, v in visual.items()})
    return out["enhanced"][0].float().cpu().numpy()


def _speaker(utt_id: str) -> int:
    return int(utt_id.split("_")[0][1:])


def _meta(m: Mixture, system: str, condition: str) -> dict[str, Any]:
    return {"mix_id": m.mix_id, "utt_id": m.utt_id, "speaker": _speaker(m.utt_id), "snr_db": m.snr_db,
            "noise_env": m.noise_env, "noise_kind": m.noise_kind, "system": system, "condition": condition}


def _chunks(n: int) -> Iterator[range]:
    for start in range(0, n, CHUNK):
        yield range(start, min(n, start + CHUNK))


def oracle_irm(clean: np.ndarray, noisy: np.ndarray, n_fft: int, win_length: int, hop_length: int) -> np.ndarray:
    """The ideal-ratio-mask ceiling: sqrt(|S|^2 / (|S|^2 + |N|^2)) on the noisy STFT, noisy phase."""
    window = torch.hann_window(win_length, dtype=torch.float64)
    spec = lambda x: torch.stft(torch.from_numpy(x.astype(np.float64)), n_fft, hop_length, win_length, window,
                                return_complex=True)
    s, y = spec(clean), spec(noisy)
    n = y - s
    mask = torch.sqrt(s.abs() ** 2 / (s.abs() ** 2 + n.abs() ** 2 + 1e-12))
    return torch.istft(mask * y, n_fft, hop_length, win_length, window, length=len(noisy)).numpy().astype(np.float32)


def _score(cfg: Config, mixtures: list[Mixture], systems: dict[str, Any], desc: str) -> list[dict]:
    """Rows for every mixture x (system, condition); ``systems`` maps a name to a callable
    ``(batch) -> {condition: enhanced}``."""
    ds = MixtureSet(Path(cfg.ingest.out_dir) / "lmdb" / "test", cfg.noise.out_dir, mixtures,
                    sorted({m for s in systems.values() for m in getattr(s, "modalities", ())}))
    rows: list[dict] = []
    with worker_pool(cfg.evaluation.workers) as pool:  # one pool for all chunks: workers import torch once
        for chunk in _chunks(len(ds)):
            rows += _score_chunk(cfg, ds, mixtures, systems, chunk, desc, pool)
    return rows


def _score_chunk(cfg: Config, ds: MixtureSet, mixtures: list[Mixture], systems: dict[str, Any], chunk: range,
                 desc: str, pool) -> list[dict]:
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
    """A trained variant as a scoring system, with its missing-modality conditions."""

    def __init__(self, model: TAVSE):
        self.model = model
        self.modalities = tuple(model.modalities)

    def __call__(self, b: dict) -> dict[str, np.ndarray]:
        visual = {m: b[m] for m in self.modalities}
        return {cond: enhance(self.model, b["noisy"], {m: torch.zeros_like(v) if m in zeroed else v for m, v in visual.items()})
                for cond, zeroed in conditions(self.modalities).items()}


def write_samples(out: Path, ds: MixtureSet, model: TAVSE, mixtures: list[Mixture], n: int) -> None:
    """WAVs (clean, noisy, enhanced) and a spectrogram image for ``n`` lowest-SNR items."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(mixtures)), key=lambda i: (mixtures[i].snr_db, mixtures[i].mix_id))[:n]
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for i in order:
            b = ds[i]
            est = enhance(model, b["noisy"], {m: b[m] for m in model.modalities})
            sigs = {"clean": b["clean"].numpy(), "noisy": b["noisy"].numpy(), "enhanced": est}
            mid = mixtures[i].mix_id
            fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
            for ax, (name, x) in zip(axes, sigs.items()):
                (tmp / f"{mid}_{name}.wav").write_bytes(wav_bytes(np.clip(x, -1, 1), SAMPLE_RATE))
                ax.specgram(x, NFFT=512, Fs=SAMPLE_RATE, noverlap=352, cmap="magma", vmin=-120)
                ax.set_ylabel(f"{name}\nHz")
            axes[0].set_title(f"{mid}: {mixtures[i].noise_env} at {mixtures[i].snr_db:+g} dB")
            axes[-1].set_xlabel("s")
            fig.tight_layout()
            fig.savefig(tmp / f"{mid}_spectrogram.png", dpi=80, metadata={"Software": None})
            plt.close(fig)


def evaluate_variant(cfg: Config, variant: str) -> dict:
    """Score ``models/<variant>/best.pt`` on the test list; write ``results/<variant>/``."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, _ = load_model(Path(cfg.train.out_dir) / variant / "best.pt")
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    rows = _score(cfg, mixtures, {variant: ModelSystem(model)}, variant)
    out = Path(cfg.evaluation.out_dir) / variant
    headline = write_results(out, rows, cfg.seed, cfg.evaluation.bootstrap, plot_system=variant,
                             snrs_db=cfg.evaluation.snrs_db)
    ds = MixtureSet(Path(cfg.ingest.out_dir) / "lmdb" / "test", cfg.noise.out_dir, mixtures, model.modalities)
    write_samples(out / "samples", ds, model, mixtures, cfg.evaluation.samples)
    return headline


def evaluate_reference(cfg: Config) -> dict:
    """The floor (noisy input) and ceiling (oracle IRM) on the same test list: ``results/reference/``."""
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    mc = cfg.model
    systems = {
        "noisy": lambda b: {"full": b["noisy"].numpy()},
        "oracle_irm": lambda b: {"full": oracle_irm(b["clean"].numpy(), b["noisy"].numpy(), mc.n_fft, mc.win_length,
                                                    mc.hop_length)},
    }
    rows = _score(cfg, mixtures, systems, "reference")
    return write_results(Path(cfg.evaluation.out_dir) / "reference", rows, cfg.seed, cfg.evaluation.bootstrap,
                         snrs_db=cfg.evaluation.snrs_db)
