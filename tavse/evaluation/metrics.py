"""Per-item speech-enhancement metrics and a parallel, order-preserving runner.

Besides the standard metrics, each item gets figures that separate removing noise from gating
silence (issue 10): the SI-SNR improvement on the target's speech-active samples, the
attenuation on its target-silent samples, and PESQ-WB / ESTOI changes against the noisy input.

Every wrapper takes 1-D mono float arrays of equal length, reference first, and raises
``ValueError`` with a clear message on a wrong sample rate, a length mismatch, non-finite
samples or an input the metric is undefined for (e.g. a silent reference).
``item_metrics`` turns those per-metric failures into ``None`` plus a reason, so one bad
item never aborts an evaluation or loses its other metrics.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pesq as pesq_pkg
import pystoi
import scipy.linalg
import torch
from scipy.signal import fftconvolve

from tavse import losses
from tavse.common.progress import progress
from tavse.common.rates import SAMPLE_RATE
from tavse.evaluation import THREAD_ENV, limit_worker_threads
from tavse.evaluation.results import METRICS

T = TypeVar("T")

SDR_FILTER_LENGTH = 512  # BSS Eval v3 default: distortion filter of 512 taps (32 ms at 16 kHz)

# What a metric raises on an item whose content it cannot score; anything else (TypeError,
# AttributeError, ...) is a bug and propagates instead of becoming a None.
ITEM_FAILURES: tuple[type[Exception], ...] = (ValueError, ArithmeticError, np.linalg.LinAlgError, pesq_pkg.PesqError)


# ---------------------------------------------------------------- input checks


def _signal(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite, non-empty 1-D float64 array, or ``ValueError`` naming ``name``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D mono audio, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(a)))} non-finite (NaN/inf) samples")
    return a


def _pair(ref: Any, deg: Any, deg_name: str = "deg", silent_deg_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checked (reference, other) arrays of equal length, neither all zeros unless allowed."""
    r, d = _signal(ref, "ref"), _signal(deg, deg_name)
    if r.shape != d.shape:
        raise ValueError(f"length mismatch: ref has {r.size} samples, {deg_name} has {d.size}")
    if not np.any(r):  # every metric here normalises by or aligns to the reference
        raise ValueError("ref is silent (all zeros); the metric is undefined")
    if not silent_deg_ok and not np.any(d):
        # PESQ's C code fails with a cryptic NaN error, (E)STOI normalises 0 by ~0 and returns
        # rounding noise that differs between processes, SDR is 0/0
        raise ValueError(f"{deg_name} is silent (all zeros); the metric is undefined")
    return r, d


def _check_rate(sr: int, metric: str) -> None:
    """The project evaluates at 16 kHz only; any other rate is a caller bug, not a resampling job."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"{metric} expects {SAMPLE_RATE} Hz audio, got sr={sr}")


# ---------------------------------------------------------------- metric wrappers


def _pesq(ref: Any, deg: Any, sr: int, mode: str) -> float:
    """ITU-T P.862 MOS-LQO from the ``pesq`` package; package errors propagate with their message."""
    _check_rate(sr, f"pesq_{mode}")
    r, d = _pair(ref, deg)
    return float(pesq_pkg.pesq(sr, r, d, mode))


def pesq_wb(ref: Any, deg: Any, sr: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (P.862.2 MOS-LQO, about 1.04 to 4.64) of ``deg`` against ``ref`` at 16 kHz.

    Raises:
        ValueError: sr is not 16 kHz, lengths differ, non-finite or silent input.
        pesq.PesqError: ``BufferTooShortError`` under 0.25 s, ``NoUtterancesError`` when its
            voice-activity detector finds no speech in ``ref``.
    """
    return _pesq(ref, deg, sr, "wb")


def pesq_nb(ref: Any, deg: Any, sr: int = SAMPLE_RATE) -> float:
    """Narrow-band PESQ (P.862.1 MOS-LQO, about 1.02 to 4.55) of ``deg`` against ``ref`` at 16 kHz.

    P.862 defines narrow-band mode for 8 and 16 kHz input and the ``pesq`` package accepts
    ``fs=16000, mode='nb'`` (its own band-limiting filters apply), so no resampling to 8 kHz.

    Raises:
        ValueError / pesq.PesqError: as :func:`pesq_wb`.
    """
    return _pesq(ref, deg, sr, "nb")


def _stoi(ref: Any, deg: Any, sr: int, extended: bool) -> float:
    """pystoi's (E)STOI; its 'too few speech frames' warning (it then returns 1e-5) becomes an error."""
    _check_rate(sr, "estoi" if extended else "stoi")
    r, d = _pair(ref, deg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(r, d, sr, extended=extended))
    for w in caught:
        if "Not enough STFT frames" in str(w.message):  # 1e-5 is a sentinel, not a score
            raise ValueError("(E)STOI undefined: too few non-silent frames for one 30-frame (~384 ms) analysis segment")
    return value


def stoi(ref: Any, deg: Any, sr: int = SAMPLE_RATE) -> float:
    """Short-time objective intelligibility (Taal et al. 2011, 0 to 1) via pystoi, at 16 kHz.

    pystoi resamples to 10 kHz internally; only 16 kHz input is accepted here because the
    project never evaluates at any other rate.

    Raises:
        ValueError: sr is not 16 kHz, lengths differ, non-finite or silent (all-zero) input,
            or too few non-silent frames for a score.
    """
    return _stoi(ref, deg, sr, extended=False)


def estoi(ref: Any, deg: Any, sr: int = SAMPLE_RATE) -> float:
    """Extended STOI (Jensen & Taal 2016) via pystoi, at 16 kHz; raises as :func:`stoi`."""
    return _stoi(ref, deg, sr, extended=True)


def si_snr(ref: Any, est: Any) -> float:
    """Scale-invariant SNR in dB of ``est`` against ``ref`` (note: reference first here).

    Delegates to :func:`tavse.losses.si_snr`, the project's single definition (zero-mean
    signals, projection onto the reference), computed in float64; its ``eps`` makes an
    all-zero ``est`` score 0 dB. Rate-independent, so there is no ``sr``;
    :func:`item_metrics` checks the rate.

    Raises:
        ValueError: lengths differ, non-finite samples or silent reference.
    """
    r, e = _pair(ref, est, "est", silent_deg_ok=True)  # the project's definition gives 0 dB for silence
    return float(losses.si_snr(torch.from_numpy(e), torch.from_numpy(r)))


def sdr(ref: Any, est: Any, filter_length: int = SDR_FILTER_LENGTH) -> float:
    """BSS Eval (v3) signal-to-distortion ratio in dB for one source, as in mir_eval / museval.

    ``est`` (zero-padded by L-1 samples) is projected by least squares onto the span of the
    reference delayed by 0..L-1 samples (an L-tap FIR "allowed distortion" filter,
    ``L = filter_length``, 512 by default); SDR = 10·log10(‖P‖² / ‖est − P‖²) with P that
    projection. Unlike plain SNR it forgives gain and short linear filtering of the
    reference. A perfect estimate gives +inf. The filter comes from the L×L Toeplitz
    normal equations solved by LU, as mir_eval does, so values match it (to ~1e-12 dB on
    broadband signals); for a reference with no energy at all in some band (e.g. pure
    synthetic harmonics, no noise floor) those equations are near-singular and every such
    implementation, mir_eval's included, is accurate only to a fraction of a dB.

    Raises:
        ValueError: lengths differ, non-finite samples, silent reference or silent estimate
            (0/0: no target and no error energy).
    """
    r, e = _pair(ref, est, "est")
    n, taps = r.size, int(filter_length)
    nfft = 1 << int(np.ceil(np.log2(n + taps - 1)))  # long enough that circular = linear correlation
    r_f = np.fft.rfft(r, nfft)
    autocorr = np.fft.irfft(r_f * np.conj(r_f), nfft)[:taps]  # <r, r delayed by k>
    xcorr = np.fft.irfft(np.fft.rfft(e, nfft) * np.conj(r_f), nfft)[:taps]  # <e, r delayed by k>
    gram = scipy.linalg.toeplitz(autocorr)
    try:
        h = np.linalg.solve(gram, xcorr)
    except np.linalg.LinAlgError:  # exactly singular Gram: least squares still gives the projection
        h = np.linalg.lstsq(gram, xcorr, rcond=None)[0]
    proj = fftconvolve(r, h)  # length n + taps - 1, same support as the padded estimate
    err = np.concatenate([e, np.zeros(taps - 1)]) - proj
    num, den = float(np.sum(proj**2)), float(np.sum(err**2))
    return float("inf") if den == 0.0 else float(10.0 * np.log10(num / den))


# ---------------------------------------------------------------- one item


class ItemMetrics(NamedTuple):
    """All METRICS of one item: ``values[m]`` is None exactly when ``failures[m]`` says why."""

    values: dict[str, float | None]
    failures: dict[str, str]


def _tensor(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def si_snr_active(ref: Any, est: Any) -> float:
    """SI-SNR in dB of ``est`` against ``ref`` on the samples where ``ref`` is speech-active only.

    :func:`tavse.losses.speech_activity` of ``ref`` picks the samples and
    :func:`tavse.losses.si_snr` (``mask=``) scores them, in float64. Attenuating the target-silent
    stretches leaves it unchanged.

    Raises:
        ValueError: lengths differ, non-finite samples or silent reference.
    """
    r, e = _pair(ref, est, "est", silent_deg_ok=True)
    rt = _tensor(r)
    return float(losses.si_snr(_tensor(e), rt, mask=losses.speech_activity(rt)))


def silence_attenuation(clean: Any, noisy: Any, est: Any) -> float:
    """dB of ``est``'s energy over ``noisy``'s on the samples where ``clean`` is target-silent.

    :func:`tavse.losses.silence_attenuation_db` with :func:`tavse.losses.speech_activity` of
    ``clean``; 0 dB for a system that passes the input through, negative for one that gates.

    Raises:
        ValueError: lengths differ, non-finite samples, silent reference, or no target-silent
            sample (the figure is undefined).
    """
    c, e = _pair(clean, est, "est", silent_deg_ok=True)
    _, y = _pair(clean, noisy, "noisy", silent_deg_ok=True)
    active = losses.speech_activity(_tensor(c))
    if bool(active.all()):
        raise ValueError("no target-silent sample: silence attenuation is undefined")
    return float(losses.silence_attenuation_db(_tensor(e), _tensor(y), active))


# Scores of the noisy input itself that item_metrics needs for its improvements and deltas:
# computed once per mixture (input_scores) and shared by every system and condition scored on it.
INPUT_METRICS = ("pesq_wb", "estoi", "si_snr", "si_snr_active")


def _attempt(values: dict[str, float | None], failures: dict[str, str], name: str, fn: Callable[[], float]) -> None:
    """``values[name] = fn()``; an ITEM_FAILURES exception becomes None plus its reason instead."""
    try:
        values[name] = fn()
    except ITEM_FAILURES as exc:  # per-item failure: record it, keep the item and the other metrics
        values[name] = None
        failures[name] = f"{type(exc).__name__}: {exc}"


def input_scores(clean: Any, noisy: Any, sr: int = SAMPLE_RATE) -> ItemMetrics:
    """The noisy input's own INPUT_METRICS against ``clean`` (the floor every delta starts from).

    Pass the result to :func:`item_metrics` (``inputs=``) for each system and condition scored
    on this mixture, so the input's PESQ and ESTOI are computed once per mixture.

    Raises:
        ValueError: sr is not 16 kHz, or the signals are not 1-D of equal length.
    """
    _check_rate(sr, "input_scores")
    if np.ndim(clean) != 1 or np.shape(clean) != np.shape(noisy):
        raise ValueError(f"clean and noisy must be 1-D of equal length, got {np.shape(clean)} and {np.shape(noisy)}")
    values: dict[str, float | None] = {}
    failures: dict[str, str] = {}
    _attempt(values, failures, "pesq_wb", lambda: pesq_wb(clean, noisy, sr))
    _attempt(values, failures, "estoi", lambda: estoi(clean, noisy, sr))
    _attempt(values, failures, "si_snr", lambda: si_snr(clean, noisy))
    _attempt(values, failures, "si_snr_active", lambda: si_snr_active(clean, noisy))
    return ItemMetrics(values, failures)


def input_row(pair: tuple[Any, Any], sr: int = SAMPLE_RATE) -> dict[str, Any]:
    """:func:`input_scores` of a ``(clean, noisy)`` pair as a flat row (picklable, for :func:`evaluate_items`)."""
    result = input_scores(*pair, sr=sr)
    return {**result.values, "failures": result.failures}


def item_metrics(
    clean: Any, noisy: Any, enhanced: Any, sr: int = SAMPLE_RATE, inputs: ItemMetrics | dict[str, Any] | None = None
) -> ItemMetrics:
    """Every metric in METRICS for one (clean, noisy, enhanced) item.

    ``si_snri`` is si_snr(clean, enhanced) − si_snr(clean, noisy); ``si_snri_active`` the same
    on the speech-active samples of ``clean`` only; ``silence_atten_db`` is
    :func:`silence_attenuation`; ``delta_pesq_wb`` / ``delta_estoi`` are the enhanced score
    minus the noisy input's. The noisy input's scores come from ``inputs`` (an
    :func:`input_scores` result or an :func:`input_row` dict of this mixture) or are computed
    here. A metric that fails on this item's content (silence, no utterance for PESQ, NaN
    output, ...) is None with the reason ``"ExceptionType: message"``; the others are still
    computed. Only :data:`ITEM_FAILURES` count as such; other exceptions are bugs and propagate.

    Raises:
        ValueError: only for caller bugs that would hit every item alike: sr is not 16 kHz,
            the three signals differ in length or are not 1-D.
    """
    _check_rate(sr, "item_metrics")
    shapes = {name: np.shape(x) for name, x in (("clean", clean), ("noisy", noisy), ("enhanced", enhanced))}
    if len(set(shapes.values())) != 1 or len(shapes["clean"]) != 1:
        raise ValueError(f"clean, noisy and enhanced must be 1-D of equal length, got {shapes}")
    if inputs is None:
        inputs = input_scores(clean, noisy, sr)
    if isinstance(inputs, ItemMetrics):
        in_values, in_failures = inputs.values, inputs.failures
    else:
        in_values, in_failures = inputs, inputs.get("failures", {})

    values: dict[str, float | None] = {}
    failures: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], float]) -> None:
        _attempt(values, failures, name, fn)

    def change(name: str, enhanced_key: str, input_key: str, label: str) -> Callable[[], float]:
        """Enhanced minus input score; either failure is carried over as the reason."""

        def fn() -> float:
            # locals, so the None checks narrow what is subtracted
            enhanced_value = values[enhanced_key]
            if enhanced_value is None:
                raise ValueError(f"enhanced {label} failed ({failures[enhanced_key]})")
            input_value = in_values.get(input_key)
            if input_value is None:
                raise ValueError(f"noisy input {label} failed ({in_failures.get(input_key, 'not computed')})")
            return enhanced_value - input_value

        return fn

    # An output identical to the input (the "noisy" reference system) takes the input's scores, so its
    # improvements and deltas are exactly 0 (recomputing them can differ in the last ulp: SIMD sums
    # depend on the arrays' memory alignment).
    same = np.array_equal(np.asarray(enhanced), np.asarray(noisy))

    def score(name: str, fn: Callable[[], float]) -> None:
        input_key = name.lstrip("_")
        if same and input_key in in_values:
            values[name] = in_values[input_key]
            if values[name] is None:
                failures[name] = in_failures.get(input_key, "the noisy input's score failed")
        else:
            attempt(name, fn)

    score("pesq_wb", lambda: pesq_wb(clean, enhanced, sr))
    attempt("pesq_nb", lambda: pesq_nb(clean, enhanced, sr))
    attempt("stoi", lambda: stoi(clean, enhanced, sr))
    score("estoi", lambda: estoi(clean, enhanced, sr))
    score("si_snr", lambda: si_snr(clean, enhanced))
    attempt("si_snri", change("si_snri", "si_snr", "si_snr", "SI-SNR"))
    attempt("sdr", lambda: sdr(clean, enhanced))
    score("_si_snr_active", lambda: si_snr_active(clean, enhanced))
    attempt("si_snri_active", change("si_snri_active", "_si_snr_active", "si_snr_active", "speech-active SI-SNR"))
    attempt("silence_atten_db", lambda: silence_attenuation(clean, noisy, enhanced))
    attempt("delta_pesq_wb", change("delta_pesq_wb", "pesq_wb", "pesq_wb", "PESQ-WB"))
    attempt("delta_estoi", change("delta_estoi", "estoi", "estoi", "ESTOI"))
    failures.pop("_si_snr_active", None)  # an intermediate: its reason lives on in si_snri_active's
    return ItemMetrics({m: values[m] for m in METRICS}, failures)


def metrics_row(item: tuple[Any, ...], sr: int = SAMPLE_RATE) -> dict[str, Any]:
    """:func:`item_metrics` of a ``(clean, noisy, enhanced)`` or ``(clean, noisy, enhanced,
    inputs)`` item as one flat, JSON-ready row (``inputs``: the mixture's :func:`input_row`).

    Module-level (so picklable) for :func:`evaluate_items`; keys are METRICS plus ``failures``.
    """
    if len(item) not in (3, 4):  # a caller bug, like a missing argument
        raise TypeError(f"metrics_row takes (clean, noisy, enhanced[, inputs]), got {len(item)} values")
    clean, noisy, enhanced, *inputs = item
    result = item_metrics(clean, noisy, enhanced, sr=sr, inputs=inputs[0] if inputs else None)
    return {**result.values, "failures": result.failures}


# ---------------------------------------------------------------- many items


@contextmanager
def _single_thread_env() -> Iterator[None]:
    """Temporarily set the thread-count variables so spawned children inherit them at startup.

    A spawned child imports numpy/torch (via the main module and this one) before any
    initializer runs, and OpenBLAS/OpenMP read these variables only then.
    """
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(dict.fromkeys(THREAD_ENV, "1"))
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A spawn-context pool whose workers run single-threaded (see :func:`_single_thread_env`)."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=limit_worker_threads
    )


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool to pass to several :func:`evaluate_items` calls, so workers start (and import
    torch, scipy, pesq) once rather than per call; None when ``workers == 1`` (run in-process).
    Shut down, pending work cancelled, on exit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        yield None
        return
    pool = _spawn_pool(workers)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def evaluate_items(
    items: Sequence[T], compute: Callable[[T], dict], workers: int, desc: str, pool: ProcessPoolExecutor | None = None
) -> list[dict]:
    """``[compute(item) for item in items]``, over ``workers`` processes, in input order.

    Results are placed by the item's position, never by completion order, so a slow or
    partly failed item cannot shift the pairing of the others. ``workers == 1`` (and no
    ``pool``) runs in this process; otherwise the items go to ``pool`` (from
    :func:`worker_pool`; ``workers`` is then ignored) or to a spawn-context pool of
    ``workers`` single-threaded processes made for this call. ``compute`` and the items
    must be picklable, ``compute`` defined at module level in an importable module. An
    exception raised by ``compute`` itself is a bug, not a per-item metric failure: this
    call's pending items are cancelled and it propagates.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list[dict | None] = [None] * len(items)
    with progress(total=len(items), desc=desc, unit="item") as bar:
        if pool is None and (workers == 1 or len(items) <= 1):
            for i, item in enumerate(items):
                results[i] = compute(item)
                bar.update()
            return results  # type: ignore[return-value]
        own = pool is None
        executor = _spawn_pool(min(workers, len(items))) if pool is None else pool  # `own`, tested so mypy narrows pool
        try:
            with _single_thread_env():  # workers are started lazily, by submit()
                position = {executor.submit(compute, item): i for i, item in enumerate(items)}
            try:
                for fut in as_completed(position):
                    results[position[fut]] = fut.result()  # re-raises a compute() bug here
                    bar.update()
            except BaseException:
                for fut in position:
                    fut.cancel()
                raise
        finally:
            if own:
                executor.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]
