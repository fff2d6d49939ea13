"""Transcendental functions and signal helpers that give the same bits on every x86-64 CPU.

NumPy computes ``exp``, ``log``, ``sin``, ``cos``, ``power``, ``arctan2``, ``log10``... with
kernels chosen at run time from the processor's features: on a CPU with AVX-512 the float64
functions run Intel SVML / NumPy's own AVX512F code, on an AVX2 CPU they call glibc's libm,
and the float32 ones have AVX2/FMA3 and AVX512F variants. The variants agree to an ulp or
two, not bit for bit, and one ulp is enough to flip a rounding to uint8 or int16 somewhere in
a corpus. The same holds for BLAS-backed products (``@``, ``np.dot``, ``np.convolve``:
OpenBLAS picks its kernel per CPU), complex multiplication (SIMD loops with fused
multiply-add) and LAPACK solves. scipy's filter and window designs use all of these.

Everything here is built from operations that IEEE 754 defines exactly (``+ - * /``,
``sqrt``, rounding to an integer, comparisons, integer bit manipulation), each a separate
NumPy ufunc call so that no compiler can fuse a multiply and an add. Results are accurate
to a few ulps; what matters is that they are the same on every machine.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

__all__ = [
    "atan2",
    "butter_sos",
    "convolve_valid",
    "cos",
    "exp",
    "exp10",
    "fftconvolve",
    "hanning",
    "log",
    "log10",
    "power",
    "resample_poly",
    "sin",
    "sosfilt_zi",
    "tan",
    "tukey",
]

# --------------------------------------------------------------------------- exp / log

_INV_LN2 = 1.4426950408889634  # 1/ln 2
_LN2_HI = 6.93147180369123816490e-01  # ln 2, upper 32 bits: k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_LN10 = 2.302585092994046  # ln 10
_LN10_LO = -2.1707562233822494e-16  # ln 10 - _LN10
_EXP_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(14))  # |r| <= ln2/2: error < 1e-17
# fdlibm's minimax coefficients of log(1+f) = f - f*f/2 + s*(f*f/2 + R(s*s)), s = f/(2+f).
_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)
_SQRT2 = 1.4142135623730951


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(result: np.ndarray, like) -> np.ndarray | float:
    """Return a Python float for scalar input, else the array."""
    return float(result) if np.ndim(like) == 0 and not isinstance(like, np.ndarray) else result


def _pow2(k: np.ndarray) -> np.ndarray:
    """2.0**k for integer k in [-1022, 1023], built from the exponent bits (exact)."""
    return ((k + 1023).astype(np.int64) << 52).view(np.float64)


def exp(x):
    """e**x (float64). Overflows to inf above ~709.78; results below ~2**-1075 are 0."""
    x_in = x
    x = _f64(x)
    bad = np.isnan(x)
    xc = np.clip(np.where(bad, 0.0, x), -746.0, 710.0)
    k = np.rint(xc * _INV_LN2)
    r = (xc - k * _LN2_HI) - k * _LN2_LO  # |r| <= ~0.347
    p = np.full_like(r, _EXP_TAYLOR[-1])
    for c in _EXP_TAYLOR[-2::-1]:
        p = p * r + c
    ki = k.astype(np.int64)
    half = ki // 2  # two exact power-of-two factors cover k in [-1076, 1024]
    with np.errstate(over="ignore", under="ignore"):
        y = (p * _pow2(half)) * _pow2(ki - half)
    y = np.where(bad, np.nan, y)
    return _out(y, x_in)


def _two_prod(a: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """a*b as an unevaluated sum hi + lo, exactly (Dekker's product, no fused multiply-add)."""

    def split(v):
        c = 134217729.0 * v  # 2**27 + 1
        hi = c - (c - v)
        return hi, v - hi

    p = a * b
    ah, al = split(a)
    bh, bl = split(np.float64(b))
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def exp10(x):
    """10**x (float64): exp of x*ln(10) carried in double-double, then one correction."""
    xa = np.clip(_f64(x), -400.0, 400.0)
    hi, lo = _two_prod(xa, _LN10)
    lo = lo + xa * _LN10_LO
    y = _f64(exp(hi))
    return _out(y + y * lo, x)


def log(x):
    """Natural logarithm (float64): -inf at 0, nan below 0 or for nan."""
    x_in = x
    x = _f64(x)
    ok = np.isfinite(x) & (x > 0)
    xs = np.where(ok, x, 1.0)
    tiny = xs < 2.2250738585072014e-308  # subnormal: scale into the normal range first
    xs = np.where(tiny, xs * 18014398509481984.0, xs)  # 2**54
    bits = xs.view(np.int64)
    e = ((bits >> 52) & 0x7FF) - 1023 - np.where(tiny, 54, 0)
    m = ((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64)  # [1, 2)
    big = m > _SQRT2
    m = np.where(big, m * 0.5, m)  # [sqrt(2)/2, sqrt(2)]
    dk = (e + big).astype(np.float64)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    t2 = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    r = t2 + t1
    hfsq = 0.5 * f * f
    y = dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)
    y = np.where(ok, y, np.where(x == 0, -np.inf, np.where(x == np.inf, np.inf, np.nan)))
    return _out(y, x_in)


def log10(x):
    """Base-10 logarithm (float64)."""
    return _out(_f64(log(x)) / _LN10, x)


def power(x, y):
    """x**y for x >= 0 (float64), as exp(y log x); 0**y is 0 for y > 0, 1 for y == 0.

    A scalar ``y`` of -1, 0, 0.5, 1 or 2 is computed exactly as NumPy's ``**`` does
    (reciprocal, ones, sqrt, copy, square).
    """
    xa, ya = np.broadcast_arrays(_f64(x), _f64(y))
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0 and not isinstance(x, np.ndarray) and not isinstance(y, np.ndarray)
    if np.ndim(y) == 0 and float(y) in _EXACT_POWERS:
        r = _EXACT_POWERS[float(y)](_f64(x))
        return float(r) if scalar else np.array(r, dtype=np.float64)
    pos = xa > 0
    r = _f64(exp(ya * _f64(log(np.where(pos, xa, 1.0)))))
    r = np.where(pos, r, np.where(ya == 0, 1.0, np.where(ya > 0, 0.0, np.inf)))
    r = np.where((xa < 0) | np.isnan(xa) | np.isnan(ya), np.nan, r)
    return float(r) if scalar else r


_EXACT_POWERS = {
    -1.0: lambda v: 1.0 / v,
    0.0: lambda v: np.ones_like(v),
    0.5: np.sqrt,
    1.0: lambda v: v.copy(),
    2.0: lambda v: v * v,
}


# --------------------------------------------------------------------------- sin / cos

_INV_PIO2 = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e00  # first 33 bits of pi/2
_PIO2_2 = 6.07710050630396597660e-11  # next 33 bits
_PIO2_2T = 2.02226624879595063154e-21  # pi/2 - _PIO2_1 - _PIO2_2
# fdlibm's kernel coefficients on [-pi/4, pi/4].
_S = (
    -1.66666666666666324348e-01,
    8.33333333332248946124e-03,
    -1.98412698298579493134e-04,
    2.75573137070700676789e-06,
    -2.50507602534068634195e-08,
    1.58969099521155010221e-10,
)
_C = (
    4.16666666666666019037e-02,
    -1.38888888888741095749e-03,
    2.48015872894767294178e-05,
    -2.75573143513906633035e-07,
    2.08757232129817482790e-09,
    -1.13596475577881948265e-11,
)


def _reduce(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = n*pi/2 + r with |r| <= ~pi/4; returns (r, n mod 4). Accurate for |x| < ~1.6e6."""
    n = np.rint(x * _INV_PIO2)
    r = ((x - n * _PIO2_1) - n * _PIO2_2) - n * _PIO2_2T
    return r, (n.astype(np.int64) & 3)


def _ksin(r: np.ndarray) -> np.ndarray:
    z = r * r
    p = _S[1] + z * (_S[2] + z * (_S[3] + z * (_S[4] + z * _S[5])))
    return r + (z * r) * (_S[0] + z * p)


def _kcos(r: np.ndarray) -> np.ndarray:
    z = r * r
    p = z * (_C[0] + z * (_C[1] + z * (_C[2] + z * (_C[3] + z * (_C[4] + z * _C[5])))))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + z * p)


def _sincos(x, want_sin: bool):
    x_in = x
    x = _f64(x)
    bad = ~np.isfinite(x)
    r, q = _reduce(np.where(bad, 0.0, x) if bad.any() else x)
    if not want_sin:  # cos(x) = sin(x + pi/2)
        q = (q + 1) & 3
    # sin(r + q pi/2) = sin r, cos r, -sin r, -cos r for q = 0..3
    y = np.where((q & 1).astype(bool), _kcos(r), _ksin(r))
    y = np.where((q & 2).astype(bool), -y, y)
    if bad.any():
        y = np.where(bad, np.nan, y)
    return _out(y, x_in)


def sin(x):
    """Sine (float64); accurate to a few ulps for |x| < ~1.6e6, deterministic everywhere."""
    return _sincos(x, True)


def cos(x):
    """Cosine (float64); accurate to a few ulps for |x| < ~1.6e6, deterministic everywhere."""
    return _sincos(x, False)


def tan(x):
    """Tangent (float64) as sin/cos."""
    return _out(_f64(sin(x)) / _f64(cos(x)), x)


# ------------------------------------------------------------------------------- atan2

_ATAN_TERMS = 13  # |t| <= tan(pi/16) ~ 0.199 after two halvings: 0.2**27/27 < 1e-20


def _atan01(t: np.ndarray) -> np.ndarray:
    """atan(t) for t >= 0 (finite), via two half-angle reductions and the Taylor series."""
    inv = t > 1.0
    t = np.where(inv, 1.0 / np.where(inv, t, 1.0), t)  # atan(t) = pi/2 - atan(1/t)
    for _ in range(2):  # atan(t) = 2 atan(t / (1 + sqrt(1 + t*t)))
        t = t / (1.0 + np.sqrt(1.0 + t * t))
    z = t * t
    p = np.full_like(t, (-1.0) ** (_ATAN_TERMS - 1) / (2 * _ATAN_TERMS - 1))
    for n in range(_ATAN_TERMS - 2, -1, -1):
        p = p * z + (-1.0) ** n / (2 * n + 1)
    a = 4.0 * (t * p)
    return np.where(inv, np.pi / 2 - a, a)


def atan2(y, x):
    """Angle of the point (x, y) in radians, in [-pi, pi] (float64; finite inputs)."""
    scalar = np.ndim(y) == 0 and np.ndim(x) == 0
    y, x = np.broadcast_arrays(_f64(y), _f64(x))
    ay, ax = np.abs(y), np.abs(x)
    both0 = (ax == 0) & (ay == 0)
    a = np.where(ax >= ay, _atan01(ay / np.where(ax > 0, ax, 1.0)), np.pi / 2 - _atan01(ax / np.where(ay > 0, ay, 1.0)))
    a = np.where(both0, 0.0, a)
    a = np.where(x < 0, np.pi - a, a)
    a = np.where(np.signbit(y), -a, a)
    return float(a) if scalar else a


# ----------------------------------------------------------------------------- windows


def hanning(m: int) -> np.ndarray:
    """``np.hanning(m)`` with a deterministic cosine."""
    if m < 1:
        return np.zeros(0)
    if m == 1:
        return np.ones(1)
    n = np.arange(1 - m, m, 2, dtype=np.float64)
    return 0.5 + 0.5 * cos(np.pi * n / (m - 1))


def tukey(m: int, alpha: float) -> np.ndarray:
    """``scipy.signal.windows.tukey(m, alpha)`` (symmetric) with a deterministic cosine."""
    if m <= 1 or alpha <= 0:
        return np.ones(max(m, 0))
    if alpha >= 1.0:
        return hanning(m)
    n = np.arange(0, m, dtype=np.float64)
    width = int(math.floor(alpha * (m - 1) / 2.0))
    n1, n2, n3 = n[0 : width + 1], n[width + 1 : m - width - 1], n[m - width - 1 :]
    w1 = 0.5 * (1 + cos(np.pi * (-1 + 2.0 * n1 / alpha / (m - 1))))
    w3 = 0.5 * (1 + cos(np.pi * (-2.0 / alpha + 1 + 2.0 * n3 / alpha / (m - 1))))
    return np.concatenate([w1, np.ones(n2.shape), w3])


def _i0(x: np.ndarray) -> np.ndarray:
    """Modified Bessel function I0 by its power series sum((x^2/4)^k / k!^2) (|x| <= ~30)."""
    q = 0.25 * x * x
    term = np.ones_like(q)
    total = np.ones_like(q)
    for k in range(1, 200):
        term = term * q / float(k * k)
        total = total + term
        if not (term > 1e-18 * total).any():  # the same decision on every machine
            break
    return total


def _kaiser(m: int, beta: float) -> np.ndarray:
    """``scipy.signal.windows.kaiser(m, beta)`` (symmetric)."""
    if m <= 1:
        return np.ones(max(m, 0))
    n = np.arange(0, m, dtype=np.float64)
    alpha = (m - 1) / 2.0
    ratio = (n - alpha) / alpha
    return _i0(beta * np.sqrt(np.clip(1 - ratio * ratio, 0.0, None))) / _i0(np.array([beta]))[0]


def _sinc(x: np.ndarray) -> np.ndarray:
    y = np.pi * np.where(x == 0, 1.0e-20, x)
    return sin(y) / y


def _firwin_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """``scipy.signal.firwin(numtaps, cutoff, window=('kaiser', beta))`` (cutoff rel. to Nyquist)."""
    alpha = 0.5 * (numtaps - 1)
    m = np.arange(0, numtaps, dtype=np.float64) - alpha
    h = cutoff * _sinc(cutoff * m)
    h = h * _kaiser(numtaps, beta)
    return h / np.sum(h)  # unit gain at DC (scipy's scale=True for a lowpass)


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` (float64, 1-D) with a deterministic filter.

    scipy designs the anti-aliasing filter with NumPy's sin and SciPy's i0 (libm exp);
    here the same Kaiser-windowed sinc is computed with the functions above and handed to
    scipy as the window, so the polyphase filtering itself is scipy's.
    """
    g = math.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    max_rate = max(up, down)
    h = _firwin_lowpass(2 * 10 * max_rate + 1, 1.0 / max_rate)
    return signal.resample_poly(x, up, down, window=h)


# ------------------------------------------------------------------------- IIR filters


def _bilinear(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z = (1 + s) / (1 - s) for s = a + jb (real and imaginary parts)."""
    d = (1.0 - a) * (1.0 - a) + b * b
    return (1.0 - a * a - b * b) / d, (2.0 * b) / d


def _csqrt(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal square root of u + jv."""
    mod = np.sqrt(u * u + v * v)
    re = np.sqrt(np.maximum((mod + u) * 0.5, 0.0))
    im = np.sqrt(np.maximum((mod - u) * 0.5, 0.0))
    return re, np.where(v < 0, -im, im)


def butter_sos(order: int, cutoff, btype: str, fs: float) -> np.ndarray:
    """Digital Butterworth filter as second-order sections, like ``scipy.signal.butter(...,
    output='sos')``: ``btype`` lowpass/highpass (``cutoff`` in Hz) or bandpass (a (low, high)
    pair in Hz). Bilinear transform with pre-warped edges; unit gain at DC (lowpass), at
    Nyquist (highpass) or at the geometric centre (bandpass).
    """
    if order < 1:
        raise ValueError(f"filter order must be >= 1, got {order}")
    # Analog prototype poles (unit cutoff, left half plane) in conjugate pairs, plus a real
    # pole -1 for odd orders: angles pi/2 + (2k+1) pi/(2N).
    k = np.arange(order // 2, dtype=np.float64)
    theta = (2 * k + 1) * np.pi / (2 * order)
    pre, pim = -sin(theta), cos(theta)  # upper-half-plane member of each pair
    odd = order % 2 == 1
    if btype in ("lowpass", "highpass"):
        w = tan(np.pi * float(cutoff) / fs)
        # s -> s/w (lowpass) or w/s (highpass): both put the poles at w times the
        # prototype's (1/p = conj(p) on the unit circle); only the zeros differ.
        are, aim, real = w * pre, w * pim, -w
        zre, zim = _bilinear(are, aim)
        rows: list[np.ndarray] = []
        zero = [1.0, 2.0, 1.0] if btype == "lowpass" else [1.0, -2.0, 1.0]
        for pr, pi in zip(zre, zim):
            a = np.array([1.0, -2.0 * pr, pr * pr + pi * pi])
            z = np.array(zero)
            ref = 1.0 if btype == "lowpass" else -1.0  # gain 1 at z = ref
            gain = (a[0] + a[1] * ref + a[2]) / (z[0] + z[1] * ref + z[2])
            rows.append(np.concatenate([gain * z, a]))
        if odd:
            zr, _ = _bilinear(np.array([real]), np.array([0.0]))
            a = np.array([1.0, -zr[0], 0.0])
            z = np.array([1.0, 1.0, 0.0]) if btype == "lowpass" else np.array([1.0, -1.0, 0.0])
            ref = 1.0 if btype == "lowpass" else -1.0
            gain = (a[0] + a[1] * ref) / (z[0] + z[1] * ref)
            rows.append(np.concatenate([gain * z, a]))
        return np.array(rows)
    if btype != "bandpass":
        raise ValueError(f"btype must be lowpass, highpass or bandpass, got {btype!r}")
    if odd:
        raise ValueError(f"bandpass filters need an even order here, got {order}")
    lo, hi = (float(c) for c in cutoff)
    if not 0 < lo < hi < fs / 2:
        raise ValueError(f"bandpass edges must satisfy 0 < low < high < fs/2, got {cutoff} at fs {fs}")
    w1, w2 = tan(np.pi * lo / fs), tan(np.pi * hi / fs)
    bw, w0sq = w2 - w1, w1 * w2
    # Each prototype pole p maps to the two roots of s^2 - p bw s + w0^2; with their
    # conjugates (from p's conjugate) they make two sections per prototype pair.
    gain = 1.0  # analog gain bw**N; the N zeros at s = 0 and N at infinity go to z = 1 and -1
    for _ in range(order):
        gain = gain * bw
    sections = []
    for a0, b0 in zip(pre, pim):
        hre, him = a0 * bw * 0.5, b0 * bw * 0.5  # p bw / 2
        dre, dim = _csqrt(np.array([hre * hre - him * him - w0sq]), np.array([2.0 * hre * him]))
        for sgn in (1.0, -1.0):
            re, im = hre + sgn * dre[0], him + sgn * dim[0]
            zre, zim = _bilinear(np.array([re]), np.array([im]))
            r2 = zre[0] * zre[0] + zim[0] * zim[0]
            sections.append((r2, [1.0, 0.0, -1.0, 1.0, -2.0 * zre[0], r2]))
            gain = gain / ((1.0 - re) * (1.0 - re) + im * im)  # 1 / |1 - p|^2 for the pair
    sections.sort(key=lambda t: t[0])  # poles nearest the unit circle last, as scipy does
    sos = np.array([row for _, row in sections])
    sos[0, :3] *= gain
    return sos


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """Steady-state initial conditions for a unit step, like ``scipy.signal.sosfilt_zi``.

    Closed form per (transposed direct form II) section instead of scipy's LAPACK solve:
    with DC gain g = sum(b)/sum(a), z1 = g - b0 and z2 = b2 - a2 g (a0 = 1), scaled by the
    DC gain of the sections before it.
    """
    sos = np.asarray(sos, dtype=np.float64)
    zi = np.empty((sos.shape[0], 2))
    scale = 1.0
    for i, (b0, b1, b2, a0, a1, a2) in enumerate(sos):
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
        g = (b0 + b1 + b2) / (1.0 + a1 + a2)
        zi[i] = scale * np.array([g - b0, b2 - a2 * g])
        scale = scale * g
    return zi


# ------------------------------------------------------------------------- convolution


def convolve_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``np.convolve(x, kernel, mode='valid')`` summed tap by tap (no BLAS dot product)."""
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    n = x.size - kernel.size + 1
    if n < 1:
        raise ValueError(f"convolve_valid: signal of {x.size} samples is shorter than the {kernel.size}-tap kernel")
    out = np.zeros(n)
    taps = kernel.size
    for j in range(taps):  # y[i] = sum_j kernel[j] x[i + taps - 1 - j]
        out += kernel[j] * x[taps - 1 - j : taps - 1 - j + n]
    return out


def fftconvolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full linear convolution of two real 1-D arrays via FFT, like ``scipy.signal.fftconvolve``,
    with the spectra multiplied in separate real operations (NumPy's complex multiply is
    SIMD-dispatched and fuses multiply-adds on some CPUs)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.size + b.size - 1
    nfft = sp_fft.next_fast_len(n, real=True)
    fa, fb = sp_fft.rfft(a, nfft), sp_fft.rfft(b, nfft)
    re = fa.real * fb.real - fa.imag * fb.imag
    im = fa.real * fb.imag + fa.imag * fb.real
    spec = np.empty(re.shape, np.complex128)
    spec.real, spec.imag = re, im
    return sp_fft.irfft(spec, nfft)[:n]
