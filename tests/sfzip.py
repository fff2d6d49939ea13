"""Build small SpeakingFaces-layout archives for tests, including deliberately broken ones."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from tavse.common.io import DeterministicZip

FPS, SR = 28, 44100


def png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def wav(samples: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


@dataclass
class Utt:
    """One utterance to write; any field may be overridden to break it."""

    trial: int = 1
    position: int = 1
    command: int = 7
    rgb: list[np.ndarray] = field(default_factory=list)
    thermal: list[np.ndarray] = field(default_factory=list)
    audio: bytes | None = None  # mic1 WAV bytes; None = no mic1 member
    rgb_bytes: dict[int, bytes] = field(default_factory=dict)  # frame -> raw bytes override


def blank_utt(n_frames: int = 6, size: tuple[int, int] = (64, 48), **kw) -> Utt:
    """An utterance of flat grey frames and a tone of the matching length."""
    w, h = size
    frames = [np.full((h, w, 3), 90 + i, np.uint8) for i in range(n_frames)]
    t = np.arange(int(n_frames * SR / FPS)) / SR
    kw.setdefault("audio", wav((0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)))
    return Utt(rgb=frames, thermal=[f.copy() for f in frames], **kw)


def write_archive(
    path: Path, speaker: int, utts: list[Utt], prefix: str | None = None, extra: dict[str, bytes] | None = None
) -> Path:
    """Write ``sub_{speaker}_ia.zip``-style archive at ``path`` with the real member naming."""
    prefix = f"sub_{speaker}_ia/" if prefix is None else prefix
    with DeterministicZip(path) as z:
        for u in utts:
            root = f"{prefix}trial_{u.trial}"
            stem = f"{speaker}_{u.trial}_2_{u.position}_{u.command}"
            for i, f in enumerate(u.rgb, 1):
                z.add(f"{root}/rgb_image_cmd_aligned/{stem}_{i}_3.png", u.rgb_bytes.get(i) or png(f))
            for i, f in enumerate(u.thermal, 1):
                z.add(f"{root}/thr_image_cmd/{stem}_{i}_1.png", png(f))
            if u.audio is not None:
                z.add(f"{root}/mic1_audio_cmd_trim/{stem}_1.wav", u.audio)
        for name, data in (extra or {}).items():
            z.add(name, data)
    return path
