"""Audio signal helpers: resampling, per-video-frame loudness, mixing at an SNR."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) from ``sr_in`` to ``sr_out``; float32 out."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    g = gcd(sr_in, sr_out)
    return resample_poly(x.astype(np.float64), sr_out // g, sr_in // g).astype(np.float32)


def frame_bounds(n_frames: int, sample_rate: int, fps: int) -> np.ndarray:
    """Sample index where each video frame starts, plus the end: frame f covers [f/fps, (f+1)/fps) s."""
    return np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(np.int64)


def frame_loudness_db(
    audio: np.ndarray, sample_rate: int, fps: int, n_frames: int, floor_db: float = -80.0
) -> np.ndarray:
    """RMS level in dBFS of the audio under each of ``n_frames`` video frames."""
    b = frame_bounds(n_frames, sample_rate, fps)
    if b[-1] > len(audio):
        audio = np.pad(audio, (0, b[-1] - len(audio)))
    sq = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    ms = (sq[b[1:]] - sq[b[:-1]]) / np.maximum(1, np.diff(b))
    return np.maximum(10 * np.log10(np.maximum(ms, 1e-12)), floor_db)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` chosen so the clean-to-scaled-noise power ratio is ``snr_db``."""
    if clean.shape != noise.shape:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} differ in shape")
    pc = float(np.mean(np.square(clean, dtype=np.float64)))
    pn = float(np.mean(np.square(noise, dtype=np.float64)))
    if pn <= 0:
        raise ValueError("noise is silent: cannot mix at an SNR")
    g = np.sqrt(pc / (pn * 10 ** (snr_db / 10)))
    return (clean + g * noise).astype(np.float32)
