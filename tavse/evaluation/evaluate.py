"""``test_mixtures``, ``evaluate@<variant>`` and ``reference``: metrics on frozen whole-utterance mixtures.

Every variant, every experiment and the reference rows (the noisy input itself and an oracle
ideal ratio mask) are scored on the same ID-keyed test list. Each multimodal variant is also
scored with each of its visual streams zeroed (missing-modality robustness). Per item rows
keep every metric, a failed one as empty with its reason, so items pair up by ID downstream.
Both stages also write listening samples of the same few mixtures (:mod:`tavse.evaluation.samples`);
``evaluate@`` writes the learned stream gates on the test mixtures (``gates.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tavse.common.config import STREAMS, Config, ModelConfig, VariantConfig, section_from_dict
from tavse.common.io import atomic_path, write_json
from tavse.common.progress import progress
from tavse.data.dataset import MixtureSet
from tavse.data.mixtures import Mixture, read_mixture_list
from tavse.evaluation.metrics import evaluate_items, input_row, metrics_row, worker_pool
from tavse.evaluation.results import rounded, write_results
from tavse.evaluation.samples import (
    colour_range,
    flac_bytes,
    mouth_strip_png,
    playback_gain,
    sample_meta,
    select_samples,
    speaker_of,
    spectrogram_image,
    write_samples_json,
)
from tavse.evaluation.stats import group_summary
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


def _score(cfg: Config, mixtures: list[Mixture], systems: dict[str, Any], desc: str) -> list[dict]:
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


def write_reference_samples(cfg: Config, out: Path, chosen: list[Mixture]) -> None:
    """``out`` (``results/reference/samples``): per chosen mixture the noisy input, clean target and
    oracle output (FLAC), their spectrograms and the RGB/thermal mouth-crop strip; ``samples.json``."""
    ds = MixtureSet(Path(cfg.ingest.out_dir) / "lmdb" / "test", cfg.noise.out_dir, chosen, STREAMS)
    mc = cfg.model
    entries = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for i, m in enumerate(chosen):
            b = ds[i]
            clean, noisy = b["clean"].numpy(), b["noisy"].numpy()
            sigs = {
                "noisy": noisy,
                "clean": clean,
                "oracle_irm": oracle_irm(clean, noisy, mc.n_fft, mc.win_length, mc.hop_length),
            }
            gain = playback_gain(noisy)
            audio = {}
            for name, x in sigs.items():
                audio[name] = f"{m.mix_id}_{name}.flac"
                (tmp / audio[name]).write_bytes(flac_bytes(x, gain))
            where = f"{m.mix_id}: {m.noise_env} ({m.noise_kind}) at {m.snr_db:+g} dB"
            (tmp / f"{m.mix_id}_spectrogram.png").write_bytes(
                spectrogram_image(
                    {"noisy input": noisy, "clean target": clean, "oracle IRM (ceiling)": sigs["oracle_irm"]},
                    f"reference, {where}",
                    colour_range(clean),
                )
            )
            (tmp / f"{m.mix_id}_mouth.png").write_bytes(
                mouth_strip_png(
                    b["rgb"].numpy(), b["thermal"].numpy(), cfg.ingest.fps, f"mouth crops of {m.utt_id} (RGB, thermal)"
                )
            )
            entries.append(
                {
                    **sample_meta(m, len(noisy)),
                    "gain": gain,
                    "audio": audio,
                    "mouth": f"{m.mix_id}_mouth.png",
                    "spectrogram": f"{m.mix_id}_spectrogram.png",
                }
            )
        write_samples_json(tmp, entries, fps=cfg.ingest.fps)


def write_variant_samples(out: Path, ds: MixtureSet, model: TAVSE, variant: str, chosen: list[Mixture]) -> None:
    """``out`` (``results/<variant>/samples``): the enhanced output (FLAC) of each chosen mixture, a
    spectrogram of it beside the noisy input and clean target, its gate values; ``samples.json``."""
    entries = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for i, m in enumerate(chosen):
            b = ds[i]
            est, gates = enhance_with_gates(model, b["noisy"], {s: b[s] for s in model.modalities})
            clean, noisy = b["clean"].numpy(), b["noisy"].numpy()
            gain = playback_gain(noisy)
            (tmp / f"{m.mix_id}_enhanced.flac").write_bytes(flac_bytes(est, gain))
            where = f"{m.mix_id}: {m.noise_env} ({m.noise_kind}) at {m.snr_db:+g} dB"
            (tmp / f"{m.mix_id}_spectrogram.png").write_bytes(
                spectrogram_image(
                    {"noisy input": noisy, "clean target": clean, f"{variant} (enhanced)": est},
                    f"{variant}, {where}",
                    colour_range(clean),
                )
            )
            entries.append(
                {
                    **sample_meta(m, len(noisy)),
                    "gain": gain,
                    "audio": {variant: f"{m.mix_id}_enhanced.flac"},
                    "spectrogram": f"{m.mix_id}_spectrogram.png",
                    "gates": gates,
                }
            )
        write_samples_json(tmp, entries, variant=variant)


def write_gates(
    path: Path, gates: dict[str, dict[str, float]], mixtures: list[Mixture], seed: int, n_boot: int
) -> None:
    """``gates.json``: the learned per-stream gate (0 closed, 1 open) on the test mixtures, overall,
    per input SNR and per noise kind (mean and 95 % CI), and per mixture (``items``); empty
    ``streams`` for a model without gates."""
    streams = sorted({s for g in gates.values() for s in g})
    rows = [{"snr_db": m.snr_db, "noise_kind": m.noise_kind, **gates.get(m.mix_id, {})} for m in mixtures]
    out: dict[str, Any] = {
        "streams": streams,
        "items": [{"mix_id": m.mix_id, **r} for m, r in zip(mixtures, rows)] if streams else [],
    }
    for s in streams:
        out[s] = {
            "overall": group_summary(rows, s, None, seed, n_boot)["all"],
            "by_snr": {f"{k:+g}": v for k, v in group_summary(rows, s, "snr_db", seed, n_boot).items()},
            "by_noise_kind": group_summary(rows, s, "noise_kind", seed, n_boot),
        }
    write_json(path, rounded(out))


def evaluate_variant(cfg: Config, variant: str) -> dict:
    """Score ``models/<variant>/best.pt`` on the test list; write ``results/<variant>/``."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, _ = load_model(Path(cfg.train.out_dir) / variant / "best.pt")
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    system = ModelSystem(model)
    rows = _score(cfg, mixtures, {variant: system}, variant)
    out = Path(cfg.evaluation.out_dir) / variant
    headline = write_results(
        out, rows, cfg.seed, cfg.evaluation.bootstrap, plot_system=variant, snrs_db=cfg.evaluation.snrs_db
    )
    write_gates(out / "gates.json", system.gates, mixtures, cfg.seed, cfg.evaluation.bootstrap)
    chosen = select_samples(mixtures, cfg.evaluation.samples)
    ds = MixtureSet(Path(cfg.ingest.out_dir) / "lmdb" / "test", cfg.noise.out_dir, chosen, model.modalities)
    write_variant_samples(out / "samples", ds, model, variant, chosen)
    return headline


def evaluate_reference(cfg: Config) -> dict:
    """The floor (noisy input) and ceiling (oracle IRM) on the same test list: ``results/reference/``."""
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    mc = cfg.model
    systems = {
        "noisy": lambda b: {"full": b["noisy"].numpy()},
        "oracle_irm": lambda b: {
            "full": oracle_irm(b["clean"].numpy(), b["noisy"].numpy(), mc.n_fft, mc.win_length, mc.hop_length)
        },
    }
    rows = _score(cfg, mixtures, systems, "reference")
    out = Path(cfg.evaluation.out_dir) / "reference"
    headline = write_results(out, rows, cfg.seed, cfg.evaluation.bootstrap, snrs_db=cfg.evaluation.snrs_db)
    write_reference_samples(cfg, out / "samples", select_samples(mixtures, cfg.evaluation.samples))
    return headline
