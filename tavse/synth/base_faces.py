"""Stored FaceMesh landmarks and person masks of the base photographs.

The synthetic speakers are built on real photographs (see :mod:`tavse.synth.faces`). Their
468 FaceMesh landmarks and their selfie-segmentation person mask used to be computed at
synthesis time, but MediaPipe's inference is not bit-reproducible across CPUs: XNNPACK
picks AVX-512 kernels on one processor and AVX2 kernels on another, the mask then differs
by ~1e-5, a few mask pixels flip at the 1/255 rounding and every frame of the speakers
built on that photo changes. So the model runs once, here, and its rounded output is
stored in the repository next to this module (``base_face_data/``):

* ``{name}.json``: the landmarks in 1/16 px units (integers), the shape and a SHA-256 of
  the decoded photo pixels the data was made from, and a SHA-256 of the mask pixels;
* ``{name}_person.png``: the person mask quantised to 1/255 (8-bit grey).

Synthesis reads these files and never imports MediaPipe. Regenerate them with::

    python -m tavse.synth.base_faces          # run MediaPipe, rewrite the files
    python -m tavse.synth.base_faces --check  # compare the stored data with MediaPipe here

Regenerating on another CPU may change a few mask values, and with them the corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import cv2
import numpy as np

__all__ = [
    "BASE_FACES",
    "DATA_DIR",
    "FACE_OVAL",
    "N_LANDMARKS",
    "REGENERATE",
    "BaseFaceData",
    "BaseFaceDataError",
    "base_photo",
    "load_base_face_data",
    "pixels_sha256",
]

BASE_FACES: tuple[str, ...] = ("grace_hopper", "astronaut")
DATA_DIR = Path(__file__).resolve().parent / "base_face_data"
REGENERATE = "python -m tavse.synth.base_faces"
N_LANDMARKS = 468
_FORMAT = 1

# MediaPipe FaceMesh face-oval landmark indices in polygon order, starting at the forehead
# (10) and chained through ``FACEMESH_FACE_OVAL``'s edges; ``--check`` re-derives it.
FACE_OVAL: tuple[int, ...] = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)


class BaseFaceDataError(RuntimeError):
    """The stored base-face data is missing, malformed or made from another photo."""


@dataclass(frozen=True, eq=False)
class BaseFaceData:
    """One base photo with its stored landmarks (468x2 float32 px) and mask (HxW uint8)."""

    name: str
    rgb: np.ndarray
    landmarks: np.ndarray
    person_u8: np.ndarray


def pixels_sha256(img: np.ndarray) -> str:
    """SHA-256 over an image's shape, dtype and pixel bytes."""
    img = np.ascontiguousarray(img)
    h = hashlib.sha256(f"{img.dtype.str}{list(img.shape)}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def base_photo(name: str) -> np.ndarray:
    """Load a base photograph shipped inside an installed wheel, as HxWx3 RGB uint8."""
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        # A file object: get_sample_data loads arrays only from .npy/.npz files.
        with cast(IO[bytes], matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as f:
            return np.asarray(Image.open(f).convert("RGB"))
    if name == "astronaut":
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut()[..., :3])
    raise ValueError(f"unknown base face {name!r}; expected one of {BASE_FACES}")


def _paths(name: str, data_dir: Path) -> tuple[Path, Path]:
    return data_dir / f"{name}.json", data_dir / f"{name}_person.png"


def load_base_face_data(name: str, data_dir: Path = DATA_DIR) -> BaseFaceData:
    """Read the stored landmarks and mask of base photo ``name`` and check them.

    Raises :class:`BaseFaceDataError` naming the file and the problem when a file is
    missing or malformed, or when the installed photo decodes to other pixels than the
    ones the data was made from.
    """
    if name not in BASE_FACES:
        raise ValueError(f"unknown base face {name!r}; expected one of {BASE_FACES}")
    meta_path, mask_path = _paths(name, data_dir)
    fix = f"regenerate with `{REGENERATE}`"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise BaseFaceDataError(f"{meta_path}: missing; {fix}") from None
    except (OSError, ValueError) as exc:
        raise BaseFaceDataError(f"{meta_path}: not readable JSON ({exc}); {fix}") from None
    keys = {"format", "photo", "photo_shape", "photo_sha256", "landmarks_x16", "person_sha256"}
    if not isinstance(meta, dict) or not keys <= set(meta):
        raise BaseFaceDataError(f"{meta_path}: expected keys {sorted(keys)}; {fix}")
    if meta["format"] != _FORMAT or meta["photo"] != name:
        raise BaseFaceDataError(
            f"{meta_path}: format {meta['format']!r} for photo {meta['photo']!r}, expected format "
            f"{_FORMAT} for {name!r}; {fix}"
        )

    rgb = base_photo(name)
    digest = pixels_sha256(rgb)
    if list(rgb.shape) != meta["photo_shape"] or digest != meta["photo_sha256"]:
        raise BaseFaceDataError(
            f"{meta_path}: made from a {name!r} photo of shape {meta['photo_shape']} and pixel "
            f"SHA-256 {meta['photo_sha256'][:16]}..., but the installed photo decodes to shape "
            f"{list(rgb.shape)} and SHA-256 {digest[:16]}... (another matplotlib/scikit-image/"
            f"Pillow version?); {fix} (this changes the synthetic corpus)"
        )

    try:
        x16 = np.asarray(meta["landmarks_x16"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise BaseFaceDataError(f"{meta_path}: landmarks_x16 is not an integer array ({exc}); {fix}") from None
    if x16.shape != (N_LANDMARKS, 2):
        raise BaseFaceDataError(f"{meta_path}: landmarks_x16 has shape {x16.shape}, expected ({N_LANDMARKS}, 2); {fix}")
    h, w = rgb.shape[:2]
    inside = (x16 >= 0) & (x16 < 16 * np.array([w, h]))
    if not inside.all():
        raise BaseFaceDataError(
            f"{meta_path}: {np.count_nonzero(~inside.all(1))} landmarks lie outside the {w}x{h} photo; {fix}"
        )
    landmarks = (x16.astype(np.float64) / 16).astype(np.float32)  # exact: multiples of 1/16

    person = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if person is None:
        raise BaseFaceDataError(f"{mask_path}: missing or not a PNG image; {fix}")
    if person.dtype != np.uint8 or person.shape != (h, w):
        raise BaseFaceDataError(
            f"{mask_path}: {person.dtype} image of shape {person.shape}, expected a uint8 grey "
            f"image of shape {(h, w)} (the photo's); {fix}"
        )
    if pixels_sha256(person) != meta["person_sha256"]:
        raise BaseFaceDataError(f"{mask_path}: pixels do not match person_sha256 in {meta_path.name}; {fix}")
    for arr in (rgb, landmarks, person):
        arr.setflags(write=False)
    return BaseFaceData(name, rgb, landmarks, person)


# --------------------------------------------------------------------- regeneration


def _face_oval_from_mediapipe() -> tuple[int, ...]:
    """The face-oval polygon order chained from MediaPipe's edge set."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    nxt = dict(FACEMESH_FACE_OVAL)
    order = [10]
    while nxt[order[-1]] != order[0]:
        order.append(nxt[order[-1]])
    return tuple(order)


def run_mediapipe(rgb: np.ndarray, name: str = "photo") -> tuple[np.ndarray, np.ndarray]:
    """FaceMesh landmarks in 1/16 px (468x2 int64) and the person mask in 1/255 (HxW uint8).

    The only place synthesis uses MediaPipe (static image mode, one face, no iris refinement;
    selfie segmentation model 0).
    """
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
        found = mesh.process(rgb)
    if not found.multi_face_landmarks:
        raise RuntimeError(f"FaceMesh found no face in base photo {name!r}")
    h, w = rgb.shape[:2]
    pts = np.array([(p.x * w, p.y * h) for p in found.multi_face_landmarks[0].landmark])
    x16 = np.round(pts[:N_LANDMARKS] * 16).astype(np.int64)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        mask = seg.process(rgb).segmentation_mask
    person = np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8)
    return x16, person


def write_base_face_data(name: str, data_dir: Path = DATA_DIR) -> Path:
    """Run MediaPipe on base photo ``name`` and (re)write its stored data; returns the JSON path."""
    import mediapipe as mp

    rgb = base_photo(name)
    x16, person = run_mediapipe(rgb, name)
    meta_path, mask_path = _paths(name, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", person, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"{mask_path}: PNG encoding failed")
    mask_path.write_bytes(png.tobytes())
    meta = {
        "format": _FORMAT,
        "photo": name,
        "photo_shape": list(rgb.shape),
        "photo_sha256": pixels_sha256(rgb),
        "person_png": mask_path.name,
        "person_sha256": pixels_sha256(person),
        "made_with": f"mediapipe {mp.__version__}: FaceMesh(static_image_mode=True, max_num_faces=1, "
        "refine_landmarks=False) landmarks x16 rounded; SelfieSegmentation(model_selection=0) "
        "mask clipped to [0, 1], x255 rounded",
        "regenerate": REGENERATE,
        "landmarks_x16": x16.tolist(),
    }
    # One key per line and one landmark per line keep diffs of a regeneration readable.
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in meta.items() if k != "landmarks_x16"]
    points = ",\n".join(f"  {json.dumps(p)}" for p in meta["landmarks_x16"])
    text = "{\n" + ",\n".join(lines) + ',\n "landmarks_x16": [\n' + points + "\n ]\n}"
    meta_path.write_text(text + "\n")
    return meta_path


def check_base_face_data(name: str, data_dir: Path = DATA_DIR) -> list[str]:
    """Compare the stored data of ``name`` with MediaPipe's output on this machine."""
    stored = load_base_face_data(name, data_dir)
    x16, person = run_mediapipe(np.array(stored.rgb), name)
    problems = []
    lm_diff = int(np.count_nonzero((x16.astype(np.float64) / 16 != stored.landmarks).any(axis=1)))
    if lm_diff:
        problems.append(f"{name}: {lm_diff} of {N_LANDMARKS} landmarks differ")
    diff = np.abs(person.astype(int) - stored.person_u8.astype(int))
    if diff.any():
        problems.append(f"{name}: {np.count_nonzero(diff)} mask pixels differ (max {diff.max()}/255)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tavse.synth.base_faces", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare the stored data with MediaPipe on this machine; write nothing"
    )
    parser.add_argument(
        "names", nargs="*", default=list(BASE_FACES), help=f"base faces (default: {' '.join(BASE_FACES)})"
    )
    args = parser.parse_args(argv)
    oval = _face_oval_from_mediapipe()
    if oval != FACE_OVAL:
        print(f"{__file__}: FACE_OVAL differs from MediaPipe's FACEMESH_FACE_OVAL chain {oval}", file=sys.stderr)
        return 1
    if args.check:
        problems = [p for name in args.names for p in check_base_face_data(name)]
        for p in problems:
            print(p)
        print("stored base-face data " + ("differs from" if problems else "equals") + " MediaPipe's output here")
        return 1 if problems else 0
    for name in args.names:
        print(f"wrote {write_base_face_data(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
