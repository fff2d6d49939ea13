"""Where training segments start, and how video frames map onto 16 kHz samples.

Video runs at 28 fps and audio at 16 kHz, so one frame is 571.43 samples: only every 7th
frame boundary (7 frames = 4000 samples) lands on a whole sample. Segments therefore start
on multiples of 7 frames, and their lengths are multiples of 7, so audio and video cut
exactly together, with no rounding.
"""

from __future__ import annotations

from math import gcd

from tavse.common.rates import FPS, SAMPLE_RATE

ALIGN_FRAMES = FPS // gcd(SAMPLE_RATE, FPS)  # 7: the shortest frame step that is a whole number of samples


def frames_to_samples(frames: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Samples spanned by ``frames`` video frames; ValueError if that is not a whole number."""
    if (frames * sample_rate) % fps:
        raise ValueError(
            f"{frames} frames at {fps} fps are {frames * sample_rate / fps:.3f} samples at {sample_rate} Hz, "
            f"not a whole number (use a multiple of {fps // gcd(sample_rate, fps)} frames)"
        )
    return frames * sample_rate // fps


def utterance_samples(n_frames: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Samples of a whole utterance of ``n_frames`` frames, rounded as ``ingest`` rounds them."""
    return int(round(n_frames * sample_rate / fps))


def span_samples(start_frame: int, n_frames: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> tuple[int, int]:
    """Sample range ``[a0, a1)`` under frames ``[start_frame, start_frame + n_frames)``.

    The start must be exact (an aligned frame); the length is rounded like ``ingest`` rounds a
    whole utterance, so ``span_samples(0, n)`` is the whole stored waveform of an ``n``-frame
    utterance and an aligned segment is exact.
    """
    a0 = frames_to_samples(start_frame, sample_rate, fps)
    return a0, a0 + utterance_samples(n_frames, sample_rate, fps)


def aligned_hop(segment_frames: int, align: int = ALIGN_FRAMES) -> int:
    """Half a segment, rounded down to a multiple of ``align`` frames (at least ``align``)."""
    return max(align, (segment_frames // 2) // align * align)


def segment_starts(n_frames: int, segment_frames: int, hop: int = ALIGN_FRAMES) -> list[int]:
    """Start frames of every ``segment_frames``-long segment that fits in ``n_frames``, ``hop`` apart.

    Starts are multiples of ``hop``, which must itself be a multiple of 7 frames so every start
    lands on a whole audio sample. An utterance shorter than a segment has no starts.
    """
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be positive, got {segment_frames}")
    if hop < 1 or hop % ALIGN_FRAMES:
        raise ValueError(f"hop must be a positive multiple of {ALIGN_FRAMES} frames, got {hop}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return list(range(0, n_frames - segment_frames + 1, hop))
