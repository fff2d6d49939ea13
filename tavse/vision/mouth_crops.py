"""The mouth crops of one utterance's frames, as ingest stores them and ``tavse.enhance`` makes them
from a user's videos; and the check that thermal frames are FLIR Iron pseudo-colour."""

from __future__ import annotations

import numpy as np

from tavse.common.config import IngestConfig
from tavse.corpus.errors import BadInput
from tavse.vision import mouth_roi
from tavse.vision.thermal_palette import iron_residual, iron_to_temperature


def mouth_crops(
    rgb_frames: list[np.ndarray],
    thermal_frames: list[np.ndarray],
    cfg: IngestConfig,
    where: str,
    detector: mouth_roi.LipDetector | None = None,
) -> tuple[np.ndarray, np.ndarray, mouth_roi.MouthTrack]:
    """RGB crops (F, S, S, 3) and temperature-ordered thermal crops (F, S, S) around the tracked mouth.

    FaceMesh detects every ``landmark_stride``-th frame from scratch; the smoothed boxes are
    snapped to whole pixels and cropped with integer arithmetic (see :mod:`tavse.vision.mouth_roi`),
    so that landmark differences between CPUs far below a pixel rarely change a crop byte.
    ``detector``: an open :class:`~tavse.vision.mouth_roi.LipDetector` (same landmarks, see there).
    Raises BadInput("no_face") naming ``where`` if FaceMesh finds too few faces.
    """
    try:
        track = mouth_roi.track_mouth(rgb_frames, cfg.landmark_stride, cfg.box_scale, cfg.smooth_frames, detector)
    except ValueError:
        raise BadInput("no_face", where, "FaceMesh found no face in any frame") from None
    if track.detection_ratio < cfg.min_detection_ratio:
        raise BadInput(
            "no_face",
            where,
            f"face found in {track.detection_ratio:.0%} of frames "
            f"(< min_detection_ratio {cfg.min_detection_ratio:.0%})",
        )
    s = cfg.roi_size
    rgb = np.stack([mouth_roi.crop(f, b, s) for f, b in zip(rgb_frames, track.boxes)])
    thr = np.stack(
        [mouth_roi.crop(f, b, s, pixel_map=iron_to_temperature) for f, b in zip(thermal_frames, track.boxes)]
    )
    return rgb, thr, track


def palette_residual(thermal_frames: list[np.ndarray]) -> float:
    """How far an utterance's thermal frames are from FLIR Iron pseudo-colour (RGB units, 2 decimals).

    The median over the first, middle and last frame of each frame's median
    :func:`~tavse.vision.thermal_palette.iron_residual`, on every second row and column (the
    median barely moves; a quarter of the cost, ~0.5 ms per frame). 1.41 for the real
    SpeakingFaces fixture frame, 0.0 for the synthetic corpus (exact Iron colours); 25 for that
    frame in greyscale, 16 in inferno, 83 in jet, 105 for natural RGB. ``ingest.max_palette_residual``
    (6 by default: 4x above real, 2.7x below the nearest other palette) decides.
    """
    idx = sorted({0, len(thermal_frames) // 2, len(thermal_frames) - 1})
    per_frame = [float(np.median(iron_residual(np.ascontiguousarray(thermal_frames[i][::2, ::2])))) for i in idx]
    return round(float(np.median(per_frame)), 2)


def check_palette(thermal_frames: list[np.ndarray], cfg: IngestConfig, where: str) -> float:
    """The utterance's :func:`palette_residual`; BadInput ``thermal_not_iron`` naming ``where`` above the threshold.

    ingest maps Iron colours back to temperatures: a greyscale or other-palette frame would be
    "inverted" into meaningless crops without this check.
    """
    r = palette_residual(thermal_frames)
    if r > cfg.max_palette_residual:
        raise BadInput(
            "thermal_not_iron",
            where,
            f"thermal frames are not FLIR Iron pseudo-colour: median distance to the Iron palette {r:.1f} "
            f"RGB units > ingest.max_palette_residual {cfg.max_palette_residual:g} (greyscale or another "
            "palette; the dataset's thr_image_cmd frames are Iron, about 1.4)",
        )
    return r
