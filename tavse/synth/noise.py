"""Deterministic synthetic noise in the layout of the DEMAND corpus.

DEMAND ships one zip per environment, ``{ENV}_16k.zip`` holding ``{ENV}/ch01.wav .. ch16.wav``:
16 near-identical channels of one microphone array. This module procedurally generates a
few environments of clearly different character under the real names (so the reader and
the pipeline cannot tell the difference in layout) and writes them byte-reproducibly, on
any x86-64 CPU: transcendental functions, filter and window designs, resampling filters and
convolutions come from :mod:`tavse.synth.detmath`, not from NumPy/SciPy kernels that the
processor's SIMD features (or OpenBLAS's per-CPU kernels) select.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm import tqdm

from tavse.common.io import DeterministicZip, wav_bytes
from tavse.common.seeding import stable_seed
from tavse.synth import detmath as dm
from tavse.synth.speech import COMMANDS, synthesize, voice_for_speaker

__all__ = [
    "DEMAND_ENVIRONMENTS",
    "NOISE_ENVIRONMENTS",
    "PEAK_DBFS",
    "demand_sample_rate",
    "synth_noise",
    "write_demand_corpus",
]

# All 18 DEMAND environments (for reference and name validation).
DEMAND_ENVIRONMENTS: tuple[str, ...] = (
    "DKITCHEN", "DLIVING", "DWASHING", "NFIELD", "NPARK", "NRIVER", "OHALLWAY", "OMEETING",
    "OOFFICE", "PCAFETER", "PRESTO", "PSTATION", "SCAFE", "SPSQUARE", "STRAFFIC", "TBUS",
    "TCAR", "TMETRO",
)

PEAK_DBFS = -3.0
# Mic-array geometry stand-in: inter-channel delays up to 0.5 ms (a few cm of spacing),
# independent sensor noise 50 dB under the signal, and +-0.5 dB gain mismatch.
_MAX_DELAY_S = 0.0005
_SENSOR_NOISE_DB = -50.0
_GAIN_SPREAD_DB = 0.5

EnvGenerator = Callable[[np.random.Generator, int, int], np.ndarray]  # (rng, n_samples, rate) -> mono


# ----------------------------------------------------------------------------- building blocks


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _at_db(x: np.ndarray, db: float) -> np.ndarray:
    """``x`` rescaled to an RMS of ``db`` dB (relative units; the mix is peak-normalised later)."""
    level = _rms(x)
    return x * (dm.exp10(db / 20) / level) if level > 0 else x


def _colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), by FFT shaping.

    Steep spectra put most power below 20 Hz; callers band-limit them so the RMS they
    level by is audible sound, not infrasound.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0  # keep DC finite; it is removed below anyway
    gain = dm.power(f, -exponent / 2)
    spectrum.real *= gain  # real and imaginary parts apart: no complex (SIMD, fused) multiply
    spectrum.imag *= gain
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _filter(x: np.ndarray, sr: int, kind: str, cutoff: float | tuple[float, float], order: int = 2) -> np.ndarray:
    """Butterworth filter; cutoffs are clamped below Nyquist so every rate works."""
    nyq = sr / 2
    if isinstance(cutoff, tuple):
        wn: float | tuple[float, float] = (min(cutoff[0], 0.9 * nyq), min(cutoff[1], 0.95 * nyq))
    else:
        wn = min(cutoff, 0.95 * nyq)
    sos = dm.butter_sos(order, wn, kind, sr)
    # Start in steady state for the first sample: no start-up transient (which would
    # otherwise set the peak that the whole file is normalised by).
    out, _ = signal.sosfilt(sos, x, zi=dm.sosfilt_zi(sos) * x[0])
    return out


def _slow_envelope(rng: np.random.Generator, n: int, sr: int, rate_hz: float, depth_db: float) -> np.ndarray:
    """A smooth random gain curve (in linear units) changing about ``rate_hz`` times a second."""
    n_knots = max(int(n / sr * rate_hz) + 3, 4)
    knots_db = rng.uniform(-depth_db / 2, depth_db / 2, n_knots)
    # Shape the curve at a 100 Hz control rate (cheap), then interpolate to audio rate.
    n_ctrl = max(int(n / sr * 100) + 2, 2)
    ctrl = np.interp(np.linspace(0, n_knots - 1, n_ctrl), np.arange(n_knots), knots_db)
    width = max(int(100 / rate_hz / 2), 1)
    kernel = dm.hanning(2 * width + 1)  # raised-cosine smoothing removes the corners
    ctrl = dm.convolve_valid(np.pad(ctrl, width, mode="edge"), kernel / kernel.sum())
    return dm.exp10(np.interp(np.linspace(0, n_ctrl - 1, n), np.arange(n_ctrl), ctrl) / 20)


def _event_times(rng: np.random.Generator, duration_s: float, rate_hz: float) -> np.ndarray:
    """Onset times of a Poisson process of ``rate_hz`` events per second over ``duration_s``."""
    n_max = int(duration_s * rate_hz * 3 + 10)
    times = np.cumsum(rng.exponential(1.0 / rate_hz, n_max))
    return times[times < duration_s]


def _add_at(out: np.ndarray, event: np.ndarray, start: int) -> None:
    """Mix ``event`` into ``out`` at sample ``start``, cropping at both ends."""
    if start >= out.size or start + event.size <= 0:
        return
    lo = max(start, 0)
    hi = min(start + event.size, out.size)
    out[lo:hi] += event[lo - start : hi - start]


def _resonant_hit(rng: np.random.Generator, sr: int, f_lo: float, f_hi: float, n_modes: int, decay_s: float) -> np.ndarray:
    """A struck object: a click plus a few exponentially decaying inharmonic modes."""
    length = int(decay_s * 5 * sr)
    t = np.arange(length) / sr
    out = np.zeros(length)
    f_hi = min(f_hi, 0.45 * sr)
    for _ in range(n_modes):
        f = rng.uniform(f_lo, f_hi)
        tau = decay_s * rng.uniform(0.4, 1.2)
        out += rng.uniform(0.3, 1.0) * dm.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * dm.exp(-t / tau)
    click = int(0.002 * sr)
    out[:click] += rng.standard_normal(click) * np.linspace(1, 0, click)
    return out


def _clatter(rng: np.random.Generator, n: int, sr: int, rate_hz: float, f_lo: float, f_hi: float) -> np.ndarray:
    """Dishes/cutlery: resonant hits at Poisson times, loudness spread over 20 dB, some in quick runs."""
    out = np.zeros(n)
    for t0 in _event_times(rng, n / sr, rate_hz):
        n_hits = int(rng.integers(1, 4))
        for k in range(n_hits):
            hit = _resonant_hit(rng, sr, f_lo, f_hi, int(rng.integers(3, 7)), rng.uniform(0.02, 0.12))
            gain = dm.exp10(rng.uniform(-20, 0) / 20)
            _add_at(out, gain * hit, int((t0 + k * rng.uniform(0.05, 0.25)) * sr))
    return out


def _hum(n: int, sr: int, f0: float, n_harmonics: int, rng: np.random.Generator) -> np.ndarray:
    """Mains/compressor hum: harmonics of ``f0`` with 1/k amplitudes and random phases."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * f0 < 0.45 * sr:
            out += dm.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    return out


def _to_rate(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling (exact rational ratio, deterministic)."""
    g = math.gcd(src_rate, dst_rate)
    return dm.resample_poly(x, dst_rate // g, src_rate // g)


def _room_reverb(rng: np.random.Generator, x: np.ndarray, sr: int, rt60_s: float, wet: float) -> np.ndarray:
    """Diffuse reverberation: convolution with exponentially decaying noise (60 dB in ``rt60_s``)."""
    length = int(rt60_s * sr)
    t = np.arange(length) / sr
    ir = rng.standard_normal(length) * dm.exp(-6.9 * t / rt60_s)
    ir = _filter(ir, sr, "lowpass", 5000.0, order=1)  # air/wall absorption dulls the tail
    ir /= np.sqrt(np.sum(ir**2))
    return (1 - wet) * x + wet * dm.fftconvolve(x, ir)[: x.size]


def _babble(rng: np.random.Generator, n: int, sr: int, n_voices: int, rt60_s: float, wet: float) -> np.ndarray:
    """``n_voices`` synthetic talkers, each chatting continuously with pauses, in one room."""
    voice_seed = int(rng.integers(2**31))
    dry = np.zeros(n)
    for speaker in range(n_voices):
        voice = voice_for_speaker(speaker, voice_seed)
        # A few phrases per talker, reused in random order: keeps synthesis to ~5 calls per voice.
        phrase_ids = rng.choice(len(COMMANDS), size=5, replace=False)
        phrases = []
        for pid in phrase_ids:
            audio, rate = synthesize(COMMANDS[int(pid)], voice)
            phrases.append(_to_rate(audio.astype(np.float64), rate, sr))
        gain = dm.exp10(rng.uniform(-8, 0) / 20)  # talkers at different distances
        pos = -int(rng.uniform(0, 2.0) * sr)  # mid-sentence at t=0: no silent lead-in
        while pos < n:
            phrase = phrases[int(rng.integers(len(phrases)))]
            _add_at(dry, gain * phrase, pos)
            pos += phrase.size + int(rng.uniform(0.15, 0.9) * sr)
    return _room_reverb(rng, dry, sr, rt60_s, wet)


# ----------------------------------------------------------------------------- environments


def _dkitchen(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Domestic kitchen: fridge hum, dish clatter, a tap running now and then."""
    hum = _hum(n, sr, rng.uniform(95, 105), 8, rng) * _slow_envelope(rng, n, sr, 0.1, 3)
    room = _filter(_colored_noise(rng, n, 1.0), sr, "lowpass", 3000)
    tap = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 1 / 20):
        length = int(rng.uniform(2, 6) * sr)
        water = _filter(rng.standard_normal(length), sr, "bandpass", (900.0, 5000.0))
        _add_at(tap, water * dm.hanning(length), int(t0 * sr))
    mix = _at_db(hum, -30) + _at_db(room, -34) + _at_db(_clatter(rng, n, sr, 1.2, 900, 7000), -18)
    if np.any(tap):
        mix += _at_db(tap, -28)
    return mix


def _nfield(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Open field: gusty low-passed wind, rustling that follows the gusts, bird chirps."""
    gusts = _slow_envelope(rng, n, sr, 0.3, 18)
    wind = _filter(rng.standard_normal(n), sr, "lowpass", 350) * gusts
    rustle = _filter(rng.standard_normal(n), sr, "bandpass", (2000.0, 6000.0)) * dm.power(gusts, 1.5)
    birds = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 0.5):
        f0 = rng.uniform(2500, 5000)
        for k in range(int(rng.integers(2, 6))):
            dur = rng.uniform(0.04, 0.15)
            t = np.arange(int(dur * sr)) / sr
            # Downward sweep with a fast vibrato: a typical song-bird syllable.
            freq = np.minimum(f0 - rng.uniform(0, 1500) * t / dur + 150 * dm.sin(2 * np.pi * 30 * t), 0.45 * sr)
            chirp = dm.sin(2 * np.pi * np.cumsum(freq) / sr) * dm.hanning(t.size)
            _add_at(birds, chirp * dm.exp10(rng.uniform(-10, 0) / 20), int((t0 + k * rng.uniform(0.12, 0.25)) * sr))
    return _at_db(wind, -12) + _at_db(rustle, -30) + _at_db(birds, -24)


def _ooffice(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Office: steady HVAC (pink-ish, with a fan tone) and bursts of keyboard typing."""
    hvac = _filter(_colored_noise(rng, n, 0.8), sr, "lowpass", 2500)
    fan = _hum(n, sr, rng.uniform(115, 125), 3, rng)
    typing = np.zeros(n)
    click_len = int(0.012 * sr)
    tc = np.arange(click_len) / sr
    for t0 in _event_times(rng, n / sr, 0.12):
        t = t0
        stop = t0 + rng.uniform(2, 7)
        while t < stop:
            # A key: bright tick (high-passed noise) plus a dull thump, decaying in a few ms.
            tick = _filter(rng.standard_normal(click_len), sr, "highpass", 2000) * dm.exp(-tc / 0.0015)
            thump = dm.sin(2 * np.pi * rng.uniform(180, 320) * tc) * dm.exp(-tc / 0.004)
            key = tick + 0.5 * thump
            _add_at(typing, key * dm.exp10(rng.uniform(-8, 0) / 20), int(t * sr))
            t += rng.uniform(0.07, 0.25)
    return _at_db(hvac, -20) + _at_db(fan, -38) + _at_db(typing, -26)


def _car_pass(rng: np.random.Generator, sr: int, tyre: np.ndarray) -> np.ndarray:
    """One car passing by: 1/r loudness and a Doppler-shifted engine sweeping down as it passes."""
    half = 6.0
    t = np.arange(int(2 * half * sr)) / sr - half
    speed = rng.uniform(9, 20)  # m/s
    dist = rng.uniform(3, 12)  # closest approach, m
    x = speed * t
    r = np.sqrt(dist * dist + x * x)
    doppler = 343.0 / (343.0 + speed * x / r)  # > 1 approaching, < 1 receding
    f_engine = rng.uniform(45, 110)
    phase = 2 * np.pi * np.cumsum(f_engine * doppler) / sr
    engine = sum(dm.sin(k * phase) / k for k in range(1, 7))
    start = int(rng.integers(0, max(tyre.size - t.size, 1)))
    noise = tyre[start : start + t.size]
    if noise.size < t.size:
        noise = np.pad(noise, (0, t.size - noise.size))
    # Fade the window ends so a car's far-away tail does not start or stop abruptly.
    return (0.4 * engine + noise) * (dist / r) * dm.tukey(t.size, 0.6)


def _straffic(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Street traffic: distant low rumble plus individual cars passing with Doppler sweeps."""
    rumble = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (30.0, 250.0))
    tyre = _filter(rng.standard_normal(min(n, 20 * sr)), sr, "bandpass", (200.0, 1500.0))
    tyre /= _rms(tyre)
    cars = np.zeros(n)
    for t0 in _event_times(rng, n / sr + 6, 0.3):
        _add_at(cars, _car_pass(rng, sr, tyre) * dm.exp10(rng.uniform(-8, 0) / 20), int((t0 - 6) * sr))
    return _at_db(rumble, -13) + _at_db(cars, -12)


def _tcar(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Inside a car: engine harmonics following a wandering RPM, brown road noise, an indicator tick."""
    rpm = 2000 * _slow_envelope(rng, n, sr, 0.1, 6)  # wanders over ~1400-2800 rpm
    firing = rpm / 60 * 2  # four-stroke four-cylinder: two firings per revolution
    phase = 2 * np.pi * np.cumsum(firing) / sr
    engine = sum(dm.sin(k * phase + rng.uniform(0, 2 * np.pi)) * dm.power(float(k), -1.2) for k in range(1, 11))
    road = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (25.0, 500.0))
    airflow = _filter(_colored_noise(rng, n, 1.0), sr, "highpass", 1000)
    ticks = np.zeros(n)
    tick = _resonant_hit(rng, sr, 1500, 4000, 3, 0.004)
    for t0 in _event_times(rng, n / sr, 1 / 15):
        for k in range(int(rng.integers(4, 12))):
            _add_at(ticks, tick, int((t0 + k * 0.75) * sr))
    mix = _at_db(engine, -20) + _at_db(road, -14) + _at_db(airflow, -34)
    if np.any(ticks):
        mix += _at_db(ticks, -32)
    return mix


def _pcafeter(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Busy cafeteria: eight talkers in a reverberant hall, trays and cutlery, room noise."""
    babble = _babble(rng, n, sr, 8, rt60_s=0.9, wet=0.6)
    return _at_db(babble, -14) + _at_db(_clatter(rng, n, sr, 0.8, 1200, 7000), -24) + _at_db(
        _filter(_colored_noise(rng, n, 1.0), sr, "lowpass", 2000), -30
    )


def _presto(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """University restaurant: six talkers, moderate reverb, cutlery clinks."""
    babble = _babble(rng, n, sr, 6, rt60_s=0.6, wet=0.45)
    return _at_db(babble, -14) + _at_db(_clatter(rng, n, sr, 0.6, 2000, 8000), -26) + _at_db(
        _colored_noise(rng, n, 1.0), -36
    )


def _spsquare(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Public square: four nearby talkers outdoors (little reverb), distant traffic, footsteps."""
    babble = _babble(rng, n, sr, 4, rt60_s=0.25, wet=0.2)
    rumble = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (30.0, 300.0)) * _slow_envelope(rng, n, sr, 0.2, 6)
    steps = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 0.15):
        pace = rng.uniform(0.45, 0.6)
        for k in range(int(rng.integers(4, 12))):
            step = _resonant_hit(rng, sr, 80, 400, 2, 0.02)
            _add_at(steps, step * dm.exp10(rng.uniform(-4, 0) / 20), int((t0 + k * pace) * sr))
    return _at_db(babble, -14) + _at_db(rumble, -20) + _at_db(steps, -30)


def _scafe(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Terrace cafe (recorded at 48 kHz in DEMAND): six talkers, cup and glass clinks, espresso hiss."""
    babble = _babble(rng, n, sr, 6, rt60_s=0.4, wet=0.35)
    clinks = _clatter(rng, n, sr, 0.9, 3000, 16000)  # cups and glasses ring well above 8 kHz
    hiss = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 1 / 25):
        length = int(rng.uniform(3, 8) * sr)
        steam = _filter(rng.standard_normal(length), sr, "highpass", 4000) * dm.hanning(length)
        _add_at(hiss, steam, int(t0 * sr))
    floor = _colored_noise(rng, n, 1.0)  # full-band pink air noise: uses the 48 kHz bandwidth
    mix = _at_db(babble, -14) + _at_db(clinks, -22) + _at_db(floor, -34)
    if np.any(hiss):
        mix += _at_db(hiss, -30)
    return mix


_GENERATORS: dict[str, EnvGenerator] = {
    "DKITCHEN": _dkitchen,
    "NFIELD": _nfield,
    "OOFFICE": _ooffice,
    "PCAFETER": _pcafeter,
    "PRESTO": _presto,
    "SCAFE": _scafe,
    "SPSQUARE": _spsquare,
    "STRAFFIC": _straffic,
    "TCAR": _tcar,
}

NOISE_ENVIRONMENTS: tuple[str, ...] = tuple(sorted(_GENERATORS))


# ----------------------------------------------------------------------------- public API


def demand_sample_rate(env: str) -> int:
    """The rate DEMAND distributes ``env`` at in our corpus: 48 kHz for SCAFE (its only zip), else 16 kHz."""
    return 48000 if env == "SCAFE" else 16000


def _array_channels(rng: np.random.Generator, mono: np.ndarray, n: int, sr: int, n_channels: int) -> np.ndarray:
    """Near-copies of ``mono`` as seen by a small mic array: per-channel delay, gain and sensor noise."""
    max_delay = mono.size - n
    delays = np.concatenate([[0], rng.integers(0, max_delay + 1, n_channels - 1)])
    gains = dm.exp10(rng.uniform(-_GAIN_SPREAD_DB, _GAIN_SPREAD_DB, n_channels) / 20)
    noise_level = _rms(mono) * dm.exp10(_SENSOR_NOISE_DB / 20)
    out = np.empty((n_channels, n))
    for ch in range(n_channels):
        start = max_delay - int(delays[ch])
        out[ch] = gains[ch] * mono[start : start + n] + noise_level * rng.standard_normal(n)
    return out


def synth_noise(env: str, duration_s: float, sample_rate: int, n_channels: int, seed: int) -> np.ndarray:
    """``n_channels`` near-identical channels of synthetic ``env`` noise, shape (n_channels, n), float32.

    Deterministic in all arguments; peak-normalised to about -3 dBFS across channels.
    """
    if env not in _GENERATORS:
        raise ValueError(f"no synthetic generator for environment {env!r}; have {', '.join(NOISE_ENVIRONMENTS)}")
    if duration_s <= 0 or n_channels < 1 or sample_rate < 8000:
        raise ValueError(
            f"need duration_s > 0, n_channels >= 1, sample_rate >= 8000 (got {duration_s}, {n_channels}, {sample_rate})"
        )
    rng = np.random.default_rng(stable_seed("demand-noise", int(seed), env))
    n = int(round(duration_s * sample_rate))
    max_delay = int(round(_MAX_DELAY_S * sample_rate))
    mono = _GENERATORS[env](rng, n + max_delay, sample_rate)
    channels = _array_channels(rng, mono, n, sample_rate, n_channels)
    peak = float(np.max(np.abs(channels)))
    if not np.isfinite(peak) or peak == 0:
        raise RuntimeError(f"generator for {env} produced silent or non-finite audio")
    return (channels * (dm.exp10(PEAK_DBFS / 20) / peak)).astype(np.float32)


def write_demand_corpus(
    out_dir: str | os.PathLike,
    envs: Sequence[str] | None = None,
    duration_s: float = 60.0,
    n_channels: int = 16,
    seed: int = 0,
) -> list[Path]:
    """Write ``{ENV}_16k.zip`` (SCAFE: ``SCAFE_48k.zip``) with ``{ENV}/chNN.wav`` PCM_16 members.

    Byte-identical for identical arguments; each environment is seeded from (seed, name) so
    adding or reordering environments does not change the others. Returns the zip paths.
    """
    envs = list(NOISE_ENVIRONMENTS if envs is None else envs)
    unknown = [e for e in envs if e not in _GENERATORS]
    if unknown:
        raise ValueError(f"unknown environment(s) {unknown}; have {', '.join(NOISE_ENVIRONMENTS)}")
    if len(set(envs)) != len(envs):
        raise ValueError(f"environment listed twice in {envs}")
    if not 1 <= n_channels <= 99:
        raise ValueError(f"n_channels must be 1-99 (chNN naming), got {n_channels}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for env in tqdm(envs, desc="DEMAND noise", unit="env"):
        rate = demand_sample_rate(env)
        audio = synth_noise(env, duration_s, rate, n_channels, seed)
        path = out / f"{env}_{rate // 1000}k.zip"
        with DeterministicZip(path) as archive:
            for ch in range(n_channels):
                archive.add(f"{env}/ch{ch + 1:02d}.wav", wav_bytes(audio[ch], rate, "PCM_16"))
        written.append(path)
    return written
