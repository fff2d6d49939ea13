"""SpeakingFaces archives in the real member layout, built from the real frame of ../shared (MIT licence).

``aligned_session_one.png`` holds one real frame of one subject: x in [0, 464) the aligned RGB
frame, x in [464, 928) the thermal frame in the FLIR Iron palette (both 464x348, shared pixel
coordinates). Frames of an utterance are that frame shifted by f pixels; audio is a 44.1 kHz tone
as long as the frames.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tavse.common.io import DeterministicZip
from tests.sfzip import png, wav
from tests.shared_fixtures import real_image

# (trial, position, command, missing aligned-RGB frame or None): four commands, one with a frame-number gap
UTTERANCES = ((1, 1, 40, None), (1, 1, 41, None), (1, 2, 42, 3), (2, 1, 40, None))


def real_panels() -> tuple[np.ndarray, np.ndarray]:
    """(aligned RGB, thermal Iron) 348x464x3 uint8 panels of the real fixture (a skip where ../shared is absent)."""
    img = real_image("aligned_session_one.png")
    return np.ascontiguousarray(img[:, :464]), np.ascontiguousarray(img[:, 464:928])


def tone(n_frames: int) -> bytes:
    """A mono 16-bit 44.1 kHz WAV of ``n_frames`` video frames (1575 samples each)."""
    t = np.arange(n_frames * 1575) / 44100
    return wav((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def write_real_layout_archive(
    path: Path, speaker: int = 7, *, frames: int = 4, aligned: bool = True, thermal: str = "iron", utterances=UTTERANCES
) -> Path:
    """``sub_{speaker}_ia/trial_{t}/{rgb_image_cmd_aligned,thr_image_cmd,mic1_audio_cmd_trim,mic2_audio_cmd_trim}/``.

    ``aligned=False`` leaves out the aligned RGB folder; ``thermal="grey"`` writes the thermal
    frames as greyscale instead of Iron pseudo-colour.
    """
    rgb, thr = real_panels()
    if thermal == "grey":
        thr = np.repeat(cv2.cvtColor(thr, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    with DeterministicZip(path) as z:
        for trial, pos, cmd, gap in utterances:
            root, stem = f"sub_{speaker}_ia/trial_{trial}", f"{speaker}_{trial}_2_{pos}_{cmd}"
            for f in range(1, frames + 1):
                if aligned and f != gap:
                    z.add(f"{root}/rgb_image_cmd_aligned/{stem}_{f}_3.png", png(np.roll(rgb, f, axis=1)))
                z.add(f"{root}/thr_image_cmd/{stem}_{f}_1.png", png(np.roll(thr, f, axis=1)))
            z.add(f"{root}/mic1_audio_cmd_trim/{stem}_1.wav", tone(frames))
            z.add(f"{root}/mic2_audio_cmd_trim/{stem}_2.wav", tone(frames))
    return path
