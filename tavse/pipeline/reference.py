"""Stage ``reference``: the noisy input (floor) and the oracle ideal ratio mask (ceiling) on the test list.

Writes ``results/reference/``: per-item rows and summaries on the same ID-keyed mixtures as every
variant, and the listening samples (noisy, clean, oracle, mouth crops) the report page plays.
"""

from __future__ import annotations

from pathlib import Path

from tavse.common.config import STREAMS, Config
from tavse.common.io import atomic_path
from tavse.data.dataset import MixtureSet
from tavse.data.mixtures import Mixture, read_mixture_list
from tavse.evaluation.results import write_results
from tavse.evaluation.samples import (
    colour_range,
    flac_bytes,
    mouth_strip_png,
    playback_gain,
    sample_meta,
    select_samples,
    spectrogram_image,
    write_samples_json,
)
from tavse.evaluation.scoring import oracle_irm, score


def run(cfg: Config) -> dict:
    """The floor (noisy input) and ceiling (oracle IRM) on the same test list: ``results/reference/``."""
    mixtures = read_mixture_list(cfg.evaluation.test_mixtures)
    mc = cfg.model
    systems = {
        "noisy": lambda b: {"full": b["noisy"].numpy()},
        "oracle_irm": lambda b: {
            "full": oracle_irm(b["clean"].numpy(), b["noisy"].numpy(), mc.n_fft, mc.win_length, mc.hop_length)
        },
    }
    rows = score(cfg, mixtures, systems, "reference")
    out = Path(cfg.evaluation.out_dir) / "reference"
    headline = write_results(out, rows, cfg.seed, cfg.evaluation.bootstrap, snrs_db=cfg.evaluation.snrs_db)
    write_reference_samples(cfg, out / "samples", select_samples(mixtures, cfg.evaluation.samples))
    return headline


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
