"""Stage ``evaluate@<variant>``: the trained variant on the frozen test mixtures.

Writes ``results/<variant>/``: per-item rows and summaries with CIs (every condition: all streams
and each visual stream zeroed), the learned stream gates (``gates.json``) and listening samples of
the same few mixtures as the reference (:mod:`tavse.evaluation.samples`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tavse.common.config import Config
from tavse.common.io import atomic_path, write_json
from tavse.data.dataset import MixtureSet
from tavse.data.mixtures import Mixture, read_mixture_list
from tavse.evaluation.results import rounded, write_results
from tavse.evaluation.samples import (
    colour_range,
    flac_bytes,
    playback_gain,
    sample_meta,
    select_samples,
    spectrogram_image,
    write_samples_json,
)
from tavse.evaluation.scoring import ModelSystem, enhance_with_gates, load_model, score
from tavse.evaluation.stats import group_summary
from tavse.models import TAVSE


def run(cfg: Config, variant: str) -> dict:
    """Score ``models/<variant>/best.pt`` on the test list; write ``results/<variant>/``."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, _ = load_model(Path(cfg.train.out_dir) / variant / "best.pt")
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    system = ModelSystem(model)
    rows = score(cfg, mixtures, {variant: system}, variant)
    out = Path(cfg.evaluation.out_dir) / variant
    headline = write_results(
        out, rows, cfg.seed, cfg.evaluation.bootstrap, plot_system=variant, snrs_db=cfg.evaluation.snrs_db
    )
    write_gates(out / "gates.json", system.gates, mixtures, cfg.seed, cfg.evaluation.bootstrap)
    chosen = select_samples(mixtures, cfg.evaluation.samples)
    ds = MixtureSet(Path(cfg.ingest.out_dir) / "lmdb" / "test", cfg.noise.out_dir, chosen, model.modalities)
    write_variant_samples(out / "samples", ds, model, variant, chosen)
    return headline


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
