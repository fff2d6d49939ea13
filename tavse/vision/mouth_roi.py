"""Mouth region of interest: FaceMesh lip landmarks tracked over one command, a smoothed square box.

The box is found on the *aligned* RGB frame and applied unchanged to the thermal frame, which
shares its pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d

# FaceMesh indices: the 40 lip points of FACEMESH_LIPS, mouth corners, inner-lip midpoints.
LIP_POINTS = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
    185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)
CORNER_LEFT, CORNER_RIGHT, INNER_UPPER, INNER_LOWER = 61, 291, 13, 14
_COL = {p: i for i, p in enumerate(LIP_POINTS)}


@dataclass
class MouthTrack:
    """Per-frame mouth geometry of one command, in pixels of the aligned frame."""

    boxes: np.ndarray      # (F, 3) float64: centre x, centre y, side — smoothed and gap-filled
    detected: np.ndarray   # (F,) bool: FaceMesh found a face on this frame
    ran: np.ndarray        # (F,) bool: FaceMesh was run on this frame (see landmark_stride)
    lip_gap: np.ndarray    # (F,) float64: inner-lip gap / mouth width; NaN where not measured

    @property
    def detection_ratio(self) -> float:
        """Share of the frames FaceMesh was run on where it found a face."""
        return float(self.detected.sum() / max(1, self.ran.sum()))


def _face_mesh(static: bool):
    import mediapipe as mp  # imported lazily: it is slow to import and pulls in TensorFlow Lite

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static, max_num_faces=1, refine_landmarks=False,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    )


def detect_lips(frames: Sequence[np.ndarray], stride: int = 1, static: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Lip landmarks (F, 40, 2) in pixels, NaN where FaceMesh was not run or found no face.

    ``static=False`` tracks across the frames of one command (one FaceMesh per call), which is
    what ingest uses; ``static=True`` detects every frame from scratch (the benchmark baseline).
    ``stride`` runs FaceMesh on every n-th frame only (and always on the last one).
    """
    n = len(frames)
    lips = np.full((n, len(LIP_POINTS), 2), np.nan)
    ran = np.zeros(n, bool)
    todo = sorted(set(range(0, n, stride)) | ({n - 1} if n else set()))
    with _face_mesh(static) as mesh:
        for f in todo:
            img = frames[f]
            h, w = img.shape[:2]
            res = mesh.process(img)
            ran[f] = True
            if res.multi_face_landmarks:
                lm = res.multi_face_landmarks[0].landmark
                lips[f] = [(lm[p].x * w, lm[p].y * h) for p in LIP_POINTS]
    return lips, ran


def track_from_lips(lips: np.ndarray, ran: np.ndarray, box_scale: float, smooth_frames: int) -> MouthTrack:
    """Square boxes from lip landmarks: centred on the lips, side ``box_scale`` x mouth width.

    Frames without landmarks are filled by linear interpolation between detected neighbours
    (held constant past the ends), then the track is smoothed by a centred moving average.
    Raises ValueError if no frame has landmarks.
    """
    n = lips.shape[0]
    detected = ~np.isnan(lips[:, 0, 0])
    if not detected.any():
        raise ValueError("no face detected in any frame")
    lo, hi = np.full((n, 2), np.nan), np.full((n, 2), np.nan)
    lo[detected], hi[detected] = lips[detected].min(axis=1), lips[detected].max(axis=1)
    centre = (lo + hi) / 2
    width = np.linalg.norm(lips[:, _COL[CORNER_RIGHT]] - lips[:, _COL[CORNER_LEFT]], axis=1)
    raw = np.column_stack([centre, box_scale * width])
    idx = np.flatnonzero(detected)
    t = np.arange(n)
    filled = np.column_stack([np.interp(t, idx, raw[idx, k]) for k in range(3)])
    boxes = uniform_filter1d(filled, size=smooth_frames, axis=0, mode="nearest") if smooth_frames > 1 else filled
    gap = (lips[:, _COL[INNER_LOWER], 1] - lips[:, _COL[INNER_UPPER], 1]) / width
    gap[~ran] = np.nan
    return MouthTrack(boxes=boxes, detected=detected & ran, ran=ran.copy(), lip_gap=gap)


def box_transform(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine matrix mapping the square ``box`` (cx, cy, side) onto a ``size`` x ``size`` crop."""
    cx, cy, side = box
    s = size / side
    x0, y0 = cx - side / 2, cy - side / 2
    # Pixel centres sit at +0.5: crop (i + 0.5) = s * (frame (x + 0.5) - x0).
    return np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]], np.float64)


def crop(img: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop the square ``box`` from ``img`` and resize to ``size``; outside the frame replicates the border."""
    return cv2.warpAffine(img, box_transform(box, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
