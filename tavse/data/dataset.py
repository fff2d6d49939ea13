"""Torch Datasets: on-the-fly training mixtures and frozen (validation/test) mixture lists.

Every random choice of a training sample comes from an RNG seeded by ``(seed, epoch, index)``,
never from global or per-worker state, so a sample is the same whichever worker builds it and
in whatever order: a run resumed at a given epoch and step sees exactly the data it would have
seen. Stores and noise files are opened lazily in the process that reads them, so the
Datasets can be built before DataLoader workers fork.

Returned items (dicts of tensors): ``noisy`` and ``clean`` (N,) float32 at 16 kHz,
``snr_db`` () float32, and per requested modality ``rgb`` (T, 3, S, S) / ``thermal``
(T, 1, S, S) float32 in [0, 1]. :class:`MixtureSet` adds ``mix_id`` (str) and ``index``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from tavse.common.config import STREAMS, BabbleConfig
from tavse.common.seeding import stable_seed
from tavse.corpus.store import UtteranceStore
from tavse.data.babble import BabbleMaker, utterance_speakers
from tavse.data.mixtures import (
    Mixture,
    NoiseFile,
    check_noise_long_enough,
    choose_noise,
    mix_signals,
    read_noise_manifest,
    read_utterance_manifest,
)
from tavse.data.segments import aligned_hop, frames_to_samples, segment_starts, span_samples, utterance_samples

log = logging.getLogger(__name__)

_STREAM = {"rgb": "rgb", "thermal": "thr"}  # modality name -> store stream
_NOISE_REDRAWS = 8  # a digitally silent noise slice cannot be mixed at an SNR: draw another


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    mods = tuple(modalities)
    bad = [m for m in mods if m not in STREAMS]
    if bad or len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be distinct names from {STREAMS}, got {list(mods)}")
    return mods


class NoiseBank:
    """Reads slices of the noise WAVs under ``noise_dir`` without loading whole files."""

    def __init__(self, noise_dir: str | Path, files: Sequence[NoiseFile | tuple[str, str, int]] = ()):
        self.noise_dir = Path(noise_dir)
        self.files = [NoiseFile(str(p), str(e), int(n)) for p, e, n in files]

    @classmethod
    def from_manifest(cls, noise_dir: str | Path, split: str) -> NoiseBank:
        """The files of ``split`` listed in ``noise_dir/manifest.csv``."""
        return cls(noise_dir, read_noise_manifest(Path(noise_dir) / "manifest.csv", split))

    def read(self, path: str, offset: int, n: int) -> np.ndarray:
        """Samples ``[offset, offset + n)`` of ``path`` (relative to the noise folder) as float32."""
        full = self.noise_dir / path
        # Opened per read: a handle shared across forked workers would share its file position.
        with sf.SoundFile(str(full)) as fh:
            if fh.channels != 1:
                raise ValueError(f"{full}: {fh.channels} channels, expected mono")
            if offset < 0 or offset + n > fh.frames:
                raise ValueError(f"{full}: slice [{offset}, {offset + n}) outside its {fh.frames} samples")
            fh.seek(offset)
            x = fh.read(n, dtype="float32")
        if len(x) != n:  # a header promising more samples than the file holds
            raise ValueError(f"{full}: read {len(x)} of {n} samples at offset {offset} (truncated file?)")
        return x

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str, int]:
        """A random ``n``-sample slice (every slice of every file equally likely): samples, path, offset."""
        k, offset = choose_noise(rng, self.files, n)
        path = self.files[k].path
        return self.read(path, offset, n), path, offset


class _StoreItems:
    """Shared reading of clean audio and visual streams from one split's store."""

    def __init__(self, store_path: str | Path, modalities: Sequence[str]):
        self.store_path = Path(store_path)
        self.store = UtteranceStore(self.store_path)  # holds no open handle: safe across fork
        self.modalities = _check_modalities(modalities)

    def visual(self, utt_id: str, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Requested streams of frames ``[start, stop)``, channels first, scaled to [0, 1]."""
        out = {}
        for m in self.modalities:  # streams the variant does not use are never read
            x = torch.from_numpy(self.store.frames(utt_id, _STREAM[m], start, stop))
            x = x.permute(0, 3, 1, 2).contiguous() if m == "rgb" else x.unsqueeze(1)
            out[m] = x.float().div_(255.0)
        return out


class TrainingSet(Dataset):
    """Every half-overlapping segment of a split, mixed on the fly with seeded noise and SNR.

    ``noise_split`` names the noise manifest's split to draw from (``"train"`` for training);
    with ``babble``, a share of samples gets babble of the split's other speakers instead
    (:mod:`tavse.data.babble`).

    Items are all ``(utt_id, start)`` with starts ``aligned_hop(segment_frames)`` frames apart.
    Sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)``. Index with ``(e, i)`` (what the
    training's run-long sampler yields, so one DataLoader with persistent workers serves every
    epoch) or with ``i`` alone for the epoch chosen by :meth:`set_epoch`.
    """

    def __init__(
        self,
        store_path: str | Path,
        manifest_csv: str | Path,
        noise_dir: str | Path,
        noise_split: str,
        segment_frames: int,
        snrs_db: Sequence[float],
        seed: int,
        modalities: Sequence[str],
        babble: BabbleConfig | None = None,
    ):
        if not snrs_db:
            raise ValueError("snrs_db is empty")
        self.data = _StoreItems(store_path, modalities)
        self.noise = NoiseBank.from_manifest(noise_dir, noise_split)
        self.segment_frames = segment_frames
        self.n_samples = frames_to_samples(segment_frames)
        self.snrs_db = [float(s) for s in snrs_db]
        self.seed = seed
        self.epoch = 0
        check_noise_long_enough(self.noise.files, self.n_samples, f"{segment_frames}-frame training segments")
        hop = aligned_hop(segment_frames)
        utts = read_utterance_manifest(manifest_csv)
        self.items = [(u, s) for u, n in utts for s in segment_starts(n, segment_frames, hop)]
        short = sum(1 for _, n in utts if n < segment_frames)
        if short:
            log.warning(
                "%s: %d of %d utterances shorter than %d frames give no segments",
                manifest_csv,
                short,
                len(utts),
                segment_frames,
            )
        if not self.items:
            raise ValueError(f"{manifest_csv}: no utterance is {segment_frames} frames or longer")
        self.speakers = utterance_speakers(manifest_csv)
        self.babble = None
        if babble is not None and babble.prob > 0:
            self.babble = BabbleMaker(
                babble, [(u, utterance_samples(n)) for u, n in utts], self.speakers, self.data.store.audio
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.data.modalities

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose mixtures ``__getitem__`` builds."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} segments")
        i %= len(self)  # negative indices seed like their positive twins
        utt_id, start = self.items[i]
        rng = np.random.default_rng(stable_seed("train", self.seed, int(epoch), i))
        snr = self.snrs_db[int(rng.integers(len(self.snrs_db)))]
        noise = None
        if self.babble is not None and self.babble.wanted(rng):
            noise = self.babble.draw(rng, self.speakers[utt_id], self.n_samples)
            if noise is not None and not np.any(noise):
                noise = None  # every talker silent in this stretch: use the split's noise
        for _ in range(_NOISE_REDRAWS if noise is None else 0):
            noise, _, _ = self.noise.draw(rng, self.n_samples)
            if np.any(noise):
                break
        assert noise is not None  # babble or at least one split-noise draw (_NOISE_REDRAWS >= 1)
        a0 = frames_to_samples(start)
        clean = self.data.store.audio(utt_id, a0, a0 + self.n_samples)
        out = {
            "noisy": torch.from_numpy(mix_signals(clean, noise, snr)),
            "clean": torch.from_numpy(clean),
            "snr_db": torch.tensor(snr, dtype=torch.float32),
        }
        out.update(self.data.visual(utt_id, start, start + self.segment_frames))
        return out


class MixtureSet(Dataset):
    """The mixtures of a frozen list, rebuilt exactly (no randomness)."""

    def __init__(
        self, store_path: str | Path, noise_dir: str | Path, mixtures: Sequence[Mixture], modalities: Sequence[str]
    ):
        self.data = _StoreItems(store_path, modalities)
        self.noise = NoiseBank(noise_dir)
        self.mixtures = list(mixtures)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.data.modalities

    def __len__(self) -> int:
        return len(self.mixtures)

    def __getitem__(self, i: int) -> dict[str, Any]:
        m = self.mixtures[i]
        a0, a1 = span_samples(m.start_frame, m.n_frames)
        clean = self.data.store.audio(m.utt_id, a0, a1)
        noise = self.noise.read(m.noise_path, m.noise_offset, a1 - a0)
        out: dict[str, Any] = {
            "noisy": torch.from_numpy(mix_signals(clean, noise, m.snr_db)),
            "clean": torch.from_numpy(clean),
            "snr_db": torch.tensor(m.snr_db, dtype=torch.float32),
            "mix_id": m.mix_id,
            "index": torch.tensor(i % len(self), dtype=torch.int64),
        }
        out.update(self.data.visual(m.utt_id, m.start_frame, m.start_frame + m.n_frames))
        return out


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack each tensor field along a new batch dimension; keep string fields (``mix_id``) as lists."""
    out: dict[str, Any] = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in vals}
            if len(shapes) > 1:
                raise ValueError(f"cannot stack {k!r} of shapes {sorted(shapes)} (whole utterances need batch_size=1)")
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out
