"""Deterministic synthetic noise in the layout of the DEMAND corpus.

DEMAND ships one zip per environment, ``{ENV}_16k.zip`` holding ``{ENV}/ch01.wav .. ch16.wav``:
16 near-identical channels of one microphone array. This module procedurally generates all
18 DEMAND environments under their real names (so the reader and the pipeline cannot tell the
difference in layout), each plausible for the real recording and of the noise kind
:data:`tavse.corpus.noise_kinds.NOISE_KINDS` gives it (stationary, transient or babble), and
writes them byte-reproducibly, on any x86-64 CPU: transcendental functions, filter and window
designs, resampling filters and convolutions come from :mod:`tavse.synth.detmath`, not from
NumPy/SciPy kernels that the processor's SIMD features (or OpenBLAS's per-CPU kernels) select.

**Babble is made of strangers.** Every talker in the noise (café crowds, a meeting, a TV in the
living room, passengers) is disjoint from every target speaker of every split, by construction:

- *Texts* come from :data:`BABBLE_PHRASES`, conversational sentences, never from the command
  list :data:`tavse.synth.speech.COMMANDS` the target speakers read. No phrase, and no sentence
  of a phrase, equals a command, and no command occurs as a run of words inside a phrase;
  :func:`_check_babble_disjoint` checks this when the module is imported.
- *Voices* are ``{language}+{variant}`` with the variant from :data:`BABBLE_VARIANTS`, espeak-ng
  timbres outside ``MALE_VARIANTS + FEMALE_VARIANTS``, the only variants
  :func:`tavse.synth.speech.voice_for_speaker` draws, so no babble voice name is a target
  voice name (and the formant sets differ). None of them uses the Klatt synthesiser (whose
  noise source is not seeded per utterance). espeak-ng silently ignores an unknown variant,
  so ``tests/synth/test_noise.py`` also checks that each variant exists in the bundled data
  and really changes the sound.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import signal

from tavse.common.io import DeterministicZip, wav_bytes
from tavse.common.progress import progress
from tavse.common.seeding import stable_seed
from tavse.corpus.noise_kinds import DEMAND_ENVIRONMENTS
from tavse.synth import detmath as dm
from tavse.synth.speech import COMMANDS, FEMALE_VARIANTS, LANGUAGES, MALE_VARIANTS, Voice, synthesize

__all__ = [
    "BABBLE_PHRASES",
    "BABBLE_VARIANTS",
    "DEMAND_ENVIRONMENTS",
    "NOISE_ENVIRONMENTS",
    "PEAK_DBFS",
    "babble_voice",
    "demand_sample_rate",
    "synth_noise",
    "write_demand_corpus",
]


PEAK_DBFS = -3.0
# Mic-array geometry stand-in: inter-channel delays up to 0.5 ms (a few cm of spacing),
# independent sensor noise 50 dB under the signal, and +-0.5 dB gain mismatch.
_MAX_DELAY_S = 0.0005
_SENSOR_NOISE_DB = -50.0
_GAIN_SPREAD_DB = 0.5

# Babble talkers' texts: everyday conversation, none of it a command a target speaker reads.
BABBLE_PHRASES: tuple[str, ...] = (
    "so I told him we would meet at the station around eight",
    "honestly the soup here is better than it looks",
    "did you see the match last night? it was unbelievable",
    "she moved to a flat near the river last spring",
    "I think the bus was late again this morning",
    "we should try that new bakery on the corner",
    "my brother finally passed his driving test",
    "no, no, I meant the other one, the blue folder",
    "they are painting the whole building next month",
    "it was the longest queue I have ever seen",
    "could you pass me the salt? thanks",
    "I can never remember where I left my keys",
    "the kids loved the museum, especially the dinosaurs",
    "we are thinking about a trip to the mountains in June",
    "he said the exam was easier than last year",
    "that restaurant closed down ages ago, didn't it?",
    "I have been reading a brilliant book about whales",
    "the train was so crowded I had to stand the whole way",
    "are you coming to the party on Saturday?",
    "my grandmother grew tomatoes on the balcony",
    "it rained all week, so we stayed inside and played cards",
    "I am not sure, maybe we could ask her tomorrow",
    "the new manager seems friendly enough",
    "we got completely lost on the way back from the lake",
    "her dog keeps chasing the pigeons in the square",
    "they had to cancel the concert because of the storm",
    "I would rather walk, it is only ten minutes from here",
    "that was the funniest thing I have heard all week",
    "my phone battery died halfway through the film",
    "he always orders the same sandwich every single day",
    "we painted the kitchen yellow, and it looks great",
    "the library is open late on Thursdays now",
    "I bumped into an old school friend at the market",
    "the flight was delayed for almost three hours",
    "you really have to try the lemon cake here",
    "our neighbours are building a treehouse for their twins",
    "I started learning the guitar again after twenty years",
    "the prices at that shop have gone up so much",
    "we watched the sunrise from the top of the hill",
    "she is studying chemistry at the university now",
    "it is far too noisy in here to think properly",
    "he fixed the old bicycle with parts from the garage sale",
)

# espeak-ng timbre variants (espeak-ng-data/voices/!v) for babble talkers: human-sounding,
# formant-synthesised, and none of them among the target speakers' MALE/FEMALE_VARIANTS.
BABBLE_VARIANTS: tuple[str, ...] = (
    "m8",
    "Alex",
    "Andy",
    "Gene",
    "Mike",
    "ed",
    "grandpa",
    "max",
    "paul",
    "quincy",
    "rob",
    "robert",
    "travis",
    "Annie",
    "aunty",
    "grandma",
    "linda",
    "steph",
)


def _check_babble_disjoint() -> None:
    """RuntimeError if a babble text or voice could be a target speaker's (see the module docstring)."""
    targets = set(MALE_VARIANTS) | set(FEMALE_VARIANTS)
    if overlap := sorted(targets & set(BABBLE_VARIANTS)):
        raise RuntimeError(f"babble variants {overlap} are target speakers' variants")

    def words(text: str) -> str:
        return " " + " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split()) + " "

    commands = {words(c) for c in COMMANDS}
    for phrase in BABBLE_PHRASES:
        sentences = [words(x) for x in phrase.replace("?", ".").replace("!", ".").split(".") if x.strip()]
        if any(w in commands for w in (words(phrase), *sentences)) or any(c in words(phrase) for c in commands):
            raise RuntimeError(f"babble phrase {phrase!r} is or contains a target command")


_check_babble_disjoint()

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


def _resonant_hit(
    rng: np.random.Generator, sr: int, f_lo: float, f_hi: float, n_modes: int, decay_s: float
) -> np.ndarray:
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


def babble_voice(rng: np.random.Generator) -> Voice:
    """A babble talker's voice: any English accent, a :data:`BABBLE_VARIANTS` timbre, own prosody."""
    return Voice(
        name=f"{LANGUAGES[int(rng.integers(len(LANGUAGES)))]}+{BABBLE_VARIANTS[int(rng.integers(len(BABBLE_VARIANTS)))]}",
        rate=int(rng.integers(140, 201)),
        pitch=int(rng.integers(25, 76)),
        pitch_range=int(rng.integers(30, 81)),
    )


def _babble(
    rng: np.random.Generator,
    n: int,
    sr: int,
    n_voices: int,
    rt60_s: float,
    wet: float,
    pause_s: tuple[float, float] = (0.15, 0.9),
) -> np.ndarray:
    """``n_voices`` stranger talkers (:func:`babble_voice`, :data:`BABBLE_PHRASES`) chatting in one room.

    Each talks on with pauses of ``pause_s`` (uniform, seconds) between phrases.
    """
    dry = np.zeros(n)
    for _ in range(n_voices):
        voice = babble_voice(rng)
        # A few phrases per talker, reused in random order: keeps synthesis to ~5 calls per voice.
        phrase_ids = rng.choice(len(BABBLE_PHRASES), size=5, replace=False)
        phrases = []
        for pid in phrase_ids:
            audio, rate = synthesize(BABBLE_PHRASES[int(pid)], voice)
            phrases.append(_to_rate(audio.astype(np.float64), rate, sr))
        gain = dm.exp10(rng.uniform(-8, 0) / 20)  # talkers at different distances
        pos = -int(rng.uniform(0, 2.0) * sr)  # mid-sentence at t=0: no silent lead-in
        while pos < n:
            phrase = phrases[int(rng.integers(len(phrases)))]
            _add_at(dry, gain * phrase, pos)
            pos += phrase.size + int(rng.uniform(*pause_s) * sr)
    return _room_reverb(rng, dry, sr, rt60_s, wet)


def _footsteps(
    rng: np.random.Generator, n: int, sr: int, rate_hz: float, f_lo: float, f_hi: float, decay_s: float
) -> np.ndarray:
    """Walkers passing: runs of 4-11 steps (resonant hits of ``f_lo``-``f_hi``) at a walking pace."""
    steps = np.zeros(n)
    for t0 in _event_times(rng, n / sr, rate_hz):
        pace = rng.uniform(0.45, 0.6)
        for k in range(int(rng.integers(4, 12))):
            step = _resonant_hit(rng, sr, f_lo, f_hi, 2, decay_s)
            _add_at(steps, step * dm.exp10(rng.uniform(-4, 0) / 20), int((t0 + k * pace) * sr))
    return steps


def _birds(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Song-bird calls: runs of 2-5 downward-sweeping syllables with a fast vibrato."""
    birds = np.zeros(n)
    for t0 in _event_times(rng, n / sr, rate_hz):
        f0 = rng.uniform(2500, 5000)
        for k in range(int(rng.integers(2, 6))):
            dur = rng.uniform(0.04, 0.15)
            t = np.arange(int(dur * sr)) / sr
            freq = np.minimum(f0 - rng.uniform(0, 1500) * t / dur + 150 * dm.sin(2 * np.pi * 30 * t), 0.45 * sr)
            chirp = dm.sin(2 * np.pi * np.cumsum(freq) / sr) * dm.hanning(t.size)
            _add_at(birds, chirp * dm.exp10(rng.uniform(-10, 0) / 20), int((t0 + k * rng.uniform(0.12, 0.25)) * sr))
    return birds


def _typing(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Bursts of keyboard typing (a burst every ``1/rate_hz`` s on average, 2-7 s long)."""
    typing = np.zeros(n)
    click_len = int(0.012 * sr)
    tc = np.arange(click_len) / sr
    for t0 in _event_times(rng, n / sr, rate_hz):
        t = t0
        stop = t0 + rng.uniform(2, 7)
        while t < stop:
            # A key: bright tick (high-passed noise) plus a dull thump, decaying in a few ms.
            tick = _filter(rng.standard_normal(click_len), sr, "highpass", 2000) * dm.exp(-tc / 0.0015)
            thump = dm.sin(2 * np.pi * rng.uniform(180, 320) * tc) * dm.exp(-tc / 0.004)
            key = tick + 0.5 * thump
            _add_at(typing, key * dm.exp10(rng.uniform(-8, 0) / 20), int(t * sr))
            t += rng.uniform(0.07, 0.25)
    return typing


def _bursts(
    rng: np.random.Generator, n: int, sr: int, rate_hz: float, dur_s: tuple[float, float], band: tuple[float, float]
) -> np.ndarray:
    """Band-limited noise bursts (water from a tap, paper, steam) with smooth on/offsets."""
    out = np.zeros(n)
    for t0 in _event_times(rng, n / sr, rate_hz):
        length = int(rng.uniform(*dur_s) * sr)
        burst = _filter(rng.standard_normal(length), sr, "bandpass", band) * dm.tukey(length, 0.5)
        _add_at(out, burst * dm.exp10(rng.uniform(-6, 0) / 20), int(t0 * sr))
    return out


def _engine(
    rng: np.random.Generator, n: int, sr: int, rpm: float, firings_per_rev: float, n_harmonics: int, wander_db: float
) -> np.ndarray:
    """Engine harmonics following a slowly wandering RPM (around ``rpm``)."""
    firing = rpm * _slow_envelope(rng, n, sr, 0.1, wander_db) / 60 * firings_per_rev
    phase = 2 * np.pi * np.cumsum(firing) / sr
    return sum(
        dm.sin(k * phase + rng.uniform(0, 2 * np.pi)) * dm.power(float(k), -1.2) for k in range(1, n_harmonics + 1)
    )


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
    birds = _birds(rng, n, sr, 0.5)
    return _at_db(wind, -12) + _at_db(rustle, -30) + _at_db(birds, -24)


def _ooffice(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Office: steady HVAC (pink-ish, with a fan tone) and bursts of keyboard typing."""
    hvac = _filter(_colored_noise(rng, n, 0.8), sr, "lowpass", 2500)
    fan = _hum(n, sr, rng.uniform(115, 125), 3, rng)
    typing = _typing(rng, n, sr, 0.12)
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
    return (
        _at_db(babble, -14)
        + _at_db(_clatter(rng, n, sr, 0.8, 1200, 7000), -24)
        + _at_db(_filter(_colored_noise(rng, n, 1.0), sr, "lowpass", 2000), -30)
    )


def _presto(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """University restaurant: six talkers, moderate reverb, cutlery clinks."""
    babble = _babble(rng, n, sr, 6, rt60_s=0.6, wet=0.45)
    return (
        _at_db(babble, -14)
        + _at_db(_clatter(rng, n, sr, 0.6, 2000, 8000), -26)
        + _at_db(_colored_noise(rng, n, 1.0), -36)
    )


def _spsquare(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Public square: four nearby talkers outdoors (little reverb), distant traffic, footsteps."""
    babble = _babble(rng, n, sr, 4, rt60_s=0.25, wet=0.2)
    rumble = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (30.0, 300.0)) * _slow_envelope(rng, n, sr, 0.2, 6)
    steps = _footsteps(rng, n, sr, 0.15, 80, 400, 0.02)
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


def _dliving(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Living room: a quiet room, a TV talking in the next room now and then, footsteps, a cupboard knock."""
    room = _filter(_colored_noise(rng, n, 1.2), sr, "lowpass", 1500)
    tv = _babble(rng, n, sr, 1, rt60_s=0.5, wet=0.6, pause_s=(1.0, 6.0))
    tv = _filter(tv, sr, "bandpass", (250.0, 3500.0)) * _slow_envelope(rng, n, sr, 0.05, 10)  # small speaker
    steps = _room_reverb(rng, _footsteps(rng, n, sr, 0.12, 60, 300, 0.03), sr, 0.4, 0.3)
    knocks = _clatter(rng, n, sr, 0.1, 150, 1500)
    return _at_db(room, -36) + _at_db(tv, -27) + _at_db(steps, -22) + _at_db(knocks, -26)


def _dwashing(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Washroom: a washing machine: motor hum and drum rumble pulsing with each turn, water sloshing."""
    t = np.arange(n) / sr
    turn = 1 + 0.45 * dm.sin(2 * np.pi * rng.uniform(0.8, 1.2) * t)  # the drum's rotation
    motor = _hum(n, sr, rng.uniform(48, 52), 12, rng) * turn
    drum = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (40.0, 400.0)) * turn
    slosh = _filter(rng.standard_normal(n), sr, "bandpass", (250.0, 2500.0)) * np.square(2 - turn)
    slosh *= _slow_envelope(rng, n, sr, 0.5, 8)
    brushes = _filter(rng.standard_normal(n), sr, "bandpass", (3000.0, 6000.0))  # the motor's brush hiss
    return _at_db(motor, -20) + _at_db(drum, -12) + _at_db(slosh, -22) + _at_db(brushes, -34)


def _npark(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """City park: distant traffic, birds, walkers on gravel (crunching steps), a light breeze."""
    traffic = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (40.0, 400.0)) * _slow_envelope(rng, n, sr, 0.1, 6)
    breeze = _filter(rng.standard_normal(n), sr, "lowpass", 300) * _slow_envelope(rng, n, sr, 0.3, 10)
    gravel = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 0.1):
        pace = rng.uniform(0.5, 0.65)
        for k in range(int(rng.integers(5, 14))):
            length = int(rng.uniform(0.08, 0.16) * sr)
            crunch = (
                _filter(rng.standard_normal(length), sr, "bandpass", (800.0, 6000.0))
                * dm.exp(-np.arange(length) / (0.03 * sr))
                * (rng.uniform(0, 1, length) > 0.6)
            )  # grains cracking
            _add_at(gravel, crunch * dm.exp10(rng.uniform(-5, 0) / 20), int((t0 + k * pace) * sr))
    return _at_db(traffic, -26) + _at_db(breeze, -30) + _at_db(_birds(rng, n, sr, 0.7), -20) + _at_db(gravel, -17)


def _nriver(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Riverbank: broadband flowing water with a gurgle of bubbles, a low roar."""
    flow = _filter(_colored_noise(rng, n, 0.6), sr, "bandpass", (80.0, 7000.0)) * _slow_envelope(rng, n, sr, 1.5, 3)
    roar = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (30.0, 300.0))
    bubbles = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 25.0):
        length = int(rng.uniform(0.01, 0.03) * sr)
        tb = np.arange(length) / sr
        f0 = rng.uniform(400, 3000)  # a bubble rings at its resonance, rising as it shrinks
        ring = dm.sin(2 * np.pi * np.cumsum(f0 * (1 + 8 * tb)) / sr) * dm.exp(-tb / (length / sr / 3))
        _add_at(bubbles, ring * dm.exp10(rng.uniform(-15, 0) / 20), int(t0 * sr))
    return _at_db(flow, -14) + _at_db(roar, -20) + _at_db(bubbles, -24)


def _ohallway(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Hallway: a quiet ventilated corridor, echoing footsteps, doors closing, distant talkers."""
    vent = _filter(_colored_noise(rng, n, 1.0), sr, "lowpass", 2000)
    steps = _footsteps(rng, n, sr, 0.2, 150, 1500, 0.025)
    doors = np.zeros(n)
    for t0 in _event_times(rng, n / sr, 1 / 8):
        thump = _resonant_hit(rng, sr, 60, 250, 4, 0.12)
        latch = _resonant_hit(rng, sr, 1500, 5000, 3, 0.01)
        _add_at(doors, thump * dm.exp10(rng.uniform(-6, 0) / 20), int(t0 * sr))
        _add_at(doors, 0.5 * latch, int((t0 + rng.uniform(0.01, 0.05)) * sr))
    hits = _room_reverb(rng, _at_db(steps, 0) + _at_db(doors, 2), sr, 1.2, 0.5)  # hard walls
    voices = _filter(_babble(rng, n, sr, 2, rt60_s=1.2, wet=0.8, pause_s=(1.0, 5.0)), sr, "lowpass", 3000)
    return _at_db(vent, -34) + _at_db(hits, -18) + _at_db(voices, -30)


def _omeeting(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Meeting room: four people talking across a table in a small room, paper, a laptop keyboard."""
    talk = _babble(rng, n, sr, 4, rt60_s=0.35, wet=0.3, pause_s=(0.3, 2.0))
    paper = _bursts(rng, n, sr, 0.3, (0.2, 0.6), (1500.0, 7000.0)) * (rng.uniform(0, 1, n) > 0.3)  # crackle
    hvac = _filter(_colored_noise(rng, n, 0.8), sr, "lowpass", 2000)
    return _at_db(talk, -14) + _at_db(paper, -30) + _at_db(_typing(rng, n, sr, 0.08), -30) + _at_db(hvac, -34)


def _pstation(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Train station: a crowd of twelve in a large reverberant hall, trains rumbling in and out, steps."""
    crowd = _babble(rng, n, sr, 10, rt60_s=1.6, wet=0.55)
    trains = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (25.0, 250.0)) * _slow_envelope(rng, n, sr, 0.05, 14)
    steps = _room_reverb(rng, _footsteps(rng, n, sr, 0.4, 150, 1200, 0.02), sr, 2.0, 0.6)
    return _at_db(crowd, -14) + _at_db(trains, -20) + _at_db(steps, -28)


def _tbus(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Inside a bus: a six-cylinder diesel at low revs, road and body rumble, rattles, a couple of passengers."""
    engine = _engine(rng, n, sr, 900, 3, 30, 8)  # a diesel is rich in harmonics
    road = _filter(_colored_noise(rng, n, 2.0), sr, "bandpass", (30.0, 600.0)) * _slow_envelope(rng, n, sr, 0.2, 4)
    rattle = _clatter(rng, n, sr, 0.6, 300, 2500)
    chat = _filter(_babble(rng, n, sr, 2, rt60_s=0.3, wet=0.3, pause_s=(0.5, 4.0)), sr, "highpass", 200)
    return _at_db(engine, -16) + _at_db(road, -14) + _at_db(rattle, -36) + _at_db(chat, -38)


def _tmetro(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Inside a metro: rail roar, the clack of wheels over joints, traction-motor whine, squeal, passengers."""
    speed = _slow_envelope(rng, n, sr, 0.05, 6)
    roar = _filter(_colored_noise(rng, n, 1.5), sr, "bandpass", (40.0, 1500.0)) * speed
    whine = dm.sin(2 * np.pi * np.cumsum(rng.uniform(400, 700) * speed) / sr)
    clacks = np.zeros(n)
    gap = rng.uniform(0.9, 1.3)  # rail length over speed
    for k in range(int(n / sr / gap) + 1):
        for axle in (0.0, 0.12):  # the two axles of a bogie
            _add_at(clacks, _resonant_hit(rng, sr, 80, 600, 3, 0.03), int((k * gap + axle) * sr))
    squeal = _bursts(rng, n, sr, 1 / 12, (1.0, 3.0), (2500.0, 3200.0))
    chat = _babble(rng, n, sr, 2, rt60_s=0.3, wet=0.3, pause_s=(0.5, 4.0))
    return _at_db(roar, -12) + _at_db(whine, -30) + _at_db(clacks, -27) + _at_db(squeal, -32) + _at_db(chat, -38)


_GENERATORS: dict[str, EnvGenerator] = {
    "DKITCHEN": _dkitchen,
    "DLIVING": _dliving,
    "DWASHING": _dwashing,
    "NFIELD": _nfield,
    "NPARK": _npark,
    "NRIVER": _nriver,
    "OHALLWAY": _ohallway,
    "OMEETING": _omeeting,
    "OOFFICE": _ooffice,
    "PCAFETER": _pcafeter,
    "PRESTO": _presto,
    "PSTATION": _pstation,
    "SCAFE": _scafe,
    "SPSQUARE": _spsquare,
    "STRAFFIC": _straffic,
    "TBUS": _tbus,
    "TCAR": _tcar,
    "TMETRO": _tmetro,
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
    for env in progress(envs, desc="DEMAND noise", unit="env"):
        rate = demand_sample_rate(env)
        audio = synth_noise(env, duration_s, rate, n_channels, seed)
        path = out / f"{env}_{rate // 1000}k.zip"
        with DeterministicZip(path) as archive:
            for ch in range(n_channels):
                archive.add(f"{env}/ch{ch + 1:02d}.wav", wav_bytes(audio[ch], rate, "PCM_16"))
        written.append(path)
    return written
