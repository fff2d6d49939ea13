"""Metric wrappers against independent references, their input checks, and the parallel runner."""

from __future__ import annotations

import warnings

import fast_bss_eval
import numpy as np
import pytest
import torch

from tavse.evaluation import metrics as M

SR = 16000


def speech_like(seconds: float = 3.0, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """Harmonic voiced tones with a gliding pitch, a 4 Hz syllable envelope and a low noise floor.

    PESQ only scores signals in which its voice-activity detector finds utterances, so plain
    noise or a steady tone will not do.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 + 0.15 * f0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return 0.1 * voiced * syllables + 1e-4 * rng.standard_normal(t.size)


def noisy_pair(n: int, scale: float, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = scale * rng.standard_normal(n)
    return ref, ref + noise * scale * rng.standard_normal(n)


@pytest.mark.parametrize("n", [800, 4000, 48000])
@pytest.mark.parametrize("scale", [0.05, 1.0, 30.0])
@pytest.mark.parametrize("noise", [0.1, 1.0, 3.0])
def test_si_snr_matches_fast_bss_eval(n, scale, noise):
    ref, est = noisy_pair(n, scale, noise, seed=n + int(scale * 100) + int(noise * 10))
    est = 0.7 * est + 0.2 * scale  # a gain and an offset: SI-SNR is invariant to both
    expected = float(fast_bss_eval.si_sdr(ref[None], est[None], zero_mean=True)[0])
    assert M.si_snr(ref, est) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("n", [800, 4000, 48000])
@pytest.mark.parametrize("scale", [0.05, 1.0, 30.0])
@pytest.mark.parametrize("noise", [0.1, 1.0, 3.0])
def test_sdr_matches_mir_eval(n, scale, noise):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval.separation announces its own deprecation
        import mir_eval.separation
    ref, est = noisy_pair(n, scale, noise, seed=n + int(scale * 100) + int(noise * 10))
    est = np.convolve(est, [0.6, 0.3, -0.1])[:n]  # a short filter: what BSS Eval's SDR forgives
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = float(mir_eval.separation.bss_eval_sources(ref[None], est[None])[0][0])
    assert M.sdr(ref, est) == pytest.approx(expected, abs=1e-4)


def test_sdr_is_not_plain_snr():
    """A delayed, scaled copy is near-perfect for BSS Eval SDR but poor as a plain SNR."""
    ref, _ = noisy_pair(16000, 1.0, 0.0, seed=3)
    est = 0.5 * np.concatenate([np.zeros(5), ref[:-5]])  # only the 5 cut-off samples are "error"
    plain_snr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))
    assert M.sdr(ref, est) > 30 and plain_snr < 0


def test_identical_speech_gives_maxima():
    x = speech_like()
    assert M.pesq_wb(x, x, SR) == pytest.approx(4.644, abs=0.01)
    assert M.pesq_nb(x, x, SR) == pytest.approx(4.549, abs=0.01)
    assert M.stoi(x, x, SR) == pytest.approx(1.0, abs=1e-6)
    assert M.estoi(x, x, SR) == pytest.approx(1.0, abs=1e-6)
    assert M.si_snr(x, x) > 80  # not inf: the project's eps caps it
    assert M.sdr(x, x) > 100


def test_degradation_lowers_scores():
    x = speech_like()
    y = x + 0.02 * np.random.default_rng(1).standard_normal(x.size)
    assert M.pesq_wb(x, y) < 4.0 and M.pesq_nb(x, y) < 4.0
    assert M.stoi(x, y) < 0.99 and M.estoi(x, y) < 0.99


RATED = [M.pesq_wb, M.pesq_nb, M.stoi, M.estoi]
ALL = RATED + [M.si_snr, M.sdr]


def call(fn, ref, deg, sr=SR):
    return fn(ref, deg, sr) if fn in RATED else fn(ref, deg)


@pytest.mark.parametrize("fn", RATED, ids=lambda f: f.__name__)
@pytest.mark.parametrize("sr", [8000, 44100])
def test_wrong_rate_is_rejected(fn, sr):
    x = speech_like(seconds=1.0)
    with pytest.raises(ValueError, match="16000 Hz"):
        fn(x, x, sr)


def test_item_metrics_rejects_wrong_rate():
    x = speech_like(seconds=1.0)
    with pytest.raises(ValueError, match="16000 Hz"):
        M.item_metrics(x, x, x, sr=8000)


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_length_mismatch_is_rejected(fn):
    x = speech_like(seconds=1.0)
    with pytest.raises(ValueError, match="length mismatch"):
        call(fn, x, x[:-1])


def test_item_metrics_rejects_length_mismatch():
    x = speech_like(seconds=1.0)
    with pytest.raises(ValueError, match="equal length"):
        M.item_metrics(x, x, x[:-160])


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("which", ["ref", "deg"])
def test_non_finite_is_rejected(fn, bad, which):
    x = speech_like(seconds=1.0)
    y = x.copy()
    y[100] = bad
    with pytest.raises(ValueError, match="non-finite"):
        call(fn, y, x) if which == "ref" else call(fn, x, y)


def test_item_metrics_values_and_improvement():
    clean = speech_like()
    rng = np.random.default_rng(2)
    noisy = clean + 0.05 * rng.standard_normal(clean.size)
    enhanced = clean + 0.01 * rng.standard_normal(clean.size)
    values, failures = M.item_metrics(clean, noisy, enhanced)
    assert list(values) == list(M.METRICS) and failures == {}
    assert values["si_snr"] == M.si_snr(clean, enhanced)
    assert values["si_snri"] == pytest.approx(M.si_snr(clean, enhanced) - M.si_snr(clean, noisy), abs=1e-12)
    assert values["si_snri"] > 0
    assert values["pesq_wb"] == M.pesq_wb(clean, enhanced) and values["sdr"] == M.sdr(clean, enhanced)


SILENT_OUTPUT_FAILS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "sdr", "delta_pesq_wb", "delta_estoi")


def test_item_metrics_records_failures_and_keeps_the_rest():
    """An all-zero enhanced output: the metrics undefined for silence are None with a reason."""
    clean = speech_like()
    values, failures = M.item_metrics(clean, clean + 0.01, np.zeros_like(clean))
    assert set(failures) == set(SILENT_OUTPUT_FAILS) == {m for m, v in values.items() if v is None}
    assert all("is silent" in reason for reason in failures.values())
    assert values["si_snr"] == 0.0  # the project's SI-SNR scores silence as 0 dB
    assert values["si_snri"] == pytest.approx(-M.si_snr(clean, clean + 0.01))


def test_item_metrics_silent_reference_fails_every_metric_without_raising():
    x = speech_like()
    values, failures = M.item_metrics(np.zeros_like(x), x, x)
    assert all(v is None for v in values.values()) and set(failures) == set(M.METRICS)


def test_too_short_item_records_the_package_errors():
    """0.1 s: PESQ's own BufferTooShortError and pystoi's too-few-frames case become reasons."""
    ref, est = noisy_pair(1600, 1.0, 0.1, seed=5)
    values, failures = M.item_metrics(ref, ref + 0.3, est)
    assert failures["pesq_wb"].startswith("BufferTooShortError") and values["pesq_wb"] is None
    assert "too few non-silent frames" in failures["stoi"] and values["stoi"] is None
    assert values["si_snr"] is not None and values["sdr"] is not None


def gated_mixture(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, noisy, gated): speech with a silent second in the middle, plus white noise at about
    5 dB SNR; ``gated`` is the noisy mixture with its target-silent samples set to zero (a perfect
    voice-activity gate that removes nothing from the speech)."""
    clean = speech_like(4.0, seed=seed)
    clean[int(1.5 * SR) : int(2.5 * SR)] = 1e-5 * np.random.default_rng(seed).standard_normal(SR)
    noisy = clean + 0.03 * np.random.default_rng(seed + 1).standard_normal(clean.size)
    active = M.losses.speech_activity(torch.from_numpy(clean)).numpy()
    return clean, noisy, np.where(active, noisy, 0.0)


def test_gating_silence_raises_si_snri_but_not_the_speech_active_figure():
    clean, noisy, gated = gated_mixture()
    active = M.losses.speech_activity(torch.from_numpy(clean)).numpy()
    assert 0.2 < 1 - active.mean() < 0.8  # a real share of the item is target-silent
    values, failures = M.item_metrics(clean, noisy, gated)
    assert failures == {}
    assert values["si_snri"] > 1.0  # whole-utterance SI-SNRi rewards the gate
    assert values["si_snri_active"] == pytest.approx(0.0, abs=1e-9)  # inside speech nothing changed
    assert values["silence_atten_db"] < -60  # the gate zeroed the silent stretches
    assert values["delta_estoi"] == pytest.approx(values["estoi"] - M.estoi(clean, noisy), abs=1e-12)
    assert values["delta_pesq_wb"] == pytest.approx(values["pesq_wb"] - M.pesq_wb(clean, noisy), abs=1e-12)


def test_halving_the_silent_stretches_attenuates_them_by_6_db():
    clean, noisy, _ = gated_mixture()
    active = M.losses.speech_activity(torch.from_numpy(clean)).numpy()
    values, _ = M.item_metrics(clean, noisy, np.where(active, noisy, 0.5 * noisy))
    assert values["silence_atten_db"] == pytest.approx(20 * np.log10(0.5), abs=1e-6)
    assert values["si_snri_active"] == pytest.approx(0.0, abs=1e-9)


def test_a_system_equal_to_its_input_changes_nothing():
    clean, noisy, _ = gated_mixture()
    values, failures = M.item_metrics(clean, noisy, noisy.copy())
    assert failures == {}
    for m in ("si_snri", "si_snri_active", "silence_atten_db", "delta_pesq_wb", "delta_estoi"):
        assert values[m] == 0.0, m


def test_speech_that_is_cleaned_inside_speech_improves_the_speech_active_figure():
    clean, noisy, _ = gated_mixture()
    rng = np.random.default_rng(9)
    enhanced = clean + 0.003 * rng.standard_normal(clean.size)  # noise removed everywhere, speech intact
    values, _ = M.item_metrics(clean, noisy, enhanced)
    assert values["si_snri_active"] > 10 and values["delta_estoi"] > 0 and values["delta_pesq_wb"] > 0
    assert values["silence_atten_db"] < -15


def test_item_metrics_reuses_the_input_scores():
    """Given the mixture's input scores or not, the same row (ESTOI to rounding: pystoi's own sums
    vary in the last ulp from call to call)."""
    clean, noisy, gated = gated_mixture()
    inputs = M.input_scores(clean, noisy)
    assert set(inputs.values) == set(M.INPUT_METRICS) and inputs.failures == {}
    assert inputs.values["pesq_wb"] == M.pesq_wb(clean, noisy)
    assert inputs.values["estoi"] == pytest.approx(M.estoi(clean, noisy), rel=1e-12)
    assert inputs.values["si_snr"] == M.si_snr(clean, noisy)
    own = M.metrics_row((clean, noisy, gated))
    with_inputs = M.item_metrics(clean, noisy, gated, inputs=inputs)
    assert_rows_equal([{**with_inputs.values, "failures": with_inputs.failures}], [own])
    assert_rows_equal([M.metrics_row((clean, noisy, gated, M.input_row((clean, noisy))))], [own])


def test_a_failed_input_score_fails_only_its_delta():
    """A silent noisy input: its PESQ and ESTOI are undefined, so are the deltas; the rest stands."""
    clean, _, _ = gated_mixture()
    enhanced = clean + 0.003 * np.random.default_rng(4).standard_normal(clean.size)
    values, failures = M.item_metrics(clean, np.zeros_like(clean), enhanced)
    assert set(failures) == {"delta_pesq_wb", "delta_estoi"}
    assert failures["delta_pesq_wb"].startswith("ValueError: noisy input PESQ-WB failed (ValueError: deg is silent")
    assert values["pesq_wb"] is not None and values["si_snri_active"] is not None


def test_silence_attenuation_needs_a_silent_sample():
    """Stationary noise as the 'target': every frame is active, no silent stretch to measure."""
    rng = np.random.default_rng(5)
    clean = 0.1 * rng.standard_normal(SR)
    values, failures = M.item_metrics(clean, clean + 0.05 * rng.standard_normal(SR), clean)
    assert values["silence_atten_db"] is None and "no target-silent sample" in failures["silence_atten_db"]
    assert set(failures) == {"silence_atten_db"}  # the other metrics are still there


def make_items() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Five distinct items of varying length; item 2's enhanced output is all zeros (PESQ fails)."""
    rng = np.random.default_rng(7)
    items = []
    for i, (seconds, f0) in enumerate([(4.0, 110), (1.5, 140), (2.0, 180), (1.0, 220), (2.5, 95)]):
        clean = speech_like(seconds, f0, seed=i)
        noisy = clean + 0.03 * (i + 1) * rng.standard_normal(clean.size)
        enhanced = np.zeros_like(clean) if i == 2 else clean + 0.01 * (i + 1) * rng.standard_normal(clean.size)
        items.append((clean, noisy, enhanced))
    return items


def assert_rows_equal(got: list[dict], want: list[dict]) -> None:
    """Same failures and Nones exactly; floats to 1e-9, as this process's BLAS may run multi-
    threaded and sum in another order than the single-threaded workers (items differ by far more)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["failures"] == w["failures"]
        for m in M.METRICS:
            assert (g[m] is None) == (w[m] is None)
            if w[m] is not None:
                assert g[m] == pytest.approx(w[m], rel=1e-9, abs=1e-9)


def test_evaluate_items_parallel_keeps_order_and_failures():
    items = make_items()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # match the single-threaded workers
    try:
        serial = M.evaluate_items(items, M.metrics_row, workers=1, desc="serial")
    finally:
        torch.set_num_threads(threads)
    with M.worker_pool(2) as pool:  # one pool for two calls, as an evaluation over chunks would use it
        parallel = M.evaluate_items(items[:3], M.metrics_row, workers=2, desc="parallel", pool=pool) + M.evaluate_items(
            items[3:], M.metrics_row, workers=2, desc="parallel", pool=pool
        )

    assert_rows_equal(parallel, serial)
    assert_rows_equal(parallel, [M.metrics_row(item) for item in items])  # position i is item i
    failed = parallel[2]
    assert set(failed["failures"]) == set(SILENT_OUTPUT_FAILS)
    assert all(failed[m] is None for m in SILENT_OUTPUT_FAILS) and "silent" in failed["failures"]["pesq_wb"]
    assert failed["si_snr"] is not None and failed["si_snri"] is not None
    for i, row in enumerate(parallel):
        if i != 2:
            assert row["failures"] == {} and all(row[m] is not None for m in M.METRICS)
    # distinct items give distinct scores, so equality above really checks the pairing
    assert len({round(row["si_snri"], 6) for row in parallel}) == len(items)


def test_evaluate_items_propagates_compute_bugs():
    broken = [(np.zeros(10),)]  # item_metrics(*item) lacks two arguments: a TypeError, not a metric failure
    with pytest.raises(TypeError):
        M.evaluate_items(broken, M.metrics_row, workers=1, desc="bug")
    with pytest.raises(TypeError):  # len(int) fails in the workers; a builtin keeps their start-up cheap
        M.evaluate_items([1, 2, 3], len, workers=2, desc="bug")


def test_evaluate_items_order_without_a_pool():
    words = ["abcdef", "", "abc", "a" * 50, "ab"]
    assert M.evaluate_items(words, len, workers=1, desc="serial") == [6, 0, 3, 50, 2]
    assert M.evaluate_items(words, len, workers=2, desc="own pool") == [6, 0, 3, 50, 2]


def test_evaluate_items_rejects_no_workers():
    with pytest.raises(ValueError):
        M.evaluate_items([], M.metrics_row, workers=0, desc="none")
    with pytest.raises(ValueError), M.worker_pool(0):
        pass
