"""Stored FaceMesh landmarks and person masks of the base photos: loading, checks, regeneration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tavse.synth.base_faces import (
    BASE_FACES,
    DATA_DIR,
    FACE_OVAL,
    REGENERATE,
    BaseFaceDataError,
    _face_oval_from_mediapipe,
    load_base_face_data,
    run_mediapipe,
    write_base_face_data,
)
from tavse.synth.faces import load_base_face


@pytest.mark.parametrize("name", BASE_FACES)
def test_stored_data_loads_with_the_expected_shapes_and_grids(name: str) -> None:
    data = load_base_face_data(name)
    h, w = data.rgb.shape[:2]
    assert data.rgb.dtype == np.uint8 and data.rgb.shape == (h, w, 3)
    assert data.landmarks.shape == (468, 2) and data.landmarks.dtype == np.float32
    np.testing.assert_array_equal(data.landmarks * 16, np.round(data.landmarks * 16))  # 1/16 px grid
    assert (data.landmarks >= 0).all() and (data.landmarks < [w, h]).all()
    assert data.person_u8.shape == (h, w) and data.person_u8.dtype == np.uint8
    # A person in the middle, background in the top corners.
    assert data.person_u8[h // 2, w // 2] > 200 and data.person_u8[:10, :10].max() < 50
    face = load_base_face(name)
    assert face.person.dtype == np.float32
    np.testing.assert_array_equal(face.person, data.person_u8.astype(np.float32) / np.float32(255))
    assert not face.rgb.flags.writeable and not face.person.flags.writeable


def test_face_oval_is_mediapipes() -> None:
    assert _face_oval_from_mediapipe() == FACE_OVAL


@pytest.mark.parametrize("name", BASE_FACES)
def test_stored_data_is_mediapipes_output(name: str) -> None:
    """MediaPipe here gives the stored values, up to the last rounding step (other CPUs'
    XNNPACK kernels may flip a few mask pixels by 1/255: that is why the data is stored)."""
    data = load_base_face_data(name)
    x16, person = run_mediapipe(np.array(data.rgb), name)
    assert np.abs(x16 / 16 - data.landmarks).max() <= 2 / 16
    diff = np.abs(person.astype(int) - data.person_u8.astype(int))
    assert diff.max() <= 2 and np.count_nonzero(diff) <= 0.001 * diff.size


def test_regeneration_round_trips(tmp_path: Path) -> None:
    path = write_base_face_data("astronaut", tmp_path)
    assert path == tmp_path / "astronaut.json" and (tmp_path / "astronaut_person.png").is_file()
    meta = json.loads(path.read_text())
    assert meta["regenerate"] == REGENERATE and len(meta["landmarks_x16"]) == 468
    fresh, stored = load_base_face_data("astronaut", tmp_path), load_base_face_data("astronaut")
    assert np.abs(fresh.landmarks - stored.landmarks).max() <= 2 / 16
    assert np.abs(fresh.person_u8.astype(int) - stored.person_u8.astype(int)).max() <= 2


def _copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    return data


def _edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_errors_name_the_file_the_problem_and_the_fix(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    meta, png = data / "grace_hopper.json", data / "grace_hopper_person.png"

    def fails(match: str, path: Path) -> None:
        with pytest.raises(BaseFaceDataError, match=match) as info:
            load_base_face_data("grace_hopper", data)
        assert str(path) in str(info.value) and REGENERATE in str(info.value)

    load_base_face_data("grace_hopper", data)  # the copy itself is fine

    _edit_json(meta, photo_sha256="0" * 64)
    fails("installed photo decodes to", meta)

    shutil.copy(DATA_DIR / meta.name, meta)
    _edit_json(meta, landmarks_x16=json.loads(meta.read_text())["landmarks_x16"][:400])
    fails(r"shape \(400, 2\)", meta)

    shutil.copy(DATA_DIR / meta.name, meta)
    _edit_json(meta, landmarks_x16=[[-5, 3]] * 468)
    fails("outside the 512x600 photo", meta)

    shutil.copy(DATA_DIR / meta.name, meta)
    mask = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    mask[0, 0] ^= 1
    cv2.imwrite(str(png), mask)
    fails("do not match person_sha256", png)

    cv2.imwrite(str(png), mask[:, :100])
    fails("expected a uint8 grey image of shape", png)

    png.unlink()
    fails("missing or not a PNG", png)

    meta.write_text("{not json")
    fails("not readable JSON", meta)

    meta.unlink()
    fails("missing", meta)

    with pytest.raises(ValueError, match="unknown base face"):
        load_base_face_data("mona_lisa", data)
