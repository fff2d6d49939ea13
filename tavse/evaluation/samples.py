"""Listening samples: which test mixtures a person hears, and the files made of them.

:func:`select_samples` spreads a few test mixtures over speakers, input SNRs, noise kinds and
environments (the same mixtures for every variant: it depends only on the frozen test list).
The ``reference`` stage writes, per sample, the noisy input, the clean target and the oracle
output as 16-bit FLAC (lossless, about half a WAV's size) with a strip of the RGB and thermal
mouth crops; each ``evaluate@<variant>`` writes its enhanced output of the same mixtures. The
``report`` stage embeds them all in ``results/report.html``.

Light on purpose (numpy, soundfile, matplotlib): the ``report`` stage renders with it too.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tavse.common.rates import SAMPLE_RATE

SAMPLES_JSON = "samples.json"
PEAK = 0.99  # playback gain: the noisy input's peak is brought to at most this
STRIP_FRAMES = 8  # mouth crops shown per sample, evenly spread over the utterance
# What spreads the samples, in the order ties are broken (the utterance last: two mixtures of
# one utterance are only both chosen once every utterance has one).
FACETS = ("speaker", "snr_db", "noise_kind", "noise_env", "utt_id")


def speaker_of(utt_id: str) -> int:
    """The speaker number of an utterance ID (``s121_t1_p1_c0042`` -> 121)."""
    return int(utt_id.split("_")[0][1:])


def _facets(m: Any) -> tuple:
    return (speaker_of(m.utt_id), m.snr_db, m.noise_kind, m.noise_env, m.utt_id)


def select_samples(mixtures: Sequence[Any], n: int) -> list[Any]:
    """``n`` mixtures (all when fewer) spread as evenly as possible over :data:`FACETS`.

    Greedy and deterministic: each pick is the mixture whose speaker, SNR, noise kind,
    environment and utterance have been picked least often so far (summed, then facet by
    facet, then by mix ID). Returned by input SNR, then speaker, environment and mix ID.
    """
    pool = sorted(mixtures, key=lambda m: m.mix_id)
    used: list[Counter] = [Counter() for _ in FACETS]
    chosen: list[Any] = []
    while pool and len(chosen) < n:

        def cost(m: Any) -> tuple:
            counts = [c[v] for c, v in zip(used, _facets(m))]
            return (sum(counts), *counts, m.mix_id)

        pick = min(pool, key=cost)
        pool.remove(pick)
        chosen.append(pick)
        for c, v in zip(used, _facets(pick)):
            c[v] += 1
    return sorted(chosen, key=lambda m: (m.snr_db, speaker_of(m.utt_id), m.noise_env, m.mix_id))


def sample_meta(m: Any, n_samples: int) -> dict[str, Any]:
    """What a person reads beside a sample (and what the report checks every variant agrees on)."""
    return {
        "mix_id": m.mix_id,
        "utt_id": m.utt_id,
        "speaker": speaker_of(m.utt_id),
        "snr_db": m.snr_db,
        "noise_env": m.noise_env,
        "noise_kind": m.noise_kind,
        "duration_s": round(n_samples / SAMPLE_RATE, 4),
    }


def playback_gain(noisy: np.ndarray) -> float:
    """The gain that keeps a mixture's noisy input unclipped (1 unless its peak exceeds PEAK);
    applied to every signal of the mixture so that their levels stay comparable."""
    peak = float(np.max(np.abs(noisy))) if noisy.size else 0.0
    return 1.0 if peak <= PEAK else float(f"{PEAK / peak:.6g}")


def flac_bytes(x: np.ndarray, gain: float = 1.0) -> bytes:
    """Mono float samples, scaled by ``gain`` and clipped to [-1, 1], as 16-bit FLAC at 16 kHz."""
    buf = io.BytesIO()
    sf.write(
        buf, np.clip(np.asarray(x, dtype=np.float64) * gain, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16"
    )
    return buf.getvalue()


def read_audio(data: bytes | str | Path) -> np.ndarray:
    """Samples (float32) of a FLAC/WAV given as bytes or a path; a file at another rate is an error."""
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    x, rate = sf.read(src, dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{data if not isinstance(data, bytes) else 'audio'}: {rate} Hz, expected {SAMPLE_RATE}")
    return x


# ----------------------------------------------------------------------------- figures

FLOOR_DB = -120.0  # silence: the log of zero would be -inf (and a divide-by-zero warning)
RANGE_DB = 80.0  # colour scale: from this far below the loudest bin of the clean target


def spectrogram_db(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Level (dB re full scale: a full-scale sine reads 0 dB) per (frequency, frame), Hann window,
    floored at FLOOR_DB."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    win = np.hanning(n_fft)
    n_frames = 1 + (x.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames] * win
    mag = np.abs(np.fft.rfft(frames, axis=1)).T / (win.sum() / 2)
    return 20 * np.log10(np.maximum(mag, 10 ** (FLOOR_DB / 20)))


def colour_range(reference: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) for a sample's spectrograms: the clean target's loudest bin (rounded up to 5 dB)
    and RANGE_DB below it, the same for every system of the sample."""
    top = float(np.ceil(spectrogram_db(reference).max() / 5) * 5)
    return top - RANGE_DB, top


def _image(fig, fmt: str = "png") -> bytes:
    """The figure's bytes: PNG without metadata, or JPEG (quality 80: a spectrogram's texture costs
    a PNG three times the bytes); both the same bytes for the same figure."""
    buf = io.BytesIO()
    if fmt == "png":
        fig.savefig(buf, format="png", metadata={"Software": None})
    elif fmt == "jpeg":
        fig.savefig(buf, format="jpeg", pil_kwargs={"quality": 80, "optimize": True})
    else:
        raise ValueError(f"image format {fmt!r}: expected png or jpeg")
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrogram_image(
    signals: Mapping[str, np.ndarray],
    title: str,
    vlim: tuple[float, float],
    *,
    width_in: float = 7.0,
    row_in: float = 1.55,
    dpi: int = 80,
    fmt: str = "png",
) -> bytes:
    """One labelled spectrogram per entry of ``signals`` (label -> samples at 16 kHz), stacked,
    on one colour scale ``vlim`` (dB) with its colour bar; time in s, frequency in kHz; as PNG or JPEG.
    ``title`` (over all rows) may be empty."""
    plt = _pyplot()
    n = len(signals)
    fig, axes = plt.subplots(
        n, 1, figsize=(width_in, 0.55 + row_in * n), sharex=True, squeeze=False, layout="constrained", dpi=dpi
    )
    im = None
    for ax, (label, x) in zip(axes[:, 0], signals.items()):
        s = spectrogram_db(x)
        im = ax.imshow(
            s,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vlim[0],
            vmax=vlim[1],
            extent=(0, len(x) / SAMPLE_RATE, 0, SAMPLE_RATE / 2000),
            interpolation="nearest",
        )
        ax.set_ylabel("frequency (kHz)", fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    bar = fig.colorbar(im, ax=axes[:, 0].tolist(), pad=0.01, aspect=12 * n)
    bar.set_label("level (dB re full scale)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    data = _image(fig, fmt)
    plt.close(fig)
    return data


def mouth_strip_png(rgb: np.ndarray, thermal: np.ndarray, fps: float, title: str, n: int = STRIP_FRAMES) -> bytes:
    """The RGB (T, 3, S, S) and thermal (T, 1, S, S) mouth crops (values in [0, 1]) of ``n`` frames
    evenly spread over the utterance, one row each, every column labelled with its time."""
    plt = _pyplot()
    t = rgb.shape[0]
    if thermal.shape[0] != t:
        raise ValueError(f"{title}: {t} RGB frames but {thermal.shape[0]} thermal frames")
    idx = np.unique(np.linspace(0, t - 1, min(n, t)).round().astype(int))
    fig, axes = plt.subplots(
        2, len(idx), figsize=(0.95 * len(idx) + 0.6, 2.45), squeeze=False, layout="constrained", dpi=80
    )
    for col, k in enumerate(idx):
        axes[0, col].imshow(np.clip(rgb[k].transpose(1, 2, 0), 0, 1), interpolation="nearest")
        axes[1, col].imshow(thermal[k, 0], cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        axes[0, col].set_title(f"{k / fps:.2f} s", fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("RGB", fontsize=8)
    axes[1, 0].set_ylabel("thermal", fontsize=8)
    fig.suptitle(title, fontsize=8)
    data = _image(fig)
    plt.close(fig)
    return data


def write_samples_json(folder: Path, samples: list[dict], **extra: Any) -> None:
    (folder / SAMPLES_JSON).write_text(
        json.dumps({"sample_rate": SAMPLE_RATE, **extra, "samples": samples}, indent=2, sort_keys=True) + "\n"
    )


def read_samples_json(folder: str | Path) -> dict:
    """``samples.json`` of a samples folder, with a clear error when it is missing or malformed."""
    path = Path(folder) / SAMPLES_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (the reference / evaluate@ stage writes it)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise ValueError(f"{path}: expected an object with a 'samples' list")
    return data
