"""Mouth ROI stability: sub-pixel landmark differences (as between CPUs) leave boxes and crops byte-identical.

FaceMesh's landmarks differ between CPUs by small amounts (float kernels picked per CPU). The
box track is snapped to whole pixels and cropped with integer arithmetic, so such a difference
changes a box, and so a crop, only where a value sits within it of a rounding boundary (x.5).
These tests perturb the inputs by at most 1e-4 px (the size of the differences between CPUs
after per-frame detection is ~1e-3..1e-2 px; 1e-2 px is tested too) and count exactly those cases.
"""

from fractions import Fraction
from math import floor

import cv2
import numpy as np
import pytest

from tavse.vision import mouth_roi as mr

NOISES = (1e-4, 1e-2)  # px: the largest perturbation of every landmark / box coordinate


def _lips(cx, cy, width):
    """(F, 40, 2) landmarks: points on an ellipse, the corners at ±width/2, the inner lips apart."""
    ang = np.linspace(0, 2 * np.pi, len(mr.LIP_POINTS), endpoint=False)
    pts = np.stack([cx[:, None] + width[:, None] / 2 * np.cos(ang), cy[:, None] + width[:, None] / 5 * np.sin(ang)], -1)
    col = {p: i for i, p in enumerate(mr.LIP_POINTS)}
    pts[:, col[mr.CORNER_LEFT]] = np.stack([cx - width / 2, cy], -1)
    pts[:, col[mr.CORNER_RIGHT]] = np.stack([cx + width / 2, cy], -1)
    pts[:, col[mr.INNER_UPPER]] = np.stack([cx, cy - 2], -1)
    pts[:, col[mr.INNER_LOWER]] = np.stack([cx, cy + 4], -1)
    return pts


def _near_boundary(values: np.ndarray, delta: np.ndarray | float) -> np.ndarray:
    """Whether each value lies within ``delta`` of a rounding boundary k + 0.5."""
    return np.abs(values - np.floor(values) - 0.5) <= delta


def _snap_inputs(boxes: np.ndarray) -> np.ndarray:
    """The three values snapping rounds: side, then the corners cx - S/2, cy - S/2 with the rounded side S."""
    side = np.maximum(1, np.rint(boxes[:, 2]))
    return np.column_stack([boxes[:, 2], boxes[:, 0] - side / 2, boxes[:, 1] - side / 2])


@pytest.mark.parametrize("noise", NOISES)
def test_snapped_boxes_ignore_sub_pixel_landmark_noise_except_at_rounding_boundaries(noise):
    rng = np.random.default_rng(0)
    n = 4000
    cx = 230 + np.cumsum(rng.normal(0, 0.7, n))  # a mouth wandering over the frame
    cy = 200 + np.cumsum(rng.normal(0, 0.5, n))
    width = 50 + 6 * np.sin(np.arange(n) / 9) + rng.normal(0, 0.5, n)
    lips = _lips(cx, cy, width)
    noisy = lips + rng.uniform(-noise, noise, lips.shape)
    ran = np.ones(n, bool)
    a = mr.track_from_lips(lips, ran, box_scale=1.8, smooth_frames=5)
    b = mr.track_from_lips(noisy, ran, box_scale=1.8, smooth_frames=5)

    # The perturbation reaches the float track on (nearly) every frame ...
    moved = np.abs(b.smoothed - a.smoothed)
    assert (moved.max(axis=1) > 0).mean() > 0.99
    assert moved.max() < 10 * noise
    # ... but the snapped boxes change only on frames where a rounded value was within the perturbation of x.5 ...
    changed = (a.boxes != b.boxes).any(axis=1)
    delta = np.column_stack([moved[:, 2], moved[:, 0] + moved[:, 2] / 2, moved[:, 1] + moved[:, 2] / 2])
    near = _near_boundary(_snap_inputs(a.smoothed), delta).any(axis=1)
    print(
        f"\n{n} frames, landmarks perturbed by <= {noise} px: float track moved on "
        f"{(moved.max(axis=1) > 0).sum()}, snapped box changed on {changed.sum()}, "
        f"{near.sum()} within the perturbation of a rounding boundary"
    )
    assert not (changed & ~near).any(), "a snapped box changed away from every rounding boundary"
    assert changed.sum() <= near.sum() <= 2 * delta.sum(axis=1).mean() * n * 1.5 + 3
    # ... as they are whole pixels (integer side and corner), the centre within half a pixel of the track.
    for t in (a, b):
        side = t.boxes[:, 2]
        np.testing.assert_array_equal(side, np.rint(side))
        np.testing.assert_array_equal(t.boxes[:, :2] - side[:, None] / 2, np.rint(t.boxes[:, :2] - side[:, None] / 2))
    assert np.abs(a.boxes[:, :2] - a.smoothed[:, :2]).max() <= 0.5 + 1e-9
    assert (a.boxes == mr.snap_boxes(a.boxes)).all(), "snapping is not idempotent"


def _texture(h=348, w=464, seed=1):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 1.5)


@pytest.mark.parametrize("noise", NOISES)
def test_crops_are_byte_identical_under_sub_pixel_box_noise_except_at_rounding_boundaries(noise):
    img = _texture()
    thermal = np.ascontiguousarray(img[..., 1])
    rng = np.random.default_rng(2)
    n = 3000
    boxes = np.column_stack([rng.uniform(60, 400, n), rng.uniform(60, 290, n), rng.uniform(30, 140, n)])
    noisy = boxes + rng.uniform(-noise, noise, boxes.shape)
    d = np.abs(noisy - boxes)
    delta = np.column_stack([d[:, 2], d[:, 0] + d[:, 2] / 2, d[:, 1] + d[:, 2] / 2])
    near = _near_boundary(_snap_inputs(boxes), delta).any(axis=1)
    same = np.array(
        [
            np.array_equal(mr.crop(img, p, 48), mr.crop(img, q, 48))
            and np.array_equal(mr.crop(thermal, p, 48), mr.crop(thermal, q, 48))
            for p, q in zip(boxes, noisy)
        ]
    )
    print(
        f"\n{n} boxes perturbed by <= {noise} px: {same.sum()} RGB+thermal crops byte-identical, "
        f"{(~same).sum()} differ, {near.sum()} within the perturbation of a rounding boundary"
    )
    assert not (~same & ~near).any(), "a crop changed although no rounded value was near a boundary"
    assert (~same).sum() <= near.sum() <= 2 * delta.sum(axis=1).mean() * n * 1.5 + 3


def _reference_crop(img: np.ndarray, box, size: int) -> np.ndarray:
    """The crop specified exactly: rational sample positions, weights rounded to 1/2048, one final rounding."""
    x0, y0, s = mr.pixel_box(box)
    h, w = img.shape[:2]

    def taps(start, limit, i):
        pos = start + Fraction((2 * i + 1) * s - size, 2 * size)
        k = floor(pos)
        w1 = floor((pos - k) * 2048 + Fraction(1, 2))
        return [(min(max(k, 0), limit - 1), 2048 - w1), (min(max(k + 1, 0), limit - 1), w1)]

    out = np.zeros((size, size) + img.shape[2:], np.int64)
    for i in range(size):
        for j in range(size):
            acc = sum(wy * wx * img[yy, xx].astype(np.int64) for yy, wy in taps(y0, h, i) for xx, wx in taps(x0, w, j))
            out[i, j] = (acc + (1 << 21)) >> 22
    return out.astype(img.dtype)


def test_crop_is_exact_fixed_point_bilinear_with_replicated_border():
    img = _texture(40, 52, seed=3)
    for box, size in (
        ((26.3, 20.7, 17.6), 12),
        ((3.0, 5.0, 30.0), 9),
        ((50.2, 38.9, 6.4), 11),
        ((20.0, 20.0, 48.0), 16),
    ):
        np.testing.assert_array_equal(
            mr.crop(img, np.array(box), size), _reference_crop(img, box, size), err_msg=str(box)
        )
        grey = np.ascontiguousarray(img[..., 0])
        np.testing.assert_array_equal(mr.crop(grey, np.array(box), size), _reference_crop(grey, box, size))


def test_crop_geometry_matches_opencv_bilinear_on_snapped_boxes():
    """Same mapping as the former cv2.warpAffine crop (pixel centres at +0.5), within one grey level."""
    img = _texture(seed=4)
    rng = np.random.default_rng(5)
    for _ in range(200):
        box = mr.snap_boxes(np.array([[rng.uniform(-20, 480), rng.uniform(-20, 360), rng.uniform(10, 150)]]))[0]
        x0, y0, side = mr.pixel_box(box)
        s = 48 / side
        m = np.array([[s, 0.0, s * (0.5 - x0) - 0.5], [0.0, s, s * (0.5 - y0) - 0.5]])
        ref = cv2.warpAffine(img, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert np.abs(mr.crop(img, box, 48).astype(int) - ref).max() <= 1, box
