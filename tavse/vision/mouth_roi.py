"""Mouth region of interest: FaceMesh lip landmarks over one command, a smoothed square box.

The box is found on the *aligned* RGB frame and applied unchanged to the thermal frame, which
shares its pixel coordinates.

Stability across CPUs. FaceMesh runs TFLite float kernels (XNNPACK and OpenCV pick AVX-512, AVX2
or SSE code per CPU), so its landmarks differ between machines by small amounts. Ingest therefore

- detects every sampled frame from scratch (:func:`track_mouth`, ``static=True``): FaceMesh's
  tracking mode feeds each frame's landmarks into the next frame's region of interest, which
  amplifies a 1e-3 px kernel difference into up to ~1 px over a command; per-frame detection
  keeps it at ~1e-2 px (and is closer to the per-frame reference, see ``bench.ingest``);
- snaps each smoothed box to whole pixels (:func:`snap_boxes`: integer side and top-left
  corner), so a landmark difference far below a pixel changes no box unless the smoothed value
  sits within that difference of a rounding boundary (x.5);
- crops with integer arithmetic only (:func:`crop`: exact rational sample positions, 11-bit
  fixed-point bilinear weights, integer accumulation), so equal boxes give equal crop bytes on
  every CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter1d

from tavse.common.logs import native_noise_filtered

# FaceMesh indices: the 40 lip points of FACEMESH_LIPS, mouth corners, inner-lip midpoints.
LIP_POINTS = (
    0,
    13,
    14,
    17,
    37,
    39,
    40,
    61,
    78,
    80,
    81,
    82,
    84,
    87,
    88,
    91,
    95,
    146,
    178,
    181,
    185,
    191,
    267,
    269,
    270,
    291,
    308,
    310,
    311,
    312,
    314,
    317,
    318,
    321,
    324,
    375,
    402,
    405,
    409,
    415,
)
CORNER_LEFT, CORNER_RIGHT, INNER_UPPER, INNER_LOWER = 61, 291, 13, 14
_COL = {p: i for i, p in enumerate(LIP_POINTS)}


@dataclass
class MouthTrack:
    """Per-frame mouth geometry of one command, in pixels of the aligned frame."""

    boxes: np.ndarray  # (F, 3) float64: centre x, centre y, side of the crop box, snapped to whole
    # pixels (integer side and top-left corner; see snap_boxes)
    detected: np.ndarray  # (F,) bool: FaceMesh found a face on this frame
    ran: np.ndarray  # (F,) bool: FaceMesh was run on this frame (see landmark_stride)
    lip_gap: np.ndarray  # (F,) float64: inner-lip gap / mouth width; NaN where not measured
    smoothed: np.ndarray | None = None  # (F, 3) float64: the smoothed, gap-filled box before snapping

    @property
    def detection_ratio(self) -> float:
        """Share of the frames FaceMesh was run on where it found a face."""
        return float(self.detected.sum() / max(1, self.ran.sum()))


def _new_face_mesh(static: bool):
    import mediapipe as mp  # imported lazily: it is slow to import and pulls in TensorFlow Lite

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static,
        max_num_faces=1,
        refine_landmarks=False,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    )


# A 64 px face (from the synthetic corpus) that FaceMesh finds: see _face_mesh.
WARMUP_FACE = Path(__file__).with_name("facemesh_warmup.png")
_warmup_lock = threading.Lock()
_warmed_up = False  # in this process


def _face_mesh(static: bool):
    """A FaceMesh whose start-up notices are filtered out (see :func:`tavse.common.logs.native_noise_filtered`).

    MediaPipe writes them from its own threads by the end of a graph's first frame, and once per
    process at the first face found: a throw-away instance sees a face first (once per process),
    then the new one a blank frame (no face: it carries no state to the next frame, in tracking
    mode either).
    """
    global _warmed_up
    with native_noise_filtered():
        with _warmup_lock:
            if not _warmed_up:
                import cv2

                with _new_face_mesh(True) as probe:
                    probe.process(cv2.cvtColor(cv2.imread(str(WARMUP_FACE)), cv2.COLOR_BGR2RGB))
                _warmed_up = True
        mesh = _new_face_mesh(static)
        mesh.process(np.zeros((32, 32, 3), np.uint8))
    return mesh


def _frames_to_run(n: int, stride: int) -> list[int]:
    """Every ``stride``-th frame and always the last one."""
    return sorted(set(range(0, n, stride)) | ({n - 1} if n else set()))


def _lip_points(results: Sequence, frames: Sequence[np.ndarray], todo: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(F, 40, 2) lip landmarks in pixels and the (F,) frames run, from FaceMesh results of the frames ``todo``."""
    lips = np.full((len(frames), len(LIP_POINTS), 2), np.nan)
    ran = np.zeros(len(frames), bool)
    for f, res in zip(todo, results):
        ran[f] = True
        if res.multi_face_landmarks:
            h, w = frames[f].shape[:2]
            lm = res.multi_face_landmarks[0].landmark
            lips[f] = [(lm[p].x * w, lm[p].y * h) for p in LIP_POINTS]
    return lips, ran


def detect_lips(frames: Sequence[np.ndarray], stride: int = 1, static: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Lip landmarks (F, 40, 2) in pixels, NaN where FaceMesh was not run or found no face.

    ``static=False`` tracks across the frames of one command (one FaceMesh per call: each frame's
    landmarks place the next frame's region of interest); ``static=True`` detects every frame it
    runs on from scratch (what ingest uses, see the module notes; also the benchmark baseline).
    ``stride`` runs FaceMesh on every n-th frame only (and always on the last one).
    """
    todo = _frames_to_run(len(frames), stride)
    with _face_mesh(static) as mesh:
        results = [mesh.process(frames[f]) for f in todo]
    return _lip_points(results, frames, todo)


class LipDetector:
    """Per-frame (static-mode) FaceMesh in ``threads`` threads, kept open for many commands.

    Static mode carries nothing from one frame to the next, so which instance gets a frame
    changes no landmark (bit for bit), and MediaPipe releases the GIL while its graph runs: two
    threads keep two cores busy. Keeping the instances open spares their creation per command
    (~25 ms CPU each, ~2 s for the first in a process).
    """

    def __init__(self, threads: int = 1):
        self._meshes = [_face_mesh(True) for _ in range(max(1, threads))]
        self._pool = ThreadPoolExecutor(len(self._meshes), thread_name_prefix="facemesh") if threads > 1 else None

    def __enter__(self) -> LipDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        for mesh in self._meshes:
            mesh.close()

    def detect(self, frames: Sequence[np.ndarray], stride: int) -> tuple[np.ndarray, np.ndarray]:
        """As :func:`detect_lips` with ``static=True``; the frames run are split into one contiguous block per instance."""
        todo = _frames_to_run(len(frames), stride)
        blocks = np.array_split(np.asarray(todo, int), len(self._meshes))

        def run(mesh, block) -> list:
            return [mesh.process(frames[f]) for f in block]

        if self._pool is None:
            results = run(self._meshes[0], todo)
        else:
            futures = [self._pool.submit(run, m, b) for m, b in zip(self._meshes, blocks)]
            results = [r for fut in futures for r in fut.result()]
        return _lip_points(results, frames, todo)


def track_from_lips(lips: np.ndarray, ran: np.ndarray, box_scale: float, smooth_frames: int) -> MouthTrack:
    """Square boxes from lip landmarks: centred on the lips, side ``box_scale`` x mouth width.

    Frames without landmarks are filled by linear interpolation between detected neighbours
    (held constant past the ends), then the track is smoothed by a centred moving average
    (``MouthTrack.smoothed``) and snapped to whole pixels (``MouthTrack.boxes``, :func:`snap_boxes`).
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
    smoothed = uniform_filter1d(filled, size=smooth_frames, axis=0, mode="nearest") if smooth_frames > 1 else filled
    gap = (lips[:, _COL[INNER_LOWER], 1] - lips[:, _COL[INNER_UPPER], 1]) / width
    gap[~ran] = np.nan
    return MouthTrack(
        boxes=snap_boxes(smoothed), detected=detected & ran, ran=ran.copy(), lip_gap=gap, smoothed=smoothed
    )


def track_mouth(
    frames: Sequence[np.ndarray], stride: int, box_scale: float, smooth_frames: int, detector: LipDetector | None = None
) -> MouthTrack:
    """The mouth track ingest uses: per-frame FaceMesh detection on every ``stride``-th frame, snapped boxes.

    ``detector``: an open :class:`LipDetector` to use (the same landmarks; one is made for this call otherwise).
    Raises ValueError if no frame has a face.
    """
    lips, ran = (
        detector.detect(frames, stride) if detector is not None else detect_lips(frames, stride=stride, static=True)
    )
    return track_from_lips(lips, ran, box_scale, smooth_frames)


def pixel_box(box: Sequence[float] | np.ndarray) -> tuple[int, int, int]:
    """``(x0, y0, side)`` in whole pixels of the square ``box`` (cx, cy, side).

    The side is rounded to a whole number of pixels (at least 1) and the top-left corner
    ``(cx - side/2, cy - side/2)`` to whole pixels, each by one rounding (half to even). Values
    already on that grid are returned unchanged, so ``pixel_box`` of a snapped box is exact.
    """
    cx, cy, side = (float(v) for v in box)
    s = max(1, int(np.rint(side)))
    return int(np.rint(cx - s / 2)), int(np.rint(cy - s / 2)), s


def snap_boxes(boxes: np.ndarray) -> np.ndarray:
    """(F, 3) boxes (cx, cy, side) snapped to whole pixels: integer side and top-left corner (:func:`pixel_box`).

    The centre moves by at most half a pixel per axis. A float difference ``d`` in the input
    changes a snapped box only where a value lies within ``d`` of a rounding boundary (x.5).
    """
    out = np.empty((len(boxes), 3), np.float64)
    for i, b in enumerate(np.asarray(boxes, np.float64)):
        x0, y0, s = pixel_box(b)
        out[i] = (x0 + s / 2, y0 + s / 2, s)
    return out


_WEIGHT_BITS = 11  # fixed-point bilinear weights: w in [0, 2**11]; 255 * 2**22 < 2**31


@lru_cache(maxsize=1024)
def _resample_1d(side: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (2, size) from the box start and fixed-point weights (2, size) of a 1-D bilinear resample.

    Output pixel ``i`` samples the source at ``start + ((2i + 1) * side - size) / (2 * size)``
    (pixel centres at +0.5, as cv2.resize/warpAffine), an exact rational: its integer part and
    fraction come from integer arithmetic, the weights are that fraction in 1/2**_WEIGHT_BITS
    (rounded half up).
    """
    num = (2 * np.arange(size, dtype=np.int64) + 1) * side - size
    den = 2 * size
    k = num // den  # floor, also for negative num
    frac = num - k * den  # in [0, den)
    one = 1 << _WEIGHT_BITS
    w1 = (frac * one + den // 2) // den
    offsets, weights = np.stack([k, k + 1]), np.stack([one - w1, w1])
    offsets.flags.writeable = weights.flags.writeable = False
    return offsets, weights


def crop(
    img: np.ndarray, box: np.ndarray, size: int, pixel_map: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Crop the square ``box`` (cx, cy, side) from ``img`` and resize to ``size`` x ``size``; outside the frame replicates the border.

    The box is first snapped to whole pixels (:func:`pixel_box`). Bilinear interpolation in
    integer arithmetic only (sample positions exact, weights in 1/2048, integer sums, one
    rounding half up at the end), so the result does not depend on the CPU's vector units.
    Integer images give the same dtype; float images are interpolated with the same weights in
    float64.

    ``pixel_map``, a per-pixel conversion (e.g. Iron colours to temperatures), is applied to the
    window of source pixels the crop reads only: the same bytes as ``crop(pixel_map(img), ...)``
    at a fraction of the cost.
    """
    x0, y0, s = pixel_box(box)
    h, w = img.shape[:2]
    dy, wy = _resample_1d(s, size)
    dx, wx = _resample_1d(s, size)
    ys = np.clip(y0 + dy, 0, h - 1)  # clamped: the border is replicated
    xs = np.clip(x0 + dx, 0, w - 1)
    # The source pixels the output reads (rows: both taps of every output row; columns: both
    # taps of every output column), from the window that holds them.
    y_lo, x_lo = int(ys[0, 0]), int(xs[0, 0])
    window = img[y_lo : int(ys[1, -1]) + 1, x_lo : int(xs[1, -1]) + 1]
    if pixel_map is not None:
        window = pixel_map(window)
    channels = int(np.prod(window.shape[2:], dtype=np.int64))
    integer = np.issubdtype(window.dtype, np.integer)
    acc_t = (np.int32 if window.dtype.itemsize == 1 else np.int64) if integer else np.float64
    sub = window.take(ys.ravel() - y_lo, axis=0).take(xs.ravel() - x_lo, axis=1).astype(acc_t)
    sub = sub.reshape(2 * size, 2, size * channels)
    # Two exact passes, along x then along y, with no rounding in between.
    wx = np.repeat(wx.astype(acc_t), channels, axis=1)  # (2, size * C)
    rows = sub[:, 0] * wx[0] + sub[:, 1] * wx[1]  # (2 * size, size * C)
    acc = rows[:size] * wy[0, :, None].astype(acc_t) + rows[size:] * wy[1, :, None].astype(acc_t)
    acc = acc.reshape((size, size) + window.shape[2:])
    shift = 2 * _WEIGHT_BITS
    if integer:
        out = (acc + (1 << (shift - 1))) >> shift
        info = np.iinfo(window.dtype)
        return np.clip(out, info.min, info.max).astype(window.dtype)
    return (acc / float(1 << shift)).astype(window.dtype)
