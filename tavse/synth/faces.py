"""Synthetic speakers' faces whose mouth follows speech, in RGB and pixel-aligned thermal.

Each synthetic speaker is a real photograph shipped inside an installed wheel
(matplotlib's ``grace_hopper.jpg``, scikit-image's ``astronaut``) placed in a
SpeakingFaces-sized frame (464x348) with a per-speaker pose, colour, background and
temperature map. Per frame, the lower lip, chin and jaw are pushed down by a smooth
backward-warp field proportional to the mouth opening, and a mouth cavity (dark, with a
hint of teeth) is painted into the gap, so that MediaPipe FaceMesh sees the mouth open.
The thermal frame is a temperature field built in the same geometry, warped by the same
maps and rendered through the FLIR Iron palette.

The base photos' FaceMesh landmarks and person masks are stored in the repository
(:mod:`tavse.synth.base_faces`; no model runs at synthesis time); frames are then produced
by pure geometry, a few milliseconds each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from tavse.synth import detmath as dm
from tavse.synth.base_faces import BASE_FACES, FACE_OVAL, load_base_face_data
from tavse.vision.thermal_palette import temperature_to_iron

__all__ = [
    "BASE_FACES",
    "FRAME_H",
    "FRAME_W",
    "BaseFace",
    "FaceIdentity",
    "load_base_face",
    "make_identity",
    "portable_opencv",
    "render_frames",
]

FRAME_W, FRAME_H = 464, 348

# FaceMesh landmark indices used for geometry.
_MOUTH_LEFT, _MOUTH_RIGHT = 61, 291
_LIP_UPPER_INNER, _LIP_LOWER_INNER = 13, 14
_CHIN, _NOSE_TIP, _NOSE_MID = 152, 1, 5
_CHEEK_LEFT, _CHEEK_RIGHT = 234, 454
_EYE_OUTER = (33, 263)
_EYE_INNER = (133, 362)
_EYE_RINGS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
)
# Inner lip contours from one inner corner (78) to the other (308).
_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

# Camera position (SpeakingFaces 1..9) -> extra (yaw, pitch, roll) in degrees. 1 is
# frontal, 2-3 are frontal from slightly above/below, 4-9 are turned heads.
_POSITION_POSE: dict[int, tuple[float, float, float]] = {
    1: (0.0, 0.0, 0.0),
    2: (0.0, -8.0, 1.0),
    3: (0.0, 8.0, -1.0),
    4: (-22.0, 0.0, 2.0),
    5: (-28.0, -6.0, 3.0),
    6: (-25.0, 6.0, 1.0),
    7: (22.0, 0.0, -2.0),
    8: (28.0, -6.0, -3.0),
    9: (25.0, 6.0, -1.0),
}

_MAX_OPEN = 0.35  # jaw drop at opening 1, as a fraction of the mouth width
_JITTER_PAD = 4  # pixels of padding on the displacement field for integer head shifts


# ------------------------------------------------------------------- portable OpenCV


@contextlib.contextmanager
def portable_opencv() -> Iterator[None]:
    """Run OpenCV's baseline (SSE2/SSE3) code inside the block: no IPP, no AVX/AVX2/AVX-512.

    OpenCV picks SIMD kernels at run time from the CPU (GaussianBlur, scaleAdd and resize on
    float images fuse multiply-adds under AVX2/FMA3), and IPP (distanceTransform, resize)
    has its own per-CPU code; either changes float results in the last bits, and so a few
    rendered pixels, from one processor to another. With optimisations off every x86-64 CPU
    runs the same instructions. The previous settings are restored on exit (they are
    process-wide: do not render while another thread of the process uses OpenCV).
    """
    optimized, ipp, opencl = cv2.useOptimized(), cv2.ipp.useIPP(), cv2.ocl.useOpenCL()
    cv2.setUseOptimized(False)
    cv2.ipp.setUseIPP(False)
    try:
        yield
    finally:
        cv2.setUseOptimized(optimized)
        cv2.ipp.setUseIPP(ipp)
        cv2.ocl.setUseOpenCL(opencl)


# --------------------------------------------------------------------------- base faces


@dataclass(frozen=True, eq=False)
class BaseFace:
    """A real face photograph with its FaceMesh landmarks and person mask.

    Attributes:
        name: one of ``BASE_FACES``.
        rgb: HxWx3 uint8 photograph.
        landmarks: (468, 2) float32 FaceMesh landmarks in pixels (x, y).
        person: HxW float32 person-vs-background probability (selfie segmentation).
        glasses: whether the person wears glasses (opaque, so cold, in thermal).
    """

    name: str
    rgb: np.ndarray
    landmarks: np.ndarray
    person: np.ndarray
    glasses: bool


@functools.cache
def load_base_face(name: str) -> BaseFace:
    """Load a base photo with its stored landmarks and person mask (once per process).

    The landmarks (1/16 px) and the mask (1/255) were computed once by MediaPipe and are
    stored in the repository (:mod:`tavse.synth.base_faces`): model inference is not
    bit-reproducible across CPUs, so synthesis does not run it.
    """
    data = load_base_face_data(name)
    person = data.person_u8.astype(np.float32) / np.float32(255)  # as MediaPipe's mask, rounded
    person.setflags(write=False)
    return BaseFace(name, data.rgb, data.landmarks, person, glasses=name == "grace_hopper")


# ----------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class FaceIdentity:
    """Everything that makes one synthetic speaker look (and feel, thermally) distinct.

    Geometry is relative to the 464x348 frame; temperatures are normalised to [0, 1]
    (0 = coldest, 1 = hottest Iron palette entry).
    """

    speaker_id: int
    base: str
    mirror: bool
    face_width: float  # cheek-to-cheek width in the frame, pixels
    roll_deg: float
    yaw_deg: float  # approximated by a horizontal squeeze (affine, not 3-D)
    shear: float
    centre_x: float
    centre_y: float
    colour_gain: tuple[float, float, float]  # per-channel gain on the person (skin tone)
    brightness: float
    gamma: float
    saturation: float
    background_rgb: tuple[int, int, int]
    background_texture: float  # amplitude of the blotchy wall texture, grey levels
    background_seed: int
    jitter_px: float  # standard deviation of the per-frame head jitter
    jaw_gain: float  # scales the maximum jaw drop
    t_background: float
    t_hair: float
    t_clothes: float
    t_skin: float
    t_nose_drop: float  # cooling of the nose tip below skin
    t_eye_rise: float  # warming of the inner eye corners above skin
    t_breath: float  # warming of the mouth region at full opening (exhaled breath)


def make_identity(speaker_id: int, seed: int) -> FaceIdentity:
    """Draw a speaker's look from ``(speaker_id, seed)`` deterministically."""
    if speaker_id < 0 or seed < 0:
        raise ValueError("speaker_id and seed must be non-negative")
    rng = np.random.default_rng([seed, speaker_id, 0xFACE])
    u = rng.uniform
    # Alternate base photos so that consecutive speakers differ the most.
    base = BASE_FACES[(speaker_id + seed) % len(BASE_FACES)]
    # Skin tone: from light to dark, with a warm/cool cast.
    tone = u(0.0, 1.0)
    brightness = 1.12 - 0.5 * tone
    gain = (u(0.96, 1.08), u(0.90, 1.02) - 0.06 * tone, u(0.84, 1.02) - 0.1 * tone)
    walls = ((212, 212, 208), (220, 210, 190), (196, 204, 214), (200, 200, 200), (226, 222, 214))
    wall = np.array(walls[int(rng.integers(len(walls)))], float) * u(0.85, 1.08)
    t_skin = u(0.78, 0.88)
    return FaceIdentity(
        speaker_id=speaker_id,
        base=base,
        mirror=bool(rng.integers(2)),
        face_width=u(118.0, 150.0),
        roll_deg=u(-6.0, 6.0),
        yaw_deg=u(-10.0, 10.0),
        shear=u(-0.04, 0.04),
        centre_x=FRAME_W / 2 + u(-22.0, 22.0),
        centre_y=FRAME_H * 0.45 + u(-12.0, 12.0),
        colour_gain=cast(tuple[float, float, float], tuple(round(float(g), 4) for g in gain)),
        brightness=round(float(brightness), 4),
        gamma=u(0.9, 1.1),
        saturation=u(0.8, 1.15),
        background_rgb=cast(tuple[int, int, int], tuple(int(c) for c in np.clip(wall, 0, 255))),
        background_texture=u(2.0, 9.0),
        background_seed=int(rng.integers(2**31)),
        jitter_px=u(0.3, 0.8),
        jaw_gain=u(0.85, 1.0),
        t_background=u(0.02, 0.12),
        t_hair=u(0.28, 0.44),
        t_clothes=u(0.46, 0.62),
        t_skin=t_skin,
        t_nose_drop=u(0.08, 0.2),
        t_eye_rise=u(0.06, 0.12),
        t_breath=u(0.05, 0.1),
    )


# ------------------------------------------------------------------------------- pose


def _pose_matrix(identity: FaceIdentity, base: BaseFace, position: int) -> np.ndarray:
    """2x3 affine from base-photo pixels to frame pixels for this speaker and position."""
    lm = base.landmarks.astype(np.float64)
    centre = lm[list(FACE_OVAL)].mean(axis=0)
    eye_l, eye_r = lm[_EYE_OUTER[0]], lm[_EYE_OUTER[1]]
    dx, dy = eye_r - eye_l
    eyes = np.sqrt(dx * dx + dy * dy)
    width = float(_norm(lm[_CHEEK_RIGHT] - lm[_CHEEK_LEFT]))
    yaw, pitch, roll = _POSITION_POSE[position]
    yaw = (identity.yaw_deg + yaw) * _RADIANS
    roll = (identity.roll_deg + roll) * _RADIANS
    pitch = pitch * _RADIANS

    def rot(a: float) -> np.ndarray:
        c, s = dm.cos(a), dm.sin(a)
        return np.array([[c, -s], [s, c]])

    m = np.array([[dx / eyes, dy / eyes], [-dy / eyes, dx / eyes]])  # undo the photo's roll
    if identity.mirror:
        m = _matmul2(np.diag([-1.0, 1.0]), m)
    m = (identity.face_width / width) * m
    m = _matmul2(rot(roll), m)
    # A turned or tilted head mostly looks narrower or shorter: squeeze, plus a slight shear.
    squeeze = np.array([[dm.cos(yaw), identity.shear + 0.25 * dm.sin(yaw)], [0.0, dm.cos(pitch)]])
    m = _matmul2(squeeze, m)
    target = np.array([identity.centre_x + 18.0 * dm.sin(yaw), identity.centre_y])
    return np.hstack([m, (target - _matmul2(m, centre[:, None])[:, 0])[:, None]])


_RADIANS = np.pi / 180.0


def _matmul2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a 2x2 ``a`` in plain multiplies and adds (``@`` goes to BLAS, whose
    kernel and rounding depend on the CPU)."""
    return a[:, 0:1] * b[0:1, :] + a[:, 1:2] * b[1:2, :]


def _norm(d: np.ndarray) -> np.floating:
    """Length of a 2-vector."""
    return np.sqrt(d[0] * d[0] + d[1] * d[1])


def _dot2(p: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Dot product of (..., 2) points with a 2-vector, without BLAS."""
    return p[..., 0] * e[0] + p[..., 1] * e[1]


def _apply_affine(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine."""
    x, y = pts[:, 0], pts[:, 1]
    return np.stack([a[0, 0] * x + a[0, 1] * y + a[0, 2], a[1, 0] * x + a[1, 1] * y + a[1, 2]], axis=1)


# ------------------------------------------------------------------------ mouth model


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 ramp from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True, eq=False)
class _Mouth:
    """Mouth geometry in face-aligned coordinates (u across, v down, origin mid-lips).

    ``u`` is in half-mouth-widths, ``v`` in pixels. ``u_s`` samples the span between the
    inner lip corners; ``v_up`` and ``v_low`` are the inner upper and lower lip contours
    there (equal once the mouth is closed).
    """

    origin: np.ndarray
    e_u: np.ndarray
    e_v: np.ndarray
    half_width: float
    u_s: np.ndarray
    v_up: np.ndarray
    v_low: np.ndarray
    u_mid: float
    u_half: float
    chin: float  # v of the chin
    max_drop: float  # jaw drop at opening 1, pixels

    def coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face-aligned (u, v) of frame pixels (x, y)."""
        dx, dy = x - self.origin[0], y - self.origin[1]
        u = (dx * self.e_u[0] + dy * self.e_u[1]) / self.half_width
        v = dx * self.e_v[0] + dy * self.e_v[1]
        return u.astype(np.float32), v.astype(np.float32)

    def _below_lip(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth below the inner upper lip, and the lower-lip weight that fades with it."""
        v_rel = v - np.interp(u, self.u_s, self.v_up)
        lip = 1.0 - _smoothstep(v_rel / (1.4 * self.half_width))
        return v_rel, lip

    def profile(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Fraction (0..1) of the jaw drop applied at output point (u, v).

        Zero above the inner upper lip; just below it an elliptic "lens" across the lips
        (zero at the inner corners, so the mouth opens as an ellipse); deeper, the jaw
        moves, most at the chin and less towards the jaw angles; below the chin it fades
        out over the neck. The vertical ramps are long enough that the backward warp
        never folds (its vertical slope stays below 1).
        """
        v_rel, lip = self._below_lip(u, v)
        lens = np.sqrt(np.clip(1.0 - ((u - self.u_mid) / self.u_half) ** 2, 0.0, 1.0))
        jaw = 1.0 - _smoothstep((np.abs(u - self.u_mid) - 0.3) / 2.4)
        chin = self.chin - float(self.v_up.mean())
        neck = 1.0 - _smoothstep((v_rel - chin) / (1.8 * self.half_width))
        p = (lip * lens + (1.0 - lip) * jaw) * neck
        return np.where(v_rel >= 0.0, p, 0.0).astype(np.float32)

    def closure(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Backward displacement (pixels along ``e_v``) that closes a photo's open mouth.

        Just below the inner upper lip it samples the inner lower lip, hiding whatever
        was between (teeth of a smile); the lift fades over the lower lip.
        """
        v_rel, lip = self._below_lip(u, v)
        gap = np.interp(u, self.u_s, self.v_low - self.v_up)  # 0 at the inner corners
        return np.where(v_rel >= 0.0, gap * lip, 0.0).astype(np.float32)

    def closed(self) -> _Mouth:
        """The same mouth after :meth:`closure`: lower inner lip on the upper one."""
        return dataclasses.replace(self, v_low=self.v_up.copy())

    def lower_lip_out(self, opening: float) -> np.ndarray:
        """Output v of the inner lower lip at ``u_s`` for this opening (fixed point)."""
        lift = opening * self.max_drop
        v = self.v_low + lift * self.profile(self.u_s, self.v_low + 1e-3)
        for _ in range(8):  # a contraction: the warp's vertical slope is < 1
            v = self.v_low + lift * self.profile(self.u_s, np.maximum(v, self.v_low + 1e-3))
        return v


def _mouth_geometry(lm: np.ndarray, jaw_gain: float) -> _Mouth:
    """Build the mouth model from frame-space landmarks."""
    left, right = lm[_MOUTH_LEFT].astype(np.float64), lm[_MOUTH_RIGHT].astype(np.float64)
    origin = (lm[_LIP_UPPER_INNER] + lm[_LIP_LOWER_INNER]).astype(np.float64) / 2
    e_u = (right - left) / _norm(right - left)
    e_v = np.array([-e_u[1], e_u[0]])
    if _dot2(lm[_CHIN] - origin, e_v) < 0:  # mirrored faces: keep v pointing to the chin
        e_v = -e_v
    hw = float(_norm(right - left) / 2)

    def uv(idx: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        d = lm[list(idx)] - origin
        u, v = _dot2(d, e_u) / hw, _dot2(d, e_v)
        order = np.argsort(u)
        return u[order], v[order]

    uu, vu = uv(_INNER_UPPER)
    ul, vl = uv(_INNER_LOWER)
    u_lo, u_hi = max(uu[0], ul[0]), min(uu[-1], ul[-1])
    u_s = np.linspace(u_lo, u_hi, 48)
    v_up = np.interp(u_s, uu, vu)
    v_low = np.maximum(np.interp(u_s, ul, vl), v_up)
    v_low[[0, -1]] = v_up[[0, -1]]  # the inner corners are shared by both contours
    return _Mouth(
        origin=origin,
        e_u=e_u,
        e_v=e_v,
        half_width=hw,
        u_s=u_s,
        v_up=v_up,
        v_low=v_low,
        u_mid=float((u_lo + u_hi) / 2),
        u_half=float((u_hi - u_lo) / 2),
        chin=float(_dot2(lm[_CHIN] - origin, e_v)),
        max_drop=_MAX_OPEN * 2 * hw * jaw_gain,
    )


# ------------------------------------------------------------------------- the scene


@dataclass(frozen=True, eq=False)
class _Scene:
    """The static (opening-independent) part of one speaker at one camera position.

    Per frame only the head box ``warp_box`` is re-sampled: the head moves (jitter) and
    the jaw drops there, the rest of the frame is static.
    """

    rgb: np.ndarray  # HxWx3 uint8 composite, mouth closed
    temp: np.ndarray  # HxW float32 temperature, optics blur applied
    warp_box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the re-sampled region
    grid_x: np.ndarray  # pixel coordinates of the warp box
    grid_y: np.ndarray
    head: np.ndarray  # jitter weight in the warp box: 1 on the head, 0 off it
    disp_x: np.ndarray  # backward displacement at opening 1, warp box + _JITTER_PAD
    disp_y: np.ndarray
    breath: np.ndarray  # warming at opening 1 in the warp box
    roi: tuple[int, int, int, int]  # y0, y1, x0, x1 of the mouth cavity region
    roi_u: np.ndarray
    roi_v: np.ndarray
    mouth: _Mouth
    lip_openings: np.ndarray  # (K,) openings at which the lower lip curve is tabulated
    lip_curves: np.ndarray  # (K, len(mouth.u_s)) output v of the inner lower lip
    t_cavity: float
    teeth_rgb: np.ndarray
    cavity_rgb: np.ndarray
    tongue_rgb: np.ndarray


def _low_freq_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] (bicubic upsampling of a coarse grid)."""
    h, w = shape
    coarse = rng.standard_normal((cells, max(2, round(cells * w / h)))).astype(np.float32)
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) / 2.0, -1.5, 1.5)


def _colour_person(identity: FaceIdentity, rgb: np.ndarray) -> np.ndarray:
    """Apply the speaker's skin tone, brightness, gamma and saturation (float32 0..255)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    curves = [255.0 * identity.brightness * g * dm.power(x, identity.gamma) for g in identity.colour_gain]
    lut = np.clip(np.stack(curves, axis=1), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    out = cv2.LUT(rgb, lut).astype(np.float32)
    luma = out[..., 0] * np.float32(0.299) + out[..., 1] * np.float32(0.587) + out[..., 2] * np.float32(0.114)
    return luma[..., None] + identity.saturation * (out - luma[..., None])


def _background(identity: FaceIdentity) -> np.ndarray:
    """A plain wall: the speaker's colour, a lighting gradient, blotches and grain."""
    rng = np.random.default_rng([identity.background_seed, 1])
    h, w = FRAME_H, FRAME_W
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.0 + 0.06 * (1 - yy / h) - 0.05 * ((xx - w / 2) / (w / 2)) ** 2
    light *= 1.0 + rng.uniform(-0.04, 0.04) * (xx / w - 0.5)
    blotch = identity.background_texture * _low_freq_noise(rng, (h, w), 6)
    grain = rng.normal(0.0, 1.2, (h, w)).astype(np.float32)
    base = np.array(identity.background_rgb, np.float32)
    return base * light[..., None] + (blotch + grain)[..., None]


def _gauss(x: np.ndarray, y: np.ndarray, c: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """Unnormalised Gaussian bump of std ``sx``/``sy`` pixels at point ``c``."""
    sy = sx if sy is None else sy
    return _exp32(-0.5 * (((x - c[0]) / sx) ** 2 + ((y - c[1]) / sy) ** 2))


def _exp32(x: np.ndarray) -> np.ndarray:
    """exp of a float32 array as float32, the same on every CPU (see :mod:`tavse.synth.detmath`)."""
    return dm.exp(np.asarray(x, np.float64)).astype(np.float32)


def _temperature(
    identity: FaceIdentity,
    lm: np.ndarray,
    photo: np.ndarray,
    person: np.ndarray,
    mouth: _Mouth,
    glasses: bool,
) -> np.ndarray:
    """The static temperature field of the frame (before optics blur), float32 in [0, 1].

    ``photo`` is the posed base photograph; its fine luminance detail modulates the
    temperature a little (eyebrows, hair strands and shadowed creases are cooler).
    """
    rng = np.random.default_rng([identity.background_seed, 2])
    h, w = FRAME_H, FRAME_W
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fw = identity.face_width
    u, v = mouth.coords(xx, yy)
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    detail = cv2.GaussianBlur(grey, (0, 0), 1.0) - cv2.GaussianBlur(grey, (0, 0), 0.06 * fw)
    detail = np.clip(0.4 * detail, -0.08, 0.04)

    # Background: cool wall, slightly warmer low down and in soft blotches.
    t_bg = identity.t_background + 0.02 * (yy / h) + 0.015 * _low_freq_noise(rng, (h, w), 5)
    # Person: hair above the chin line, clothes below it.
    below_chin = _smoothstep((v - mouth.chin - 0.05 * fw) / (0.12 * fw))
    t_person = identity.t_hair + (identity.t_clothes - identity.t_hair) * below_chin
    t_person += 0.03 * _low_freq_noise(rng, (h, w), 8) + 0.5 * detail

    # Skin: the face oval, cooler towards its edge (grazing emission angle).
    oval = np.zeros((h, w), np.uint8)
    polygon = np.round(lm[list(FACE_OVAL)] * 16).astype(np.int32)
    # shift=4: 1/16 px vertices. The colour is a scalar, which OpenCV takes as a Scalar (cv2's stubs want a sequence).
    cv2.fillPoly(oval, [polygon], 255, cv2.LINE_AA, shift=4)  # type: ignore[call-overload]
    inside = cv2.distanceTransform((oval > 127).astype(np.uint8), cv2.DIST_L2, 5)
    t_face = identity.t_skin - 0.09 * _exp32(-inside / (0.04 * fw))
    t_face += 0.02 * _low_freq_noise(rng, (h, w), 10) + detail
    t_face -= identity.t_nose_drop * _gauss(xx, yy, lm[_NOSE_TIP], 0.07 * fw)
    t_face -= 0.5 * identity.t_nose_drop * _gauss(xx, yy, lm[_NOSE_MID], 0.05 * fw)
    for inner, ring in zip(_EYE_INNER, _EYE_RINGS):
        t_face += identity.t_eye_rise * _gauss(xx, yy, lm[inner], 0.035 * fw)
        t_face += 0.4 * identity.t_eye_rise * _gauss(xx, yy, lm[list(ring)].mean(0), 0.06 * fw)
    t_face += 0.03 * _gauss(xx, yy, mouth.origin, 0.6 * mouth.half_width, 0.35 * mouth.half_width)
    if glasses:  # glass is opaque to long-wave infrared: lenses look cold
        lens = np.zeros((h, w), np.uint8)
        angle = dm.atan2(mouth.e_u[1], mouth.e_u[0]) / _RADIANS
        for ring in _EYE_RINGS:
            c = lm[list(ring)].mean(0)
            axes = (int(0.16 * fw * 16), int(0.115 * fw * 16))
            centre = tuple(int(q) for q in np.round(c * 16))
            # a scalar colour, as in the fillPoly above
            cv2.ellipse(lens, centre, axes, angle, 0, 360, 255, -1, cv2.LINE_AA, 4)  # type: ignore[call-overload]
        a = lens.astype(np.float32) / 255.0
        t_face = t_face * (1 - a) + (identity.t_hair - 0.04) * a

    # Neck: warm skin continuing below the chin, fading downwards.
    below = v - mouth.chin
    neck = 1.0 - _smoothstep((np.abs(u * mouth.half_width) - 0.14 * fw) / (0.08 * fw))
    neck *= _smoothstep((below + 0.1 * fw) / (0.1 * fw)) * (1.0 - _smoothstep(below / (0.3 * fw)))

    skin = oval.astype(np.float32) / 255.0
    t = t_person * (1 - neck) + (identity.t_skin + 0.02) * neck
    t = t * (1 - skin) + t_face * skin
    t = t * person + t_bg * (1 - person)
    return np.clip(t, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=8)  # ~5 MB each; a corpus renders speaker by speaker
def _scene(identity: FaceIdentity, position: int) -> _Scene:
    """Build (and cache) the static scene of one speaker at one camera position."""
    base = load_base_face(identity.base)
    a = _pose_matrix(identity, base, position)
    size = (FRAME_W, FRAME_H)
    # Replicate the border so the body continues below the photo's bottom edge.
    photo = cv2.warpAffine(base.rgb, a, size, borderMode=cv2.BORDER_REPLICATE)
    person = cv2.warpAffine(base.person, a, size, borderMode=cv2.BORDER_REPLICATE)
    person = cv2.GaussianBlur(person, (0, 0), 1.0)  # feather the cut-out edge
    lm = _apply_affine(a, base.landmarks.astype(np.float64)).astype(np.float32)
    mouth = _mouth_geometry(lm, identity.jaw_gain)
    fw = identity.face_width
    gy, gx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)

    fg = _colour_person(identity, photo)
    rgb = fg * person[..., None] + _background(identity) * (1 - person[..., None])
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    temp = _temperature(identity, lm, photo, person, mouth, base.glasses)

    # Close the photo's mouth (a smile shows teeth) so that opening 0 means lips together
    # for every base face; the cavity is then painted from scratch per frame.
    lift = mouth.closure(*mouth.coords(gx, gy))
    close_x = gx + lift * np.float32(mouth.e_v[0])
    close_y = gy + lift * np.float32(mouth.e_v[1])
    rgb = cv2.remap(rgb, close_x, close_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    temp = cv2.remap(temp, close_x, close_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mouth = mouth.closed()

    temp = cv2.GaussianBlur(temp, (0, 0), 1.3)  # thermal optics are softer than RGB
    stripes = np.random.default_rng([identity.background_seed, 3]).normal(0, 0.003, FRAME_W)
    temp = (temp + stripes.astype(np.float32)[None, :]).astype(np.float32)

    # Head jitter moves the head (face, hair, neck) but not the shoulders or the wall.
    _, v_all = mouth.coords(gx, gy)
    head = person * (1.0 - _smoothstep((v_all - mouth.chin - 0.15 * fw) / (0.35 * fw)))
    head = np.clip(cv2.GaussianBlur(head, (0, 0), 5.0) * 1.3, 0.0, 1.0)
    # Backward displacement at opening 1 (sample from above), padded for integer shifts.
    pad = _JITTER_PAD
    py, px = np.mgrid[-pad : FRAME_H + pad, -pad : FRAME_W + pad].astype(np.float32)
    drop = -mouth.max_drop * mouth.profile(*mouth.coords(px, py))
    # Re-sample per frame only the box where the head jitters or the jaw drops.
    moving = (head > 1e-3) | (drop[pad:-pad, pad:-pad] != 0)
    rows, cols = np.nonzero(moving)
    margin = pad + 2
    wy0, wx0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    wy1, wx1 = min(rows.max() + margin + 1, FRAME_H), min(cols.max() + margin + 1, FRAME_W)
    box = (slice(wy0, wy1), slice(wx0, wx1))
    drop = drop[wy0 : wy1 + 2 * pad, wx0 : wx1 + 2 * pad]

    hw = mouth.half_width
    breath_c = mouth.origin + (0.25 * mouth.max_drop + 0.2 * hw) * mouth.e_v
    du, dv = gx[box] - breath_c[0], gy[box] - breath_c[1]
    bu = (du * mouth.e_u[0] + dv * mouth.e_u[1]) / (1.1 * hw)
    bv = (du * mouth.e_v[0] + dv * mouth.e_v[1]) / (0.9 * hw)
    breath = (identity.t_breath * _exp32(-0.5 * (bu * bu + bv * bv))).astype(np.float32)

    # Region that can hold the cavity at any opening and jitter.
    corner_list: list[np.ndarray] = []
    for u in (mouth.u_s[0] - 0.2, mouth.u_s[-1] + 0.2):
        for v in (mouth.v_up.min() - 3, mouth.v_low.max() + mouth.max_drop + 3):
            corner_list.append(mouth.origin + u * hw * mouth.e_u + v * mouth.e_v)
    corners = np.array(corner_list)
    x0, y0 = np.floor(corners.min(0)).astype(int) - 3
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 4
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, FRAME_W), min(y1, FRAME_H)
    roi_u, roi_v = mouth.coords(gx[y0:y1, x0:x1], gy[y0:y1, x0:x1])
    lip_openings = np.linspace(0.0, 1.0, 65)

    shade = identity.brightness
    return _Scene(
        rgb=rgb,
        temp=temp,
        warp_box=(int(wy0), int(wy1), int(wx0), int(wx1)),
        grid_x=np.ascontiguousarray(gx[box]),
        grid_y=np.ascontiguousarray(gy[box]),
        head=np.ascontiguousarray(head[box]).astype(np.float32),
        disp_x=(drop * np.float32(mouth.e_v[0])).astype(np.float32),
        disp_y=(drop * np.float32(mouth.e_v[1])).astype(np.float32),
        breath=breath,
        roi=(int(y0), int(y1), int(x0), int(x1)),
        roi_u=roi_u,
        roi_v=roi_v,
        mouth=mouth,
        lip_openings=lip_openings,
        lip_curves=np.stack([mouth.lower_lip_out(o) for o in lip_openings]),
        t_cavity=min(1.0, identity.t_skin + 0.12),
        teeth_rgb=np.clip(np.array([214, 208, 196], np.float32) * min(1.0, shade + 0.1), 0, 255),
        cavity_rgb=np.array([38, 12, 16], np.float32) * shade,
        tongue_rgb=np.array([120, 48, 54], np.float32) * shade,
    )


# ------------------------------------------------------------------------- rendering


def _head_jitter(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Smooth (AR(1)) random head translation per frame, (n, 2) pixels, std ``sigma``."""
    rho = 0.85
    steps = rng.standard_normal((n, 2)) * sigma * np.sqrt(1 - rho * rho)
    out = np.empty((n, 2))
    cur = rng.standard_normal(2) * sigma
    for i in range(n):
        cur = rho * cur + steps[i]
        out[i] = cur
    return out


def _paint_cavity(scene: _Scene, opening: float, jitter: np.ndarray, rgb: np.ndarray, temp: np.ndarray) -> None:
    """Paint the open mouth (cavity, upper teeth, tongue) into the ROI of both frames."""
    m = scene.mouth
    y0, y1, x0, x1 = scene.roi
    # Face coordinates of the output pixels, following the head jitter.
    u = scene.roi_u - np.float32(_dot2(jitter, m.e_u) / m.half_width)
    v = scene.roi_v - np.float32(_dot2(jitter, m.e_v))
    top = np.interp(u, m.u_s, m.v_up).astype(np.float32)
    # Lower lip curve for this opening, interpolated from the per-scene table.
    k = min(int(opening * (len(scene.lip_openings) - 1)), len(scene.lip_openings) - 2)
    w = (opening - scene.lip_openings[k]) / (scene.lip_openings[k + 1] - scene.lip_openings[k])
    lip = (1.0 - w) * scene.lip_curves[k] + w * scene.lip_curves[k + 1]
    bottom = np.interp(u, m.u_s, lip).astype(np.float32)
    inside = (u >= m.u_s[0]) & (u <= m.u_s[-1])
    # Anti-aliased vertical coverage; a closed mouth (top == bottom) paints nothing.
    alpha = np.minimum(np.minimum(v - top + 0.5, bottom - v + 0.5), bottom - top)
    alpha = np.where(inside, np.clip(alpha, 0.0, 1.0), 0.0).astype(np.float32)
    if not alpha.any():
        return
    gap = np.maximum(bottom - top, 1e-3)
    depth = np.clip((v - top) / gap, 0.0, 1.0)  # 0 at the upper lip, 1 at the lower lip
    across = np.abs(u - m.u_mid) / m.u_half
    teeth_h = np.minimum(0.22 * m.half_width, 0.4 * gap) / gap
    teeth = np.clip((teeth_h - depth) * gap, 0.0, 1.0) * np.clip((0.75 - across) * 6, 0.0, 1.0)
    tongue = _smoothstep((depth - 0.6) / 0.4) * 0.6 * np.clip((0.8 - across) * 4, 0.0, 1.0)
    colour = scene.cavity_rgb * (1.0 - 0.3 * depth[..., None])
    colour = colour + (scene.tongue_rgb - colour) * tongue[..., None]
    teeth_rgb = scene.teeth_rgb * (1.0 - 0.45 * across * across)[..., None]  # rounder arch
    colour = colour + (teeth_rgb - colour) * teeth[..., None]
    patch = rgb[y0:y1, x0:x1].astype(np.float32)
    patch += (colour - patch) * alpha[..., None]
    rgb[y0:y1, x0:x1] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    # The open mouth is at core temperature, seen through the thermal optics blur.
    hot = cv2.GaussianBlur(alpha, (0, 0), 1.3)
    tpatch = temp[y0:y1, x0:x1]
    tpatch += (scene.t_cavity - tpatch) * hot


def render_frames(
    identity: FaceIdentity, openings: np.ndarray, seed: int, position: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Render one speaker saying something: aligned RGB and thermal frames.

    Args:
        identity: the speaker, from :func:`make_identity`.
        openings: (F,) mouth opening per frame in [0, 1] (0 = lips at rest).
        seed: seeds the head jitter and thermal sensor noise.
        position: SpeakingFaces camera position 1..9 (1 frontal; 4..9 turned heads).

    Returns:
        ``(rgb_frames, thermal_frames)``, two lists of F arrays of shape (348, 464, 3),
        uint8 RGB; the thermal frames are Iron pseudo-colour, pixel-aligned with the RGB.
        The same arguments always give identical arrays, on any x86-64 CPU.
    """
    with portable_opencv():
        return _render_frames(identity, openings, seed, position)


def _render_frames(
    identity: FaceIdentity, openings: np.ndarray, seed: int, position: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if position not in _POSITION_POSE:
        raise ValueError(f"position must be 1..9, got {position}")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    openings = np.asarray(openings, dtype=np.float64).reshape(-1)
    openings = np.clip(np.nan_to_num(openings), 0.0, 1.0)
    scene = _scene(identity, position)
    rng = np.random.default_rng([seed, identity.speaker_id, position, 0x7A5E])
    jitters = _head_jitter(rng, len(openings), identity.jitter_px)
    # A few frames of sensor noise, reused with random offsets (drawing fresh noise per
    # frame would cost more than the rest of the rendering).
    noise = rng.normal(0.0, 0.8 / 255.0, (4, FRAME_H + 8, FRAME_W + 8)).astype(np.float32)
    picks = rng.integers(0, [4, 9, 9], size=(len(openings), 3))

    pad = _JITTER_PAD
    y0, y1, x0, x1 = scene.warp_box
    h, w = y1 - y0, x1 - x0
    rgb_frames: list[np.ndarray] = []
    thermal_frames: list[np.ndarray] = []
    for opening, jitter, (k, oy, ox) in zip(openings, jitters, picks):
        # Integer part of the jitter shifts the mouth displacement field with the head.
        ix, iy = (int(np.clip(np.rint(c), -pad, pad)) for c in jitter)
        disp_x = scene.disp_x[pad - iy : pad - iy + h, pad - ix : pad - ix + w]
        disp_y = scene.disp_y[pad - iy : pad - iy + h, pad - ix : pad - ix + w]
        map_x = cv2.scaleAdd(scene.head, -float(jitter[0]), scene.grid_x)
        map_y = cv2.scaleAdd(scene.head, -float(jitter[1]), scene.grid_y)
        if opening > 0:
            map_x = cv2.scaleAdd(disp_x, float(opening), map_x)
            map_y = cv2.scaleAdd(disp_y, float(opening), map_y)
        rgb = scene.rgb.copy()
        temp = scene.temp.copy()
        cv2.remap(scene.rgb, map_x, map_y, cv2.INTER_LINEAR, dst=rgb[y0:y1, x0:x1], borderMode=cv2.BORDER_REFLECT)
        cv2.remap(scene.temp, map_x, map_y, cv2.INTER_LINEAR, dst=temp[y0:y1, x0:x1], borderMode=cv2.BORDER_REFLECT)
        if opening > 0:
            temp[y0:y1, x0:x1] += np.float32(opening) * scene.breath
        _paint_cavity(scene, float(opening), jitter, rgb, temp)
        temp += noise[k, oy : oy + FRAME_H, ox : ox + FRAME_W]
        rgb_frames.append(rgb)
        thermal_frames.append(temperature_to_iron(temp))
    return rgb_frames, thermal_frames
