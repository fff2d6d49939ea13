"""The embedded default corpus: one ``sub_{id}_ia.zip`` per synthetic speaker, in the real layout.

Per speaker: a voice (espeak-ng), a face identity (a photograph varied in pose and colour), a
thermal signature, and a set of spoken commands. Per command, the clean speech's per-frame
loudness drives the mouth opening — with a per-speaker lag and per-frame jitter, so the video
predicts the speech without copying it — and both cameras are rendered at 28 fps, frame f
covering [(f-1)/28, f/28) s of the 44.1 kHz audio.

The bytes are the same on any x86-64 CPU: no model runs (the base photos' landmarks and
masks are stored, :mod:`tavse.synth.base_faces`), float math that NumPy, OpenBLAS or OpenCV
would dispatch per CPU goes through :mod:`tavse.synth.detmath` or OpenCV's baseline code
(:func:`tavse.synth.faces.portable_opencv`).
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tavse.common.audio import frame_bounds
from tavse.common.config import DataConfig, SynthConfig
from tavse.common.io import DeterministicZip, atomic_path, wav_bytes
from tavse.common.logs import ignore_ctrl_c_in_worker
from tavse.common.progress import progress
from tavse.common.rates import FPS, SPEAKINGFACES_SAMPLE_RATE
from tavse.common.seeding import stable_seed
from tavse.synth import detmath as dm
from tavse.synth.faces import make_identity, render_frames
from tavse.synth.speech import COMMANDS, synthesize, voice_for_speaker

log = logging.getLogger("tavse.synth")

MIN_DURATION_S = 2.6  # the shortest SpeakingFaces command; training segments are 2.5 s


@dataclass(frozen=True)
class SpeakerPlan:
    """Everything that defines one synthetic speaker's archive."""

    speaker: int
    split: str
    commands: tuple[int, ...]
    positions: tuple[int, ...]
    lag_frames: int
    jitter: float
    seed: int


def speaker_ids(cfg: SynthConfig, data: DataConfig) -> dict[str, list[int]]:
    """Synthetic speaker IDs per split, taken from the start of each official ID range."""
    size = cfg.size
    ranges = data.speaker_splits["official"]
    counts = {"train": size.train_speakers, "val": size.val_speakers, "test": size.test_speakers}
    out = {}
    for split, n in counts.items():
        lo, hi = ranges[split]
        if n > hi - lo + 1:
            raise ValueError(f"synth preset {cfg.preset!r}: {n} {split} speakers exceed the ID range {lo}-{hi}")
        out[split] = list(range(lo, lo + n))
    return out


def plan_speaker(speaker: int, split: str, cfg: SynthConfig, seed: int) -> SpeakerPlan:
    """Draw the commands, camera positions and audio-visual lag of one speaker."""
    rng = np.random.default_rng(stable_seed("plan", seed, speaker))
    n = cfg.size.commands_per_speaker
    commands = tuple(sorted(int(c) for c in rng.choice(len(COMMANDS), size=n, replace=False)))
    positions = tuple(cfg.size.positions[i % len(cfg.size.positions)] for i in range(n))
    lo, hi = cfg.mouth_lag_frames
    return SpeakerPlan(speaker, split, commands, positions, int(rng.integers(lo, hi + 1)), cfg.mouth_jitter, seed)


def mouth_openings(loudness_db: np.ndarray, lag_frames: int, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame mouth opening in [0, 1] from per-frame speech loudness.

    The loudest frame opens the mouth fully, 35 dB below it is closed; the video lags the audio
    by ``lag_frames`` and every frame gets Gaussian jitter of std ``jitter``.
    """
    top = float(loudness_db.max())
    opening = np.clip((loudness_db - (top - 35.0)) / 30.0, 0.0, 1.0)
    opening = dm.convolve_valid(np.pad(opening, 1, mode="edge"), np.array([0.25, 0.5, 0.25]))
    if lag_frames:
        opening = np.concatenate([np.full(lag_frames, opening[0]), opening[:-lag_frames]])
    return np.clip(opening + rng.normal(0.0, jitter, opening.shape), 0.0, 1.0)


def command_audio(text: str, plan: SpeakerPlan, rng: np.random.Generator) -> np.ndarray:
    """The 44.1 kHz clean speech of one command, padded with silence to a realistic length."""
    speech, sr = synthesize(text, voice_for_speaker(plan.speaker, plan.seed))
    g = np.gcd(sr, SPEAKINGFACES_SAMPLE_RATE)
    speech = dm.resample_poly(speech, SPEAKINGFACES_SAMPLE_RATE // g, sr // g).astype(np.float32)
    lead, trail = rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.8)
    total = max(MIN_DURATION_S, lead + len(speech) / SPEAKINGFACES_SAMPLE_RATE + trail)
    out = np.zeros(int(round(total * SPEAKINGFACES_SAMPLE_RATE)), np.float32)
    start = int(lead * SPEAKINGFACES_SAMPLE_RATE)
    out[start : start + len(speech)] = speech[: len(out) - start]
    return out


def _loudness_db(audio: np.ndarray, sample_rate: int, fps: int, n_frames: int, floor_db: float = -80.0) -> np.ndarray:
    """RMS level in dBFS of the audio under each of ``n_frames`` video frames.

    :func:`tavse.common.audio.frame_loudness_db` with a CPU-independent ``log10``
    (NumPy's runs SVML on AVX-512 CPUs and libm elsewhere).
    """
    b = frame_bounds(n_frames, sample_rate, fps)
    if b[-1] > len(audio):
        audio = np.pad(audio, (0, b[-1] - len(audio)))
    sq = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    ms = (sq[b[1:]] - sq[b[:-1]]) / np.maximum(1, np.diff(b))
    return np.maximum(10 * dm.log10(np.maximum(ms, 1e-12)), floor_db)


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return buf.tobytes()


def write_speaker_archive(plan: SpeakerPlan, out_dir: Path) -> Path:
    """Write ``sub_{id}_ia.zip`` for one planned speaker (byte-identical for the same plan)."""
    cv2.setNumThreads(1)
    sid = plan.speaker
    identity = make_identity(sid, plan.seed)
    path = out_dir / f"sub_{sid}_ia.zip"
    with DeterministicZip(path) as z:
        for k, (cmd, pos) in enumerate(zip(plan.commands, plan.positions)):
            trial = 1 + k % 2
            rng = np.random.default_rng(stable_seed("command", plan.seed, sid, cmd))
            audio = command_audio(COMMANDS[cmd], plan, rng)
            n_frames = int(FPS * len(audio) / SPEAKINGFACES_SAMPLE_RATE)
            loud = _loudness_db(audio, SPEAKINGFACES_SAMPLE_RATE, FPS, n_frames)
            openings = mouth_openings(loud, plan.lag_frames, plan.jitter, rng)
            rgb, thermal = render_frames(
                identity, openings, seed=stable_seed("frames", plan.seed, sid, cmd), position=pos
            )
            root = f"sub_{sid}_ia/trial_{trial}"
            stem = f"{sid}_{trial}_2_{pos}_{cmd}"
            for f in range(n_frames):
                z.add(f"{root}/rgb_image_cmd_aligned/{stem}_{f + 1}_3.png", _png(rgb[f]))
                z.add(f"{root}/thr_image_cmd/{stem}_{f + 1}_1.png", _png(thermal[f]))
            z.add(f"{root}/mic1_audio_cmd_trim/{stem}_1.wav", wav_bytes(audio, SPEAKINGFACES_SAMPLE_RATE))
            # The second microphone hears the same speech with another gain and self-noise.
            mic2 = 0.8 * audio + rng.normal(0, 3e-4, audio.shape).astype(np.float32)
            z.add(f"{root}/mic2_audio_cmd_trim/{stem}_2.wav", wav_bytes(mic2, SPEAKINGFACES_SAMPLE_RATE))
    return path


def _write_one(args: tuple[SpeakerPlan, Path]) -> Path:
    return write_speaker_archive(*args)


def write_subjects_csv(path: Path, plans: list[SpeakerPlan]) -> None:
    """A ``subjects.csv`` in the dataset's format for the synthetic speakers."""
    names = {"train": "Train", "val": "Valid", "test": "Test"}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Sub_ID", "Split", "Age", "Gender", "Ethnicity", "Acc_Trial_1", "Acc_Trial_2"])
    for p in plans:
        voice = voice_for_speaker(p.speaker, p.seed)
        age = 20 + stable_seed("age", p.seed, p.speaker) % 40
        w.writerow(
            [p.speaker, names[p.split], age, "Female" if "+f" in voice.name else "Male", "Synthetic", "None", "None"]
        )
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_corpus(cfg: SynthConfig, data: DataConfig, seed: int) -> list[Path]:
    """Write the whole synthetic corpus into ``cfg.out_dir`` (atomically, as one folder)."""
    plans = [plan_speaker(s, split, cfg, seed) for split, ids in speaker_ids(cfg, data).items() for s in ids]
    out = Path(cfg.out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        jobs = [(p, tmp) for p in plans]
        desc = f"synth corpus ({cfg.preset})"
        if cfg.workers > 1:
            with mp.get_context("spawn").Pool(cfg.workers, initializer=ignore_ctrl_c_in_worker) as pool:
                for _ in progress(pool.imap_unordered(_write_one, jobs), total=len(jobs), desc=desc, unit="spk"):
                    pass
        else:
            for job in progress(jobs, desc=desc, unit="spk"):
                _write_one(job)
        write_subjects_csv(tmp / "subjects.csv", plans)
    return sorted(out.glob("sub_*_ia.zip"))
