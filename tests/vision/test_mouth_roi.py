"""Mouth ROI: on real SpeakingFaces frames, and the box-track arithmetic."""

import numpy as np
import pytest

from tavse.vision import mouth_roi as mr
from tests.shared_fixtures import real_image

# Lip bounding boxes (x0, y0, x1, y1) annotated by hand on the fixture images.
ALIGNED_LIPS = (218, 198, 260, 214)
TILES = {  # camera position -> (tile box in nine_positions_v5.png, hand-annotated lips in tile coordinates)
    1: ((231, 303, 440, 588), (78, 196, 140, 224)),
    2: ((231, 4, 440, 289), (70, 212, 145, 232)),
    3: ((231, 602, 440, 887), (78, 193, 142, 216)),
    5: ((4, 4, 213, 289), (135, 216, 190, 243)),
    6: ((4, 602, 213, 887), (130, 200, 188, 226)),
}


def _box_contains(box, lips, max_side_ratio=3.0):
    cx, cy, side = box
    x0, y0, x1, y1 = lips
    assert cx - side / 2 <= x0 and x1 <= cx + side / 2, (box, lips)
    assert cy - side / 2 <= y0 and y1 <= cy + side / 2, (box, lips)
    assert side <= max_side_ratio * (x1 - x0), "box far larger than the mouth"
    assert abs(cx - (x0 + x1) / 2) < 10 and abs(cy - (y0 + y1) / 2) < 10, "box not centred on the lips"


@pytest.mark.parametrize("mode", ["ingest", "tracking"])
def test_mouth_box_contains_the_lips_on_the_real_aligned_frame(mode):
    frame = np.ascontiguousarray(real_image("aligned_session_one.png")[:, :464])
    if mode == "ingest":  # per-frame detection, snapped boxes: what ingest crops
        track = mr.track_mouth([frame, frame, frame], stride=1, box_scale=1.8, smooth_frames=3)
    else:
        lips, ran = mr.detect_lips([frame, frame, frame], static=False)
        track = mr.track_from_lips(lips, ran, box_scale=1.8, smooth_frames=3)
    assert track.detected.all()
    for box in track.boxes:
        _box_contains(box, ALIGNED_LIPS)


@pytest.mark.parametrize("position", sorted(TILES))
def test_mouth_box_contains_the_lips_on_real_faces_at_several_positions(position):
    (x0, y0, x1, y1), lips_box = TILES[position]
    tile = np.ascontiguousarray(real_image("nine_positions_v5.png")[y0:y1, x0:x1, :3])
    lips, ran = mr.detect_lips([tile], static=True)
    track = mr.track_from_lips(lips, ran, box_scale=1.8, smooth_frames=1)
    assert track.detected[0], f"no face found at position {position}"
    _box_contains(track.boxes[0], lips_box)


def _lips_at(cx, cy, width):
    """Fake landmarks: all 40 points on an ellipse, corners at ±width/2."""
    pts = np.zeros((len(mr.LIP_POINTS), 2))
    ang = np.linspace(0, 2 * np.pi, len(mr.LIP_POINTS), endpoint=False)
    pts[:, 0], pts[:, 1] = cx + width / 2 * np.cos(ang), cy + width / 5 * np.sin(ang)
    col = {p: i for i, p in enumerate(mr.LIP_POINTS)}
    pts[col[61]] = (cx - width / 2, cy)
    pts[col[291]] = (cx + width / 2, cy)
    pts[col[13]] = (cx, cy - 2)
    pts[col[14]] = (cx, cy + 4)
    return pts


def test_gaps_are_interpolated_and_ends_held():
    lips = np.full((7, len(mr.LIP_POINTS), 2), np.nan)
    for f, cx in ((1, 100.0), (5, 140.0)):
        lips[f] = _lips_at(cx, 50.0, 40.0)
    ran = np.ones(7, bool)
    track = mr.track_from_lips(lips, ran, box_scale=2.0, smooth_frames=1)
    np.testing.assert_allclose(track.boxes[:, 0], [100, 100, 110, 120, 130, 140, 140])
    np.testing.assert_allclose(track.boxes[:, 2], 80.0)
    assert track.detection_ratio == pytest.approx(2 / 7)
    np.testing.assert_allclose(track.lip_gap[[1, 5]], 6 / 40)
    assert np.isnan(track.lip_gap[0])


def test_smoothing_reduces_jitter_and_keeps_mean():
    rng = np.random.default_rng(0)
    cx = 100 + rng.normal(0, 3, 400)
    lips = np.stack([_lips_at(x, 60, 40) for x in cx])
    raw = mr.track_from_lips(lips, np.ones(400, bool), 1.8, 1)
    smooth = mr.track_from_lips(lips, np.ones(400, bool), 1.8, 5)
    assert smooth.boxes[:, 0].std() < 0.6 * raw.boxes[:, 0].std()
    assert abs(smooth.boxes[:, 0].mean() - raw.boxes[:, 0].mean()) < 0.5


def test_no_detection_at_all_is_an_error():
    with pytest.raises(ValueError, match="no face"):
        mr.track_from_lips(np.full((4, len(mr.LIP_POINTS), 2), np.nan), np.ones(4, bool), 1.8, 3)


def test_crop_maps_the_box_onto_the_crop_and_replicates_outside():
    img = np.tile(np.arange(200, dtype=np.float32), (100, 1))  # value = x
    out = mr.crop(img, np.array([100.0, 50.0, 40.0]), 40)
    np.testing.assert_allclose(out[0, :3], [80, 81, 82])
    edge = mr.crop(img, np.array([0.0, 50.0, 20.0]), 20)
    np.testing.assert_allclose(edge[0, :10], 0.0)  # left of the frame: border replicated


def test_lip_detector_threads_give_the_landmarks_of_one_facemesh_per_call():
    """LipDetector splits the frames over two kept-open FaceMesh instances: bit-identical landmarks."""
    frame = np.ascontiguousarray(real_image("aligned_session_one.png")[:, :464])
    tiles = [
        np.ascontiguousarray(real_image("nine_positions_v5.png")[y0:y1, x0:x1, :3])
        for (x0, y0, x1, y1), _ in TILES.values()
    ]
    # Frames of several sizes and faces, some shifted, one blank: landmarks differ frame to frame.
    frames = [frame, np.roll(frame, 7, axis=1), np.zeros_like(frame), np.roll(frame, -5, axis=0), frame[::-1].copy()]
    with mr.LipDetector(threads=2) as detector:
        for batch, stride in ((frames, 1), (frames, 2), (tiles, 1), (frames[:1], 1), ([], 1)):
            want_lips, want_ran = mr.detect_lips(batch, stride=stride, static=True)
            lips, ran = detector.detect(batch, stride)
            np.testing.assert_array_equal(ran, want_ran)
            np.testing.assert_array_equal(lips, want_lips)
            if batch:
                assert not np.isnan(want_lips).all(), "no face found: the comparison would be vacuous"


def test_crop_with_a_pixel_map_equals_mapping_the_whole_frame():
    """crop(img, ..., pixel_map=f) converts only the pixels it reads: the bytes of crop(f(img), ...)."""
    from tavse.vision.thermal_palette import IRON_LUT, iron_to_temperature

    rng = np.random.default_rng(3)
    img = IRON_LUT[rng.integers(0, len(IRON_LUT), (348, 464))].astype(np.uint8)
    img[::7] = rng.integers(0, 256, (len(img[::7]), 464, 3))  # off-palette rows too
    for box in ((230.0, 200.0, 60.0), (5.0, 3.0, 40.0), (460.0, 345.0, 71.0), (100.3, 250.7, 33.4)):
        for size in (48, 96):
            np.testing.assert_array_equal(
                mr.crop(img, np.array(box), size, pixel_map=iron_to_temperature),
                mr.crop(iron_to_temperature(img), np.array(box), size),
            )
