"""Babble augmentation for training: other training speakers talking at once in a reverberant room.

Real babble is strangers' speech in a room. In training, strangers are the *other* training
speakers: a sample's babble never contains its own speaker, and since the training store
holds only training speakers, nothing of the validation or test speakers reaches training.
Each talker is a random stretch of one of their utterances at a random gain; the sum is
convolved with one synthetic room response (exponentially decaying noise reaching -60 dB at
RT60). All draws come from the sample's own generator, so a sample is the same in any
worker and after a resume.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from tavse.common.config import BabbleConfig
from tavse.common.rates import SAMPLE_RATE


def utterance_speakers(manifest_csv: str | Path) -> dict[str, int]:
    """``utt_id -> speaker`` from an ``ingest`` manifest."""
    with open(manifest_csv, newline="") as fh:
        return {r["utt_id"]: int(r["speaker"]) for r in csv.DictReader(fh)}


def room_response(rng: np.random.Generator, rt60_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-energy diffuse room impulse response: Gaussian noise decaying by 60 dB over ``rt60_s``."""
    t = np.arange(max(int(rt60_s * sample_rate), 1)) / sample_rate
    ir = rng.standard_normal(t.size) * np.exp(-6.908 * t / rt60_s)  # ln(1000) = 6.908: -60 dB at rt60
    return ir / np.sqrt(np.sum(ir**2))


class BabbleMaker:
    """Draws babble of ``n`` samples for a target speaker from the other speakers' utterances.

    Args:
        spec: probability, talker count, per-talker gain and RT60 ranges (``mix.babble``).
        utterances: ``(utt_id, n_samples)`` of the split's utterances.
        speakers: ``utt_id -> speaker``.
        read_audio: ``(utt_id, start, stop) -> float32 samples`` from the store.
    """

    def __init__(
        self,
        spec: BabbleConfig,
        utterances: Sequence[tuple[str, int]],
        speakers: dict[str, int],
        read_audio: Callable[[str, int, int], np.ndarray],
    ):
        self.spec = spec
        self.read_audio = read_audio
        self.by_speaker: dict[int, list[tuple[str, int]]] = {}
        for utt_id, n in utterances:
            self.by_speaker.setdefault(speakers[utt_id], []).append((utt_id, n))
        self.speakers = sorted(self.by_speaker)

    def wanted(self, rng: np.random.Generator) -> bool:
        """Whether this sample gets babble (one draw, always taken, so later draws do not shift)."""
        return bool(rng.random() < self.spec.prob)

    def draw(self, rng: np.random.Generator, target_speaker: int, n: int) -> np.ndarray | None:
        """Babble (n,) float32 without ``target_speaker``; None when no other speaker exists."""
        others = [s for s in self.speakers if s != target_speaker]
        if not others:
            return None
        lo, hi = self.spec.talkers
        # [min, max] pairs (length checked in config), unpacked so the numpy stubs see two floats
        gain_lo, gain_hi = self.spec.gain_db
        rt60_lo, rt60_hi = self.spec.rt60_s
        k = min(int(rng.integers(lo, hi + 1)), len(others))
        dry = np.zeros(n)
        for speaker in rng.choice(others, size=k, replace=False):
            utt_id, length = self.by_speaker[int(speaker)][int(rng.integers(len(self.by_speaker[int(speaker)])))]
            gain = 10 ** (rng.uniform(gain_lo, gain_hi) / 20)
            if length >= n:  # a random stretch of the utterance
                start = int(rng.integers(length - n + 1))
                dry += gain * self.read_audio(utt_id, start, start + n)
            else:  # the whole utterance at a random place
                at = int(rng.integers(n - length + 1))
                dry[at : at + length] += gain * self.read_audio(utt_id, 0, length)
        wet = fftconvolve(dry, room_response(rng, rng.uniform(rt60_lo, rt60_hi)))[:n]
        return wet.astype(np.float32)
