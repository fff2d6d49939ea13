"""The FLIR Iron ("ironbow") pseudo-colour palette and its exact inverse.

SpeakingFaces thermal frames are 3-channel Iron renderings. Their grey level is not
monotonic in temperature (the cold end is dark blue, the hot end near white with a cyan
tint), so a faithful single-channel thermal input maps every colour back to its position
along the palette instead of converting it to grey.

``IRON_LUT`` is a piecewise-linear curve through 21 knots. The knots were fitted by least
squares to the ordered distinct colours of a real SpeakingFaces thermal frame (which uses
~223 consecutive entries of the camera's palette); the median distance of that frame's
pixels to the nearest ``IRON_LUT`` entry is about 1.4 RGB units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

__all__ = [
    "IRON_LUT",
    "iron_residual",
    "iron_to_temperature",
    "temperature_to_iron",
]

# (position along the palette in [0, 1], RGB). Positions are proportional to the entry
# index of the camera palette, so equal temperature steps give equal index steps.
_IRON_KNOTS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.000, (0, 16, 30)),
    (0.045, (1, 3, 86)),
    (0.086, (37, 0, 122)),
    (0.117, (61, 0, 142)),
    (0.144, (80, 0, 153)),
    (0.194, (114, 0, 167)),
    (0.252, (148, 2, 167)),
    (0.315, (179, 18, 152)),
    (0.374, (204, 34, 128)),
    (0.482, (236, 75, 71)),
    (0.572, (254, 115, 27)),
    (0.613, (255, 133, 12)),
    (0.653, (255, 150, 0)),
    (0.752, (255, 192, 0)),
    (0.793, (255, 208, 12)),
    (0.815, (255, 216, 24)),
    (0.856, (255, 230, 53)),
    (0.883, (255, 237, 79)),
    (0.914, (253, 244, 115)),
    (0.950, (249, 253, 167)),
    (1.000, (243, 255, 255)),
)


def _build_lut() -> np.ndarray:
    """Sample the knot curve at 256 evenly spaced positions (all 256 colours distinct)."""
    pos = np.array([k[0] for k in _IRON_KNOTS])
    rgb = np.array([k[1] for k in _IRON_KNOTS], dtype=np.float64)
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], axis=1)
    lut = np.rint(lut).astype(np.uint8)
    lut.setflags(write=False)
    return lut


IRON_LUT: np.ndarray = _build_lut()
"""(256, 3) uint8 RGB: index 0 coldest (near-black navy) ... 255 hottest (near white)."""

# The same table shaped for cv2.LUT on 3-channel images.
_IRON_LUT_CV = np.ascontiguousarray(IRON_LUT.reshape(256, 1, 3))


def _lut_rgb(idx: np.ndarray) -> np.ndarray:
    """Gather ``IRON_LUT[idx]`` for a uint8 index array of any shape (cv2.LUT: ~4x numpy)."""
    flat = np.ascontiguousarray(idx).reshape(-1, 1) if idx.ndim != 2 else np.ascontiguousarray(idx)
    rgb = cv2.LUT(cv2.merge([flat, flat, flat]), _IRON_LUT_CV)
    return rgb.reshape(idx.shape + (3,))


def temperature_to_iron(t: np.ndarray) -> np.ndarray:
    """Render a normalised temperature map (values in [0, 1], any shape) as Iron RGB.

    Values are clipped to [0, 1] and rounded (half to even) to the nearest of the 256
    palette entries; the result has shape ``t.shape + (3,)`` and dtype uint8.
    """
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)
    flat = t.reshape(-1, 1) if t.ndim != 2 else t
    # convertScaleAbs = saturating round(|255 t|); t is already non-negative.
    idx = cv2.convertScaleAbs(flat, alpha=255.0).reshape(t.shape)
    return _lut_rgb(idx)


class _NearestIronIndex:
    """Exact nearest-palette-entry lookup over all 2^24 RGB colours, filled lazily.

    A full table answers any image with one gather, but computing all of it takes
    seconds. Real and rendered thermal frames touch only a few hundred colours, so the
    table is split into 4x4x4 colour cells and a cell is computed (for all of its 64
    colours, with a k-d tree) the first time an image contains one of its colours.
    Entries are uint16 with ``_UNFILLED`` marking colours not computed yet, so a lookup
    and its cache check are a single gather.
    """

    _UNFILLED = 256

    def __init__(self, lut: np.ndarray) -> None:
        self._lut = lut
        self._table = np.full(1 << 24, self._UNFILLED, dtype=np.uint16)
        self._tree: cKDTree | None = None  # built on the first cache miss
        # The 64 colour offsets inside one 4x4x4 cell, as packed 24-bit keys.
        o = np.arange(4, dtype=np.int64)
        self._cell_offsets = ((o[:, None, None] << 16) | (o[None, :, None] << 8) | o[None, None, :]).ravel()

    def fill(self, keys: np.ndarray) -> None:
        """Compute the exact nearest palette index for every colour in the cells of ``keys``."""
        if self._tree is None:
            from scipy.spatial import cKDTree  # deferred: only needed on a cache miss

            self._tree = cKDTree(self._lut.astype(np.float64))
        cell_base = np.unique(keys.astype(np.int64) & 0xFCFCFC)  # clear the 2 low bits
        cell_keys = (cell_base[:, None] + self._cell_offsets[None, :]).ravel()
        rgb = np.stack([(cell_keys >> 16) & 255, (cell_keys >> 8) & 255, cell_keys & 255], 1)
        _, nearest = self._tree.query(rgb.astype(np.float64), workers=-1)
        self._table[cell_keys] = nearest.astype(np.uint16)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Return the palette index (uint8, shape ``img.shape[:-1]``) of each RGB pixel."""
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim < 1 or img.shape[-1] != 3:
            raise ValueError(f"expected ...x3 uint8 RGB, got {img.shape} {img.dtype}")
        key = img[..., 0].astype(np.int32)
        key <<= 8
        key |= img[..., 1]
        key <<= 8
        key |= img[..., 2]
        out = self._table[key]
        missing = out == self._UNFILLED
        if missing.any():
            self.fill(key[missing])
            out = self._table[key]
        return out.astype(np.uint8)


_NEAREST: _NearestIronIndex | None = None


def _nearest() -> _NearestIronIndex:
    """The per-process lookup, created on first use."""
    global _NEAREST
    if _NEAREST is None:
        _NEAREST = _NearestIronIndex(IRON_LUT)
        # Pre-fill the cells around the palette itself: the common case for thermal frames.
        lut = IRON_LUT.astype(np.int64)
        _NEAREST.fill((lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2])
    return _NEAREST


def iron_to_temperature(img: np.ndarray) -> np.ndarray:
    """Invert the Iron palette: HxWx3 uint8 RGB -> HxW uint8 index (0 cold .. 255 hot).

    Each pixel maps to its nearest palette colour (Euclidean in RGB), so the result is
    monotonic in temperature, unlike a grey conversion. Palette colours round-trip
    exactly. Works on any leading shape (frames, crops, batches).
    """
    return _nearest()(img)


def iron_residual(img: np.ndarray) -> np.ndarray:
    """Euclidean RGB distance of each pixel to its nearest Iron colour (float32, HxW).

    Near 0 for Iron-rendered thermal frames (about 1.4 median for a real SpeakingFaces
    frame: its camera palette differs from ``IRON_LUT`` by rounding); tens of units for
    natural RGB or grey images, which flags input that is not Iron pseudo-colour.
    """
    img = np.asarray(img)
    nearest = _lut_rgb(iron_to_temperature(img))
    # cv2 keeps this ~10x faster than numpy float casts of 3-channel images.
    shape = img.shape[:-1]
    diff = cv2.absdiff(np.ascontiguousarray(img).reshape(-1, 1, 3), nearest.reshape(-1, 1, 3))
    sq = cv2.multiply(diff, diff, dtype=cv2.CV_32F)
    dist = cv2.sqrt(cv2.transform(sq, np.ones((1, 3), np.float32)))
    return dist.reshape(shape)
