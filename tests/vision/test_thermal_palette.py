"""Tests of the FLIR Iron palette and its inversion, including a real SpeakingFaces frame."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from tavse.vision.thermal_palette import (
    IRON_LUT,
    iron_residual,
    iron_to_temperature,
    temperature_to_iron,
)
from tests.shared_fixtures import real_image


@pytest.fixture(scope="module")
def real_thermal() -> np.ndarray:
    """The thermal panel (x in [464, 928)) of the real SpeakingFaces composite, as RGB."""
    return np.ascontiguousarray(real_image("aligned_session_one.png")[:, 464:928])


def _grey(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, the usual (wrong) way of making a thermal image single-channel."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def test_lut_shape_and_endpoints() -> None:
    assert IRON_LUT.shape == (256, 3) and IRON_LUT.dtype == np.uint8
    assert len(np.unique(IRON_LUT, axis=0)) == 256  # distinct, so invertible
    cold, hot = IRON_LUT[0].astype(int), IRON_LUT[255].astype(int)
    assert cold.sum() < 60 and cold[2] >= cold[0]  # near-black navy
    assert hot.min() > 230  # near white
    # Iron passes through purple (B > R, G ~ 0), then orange (R max, G mid, B ~ 0).
    purple, orange = IRON_LUT[40].astype(int), IRON_LUT[160].astype(int)
    assert purple[2] > purple[0] > purple[1]
    assert orange[0] == 255 and 100 < orange[1] < 200 and orange[2] < 30


def test_round_trip_all_levels() -> None:
    levels = np.arange(256, dtype=np.float32) / 255.0
    rgb = temperature_to_iron(levels.reshape(16, 16))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(iron_to_temperature(rgb).ravel(), np.arange(256))
    assert float(iron_residual(rgb).max()) == 0.0


def test_ramp_is_monotonic_and_clipped() -> None:
    ramp = np.tile(np.linspace(-0.2, 1.2, 464, dtype=np.float32), (348, 1))
    idx = iron_to_temperature(temperature_to_iron(ramp))
    assert idx.shape == (348, 464)
    assert (np.diff(idx.astype(int), axis=1) >= 0).all()
    assert idx[:, 0].max() == 0 and idx[:, -1].min() == 255


def test_inversion_is_nearest_colour() -> None:
    """The lazily filled table agrees with brute force on arbitrary colours."""
    rgb = np.random.default_rng(0).integers(0, 256, (3000, 3), dtype=np.uint8)
    idx = iron_to_temperature(rgb.reshape(50, 60, 3)).ravel()
    d2 = ((rgb[:, None, :].astype(int) - IRON_LUT[None].astype(int)) ** 2).sum(-1)
    np.testing.assert_array_equal(d2[np.arange(len(rgb)), idx], d2.min(1))
    np.testing.assert_allclose(iron_residual(rgb.reshape(50, 60, 3)).ravel(), np.sqrt(d2.min(1)), atol=1e-3)


def test_real_frame_lies_on_palette(real_thermal: np.ndarray) -> None:
    res = iron_residual(real_thermal)
    # Measured: median 1.41, max 3.3 RGB units (rounding of the camera's own palette).
    assert float(np.median(res)) < 2.0
    assert float(np.percentile(res, 99)) < 4.0
    # A natural photo is far from the palette, so the residual flags non-Iron input.
    rgb_panel = np.ascontiguousarray(real_image("aligned_session_one.png")[:, :464])
    assert float(np.median(iron_residual(rgb_panel))) > 30.0


def test_real_face_warmer_than_background(real_thermal: np.ndarray) -> None:
    idx = iron_to_temperature(real_thermal)
    face = np.median(idx[90:220, 190:280])  # forehead, eyes, cheeks
    background = np.median(np.concatenate([idx[:60, :60].ravel(), idx[:60, -60:].ravel()]))
    assert face > 180 and background < 40


def test_inversion_is_not_grey(real_thermal: np.ndarray) -> None:
    """Luma order disagrees with palette order for some real colours (the cold end)."""
    colours = np.unique(real_thermal.reshape(-1, 3), axis=0)
    pal = iron_to_temperature(colours[None])[0].astype(int)
    grey = _grey(colours[None])[0].astype(int)
    discordant = np.sign(pal[:, None] - pal[None, :]) * np.sign(grey[:, None] - grey[None, :]) < 0
    assert discordant.sum() > 0
    # The palette's own luma is not monotonic either.
    assert (np.diff(_grey(IRON_LUT[None])[0].astype(int)) < 0).any()


def test_any_leading_shape_and_speed() -> None:
    frame = temperature_to_iron(np.random.default_rng(1).random((348, 464), dtype=np.float32))
    crops = frame[:96, :96].copy()
    assert iron_to_temperature(crops).shape == (96, 96)
    batch = np.stack([frame[:96, :96], frame[100:196, 100:196]])
    assert iron_to_temperature(batch).shape == (2, 96, 96)
    assert iron_residual(batch).shape == (2, 96, 96)
    iron_to_temperature(frame)  # warm the table
    t0 = time.perf_counter()
    for _ in range(20):
        iron_to_temperature(frame)
    per_frame = (time.perf_counter() - t0) / 20
    assert per_frame < 0.02  # ~1 ms measured; generous for loaded CI machines


def test_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        iron_to_temperature(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        iron_to_temperature(np.zeros((4, 4, 3), np.float32))
