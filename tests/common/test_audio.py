"""tavse.common.audio: resampling lengths and rates, per-video-frame loudness, mixing at an SNR."""

from __future__ import annotations

import numpy as np
import pytest

from tavse.common.audio import frame_bounds, frame_loudness_db, mix_at_snr, resample


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


# ----------------------------------------------------------------------------- resample


@pytest.mark.parametrize(
    ("sr_in", "sr_out", "n", "expected"),
    [
        (48000, 16000, 48000, 16000),
        (16000, 48000, 1600, 4800),
        (44100, 16000, 44100, 16000),
        (44100, 16000, 1000, 363),  # ceil(1000 * 160 / 441)
        (16000, 22050, 160, 221),  # ceil(160 * 441 / 320)
        (8000, 16000, 1, 2),
    ],
)
def test_output_length_is_the_input_duration_at_the_new_rate(sr_in, sr_out, n, expected):
    y = resample(np.zeros(n, dtype=np.float32), sr_in, sr_out)
    assert y.shape == (expected,)
    assert y.dtype == np.float32


@pytest.mark.parametrize(("sr_in", "sr_out"), [(48000, 16000), (16000, 48000), (44100, 16000)])
def test_a_tone_keeps_its_frequency_and_level(sr_in, sr_out):
    x = tone(1000.0, sr_in, 1.0)
    y = resample(x, sr_in, sr_out)
    assert abs(peak_hz(y, sr_out) - 1000.0) <= 1.0
    core = slice(len(y) // 10, -len(y) // 10)  # away from the filter's edges
    assert np.sqrt(np.mean(y[core] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    x = tone(1000.0, 48000, 1.0) + tone(12000.0, 48000, 1.0)  # 12 kHz is above 16 kHz's Nyquist
    y = resample(x, 48000, 16000)
    core = y[1600:-1600]
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    freqs = np.fft.rfftfreq(len(core), 1 / 16000)
    at_1k = spectrum[np.argmin(np.abs(freqs - 1000))]
    aliased = spectrum[np.argmin(np.abs(freqs - 4000))]  # where 12 kHz would fold to
    assert aliased < at_1k * 1e-3


def test_same_rate_returns_float32_and_does_not_copy_float32_input():
    x = tone(440.0, 16000, 0.1)
    assert resample(x, 16000, 16000) is x
    y = resample(x.astype(np.float64), 16000, 16000)
    assert y.dtype == np.float32 and np.array_equal(y, x)


def test_integer_input_is_converted_not_rescaled():
    x = np.full(480, 1000, dtype=np.int16)
    y = resample(x, 48000, 16000)
    assert y.dtype == np.float32
    assert np.allclose(y[20:-20], 1000.0, rtol=1e-3)


def test_two_dimensional_input_is_resampled_along_time_per_channel():
    left, right = tone(500.0, 48000, 0.2), tone(2000.0, 48000, 0.2, amp=0.25)
    y = resample(np.stack([left, right], axis=1), 48000, 16000)
    assert y.shape == (3200, 2)
    assert np.allclose(y[:, 0], resample(left, 48000, 16000), atol=1e-6)
    assert np.allclose(y[:, 1], resample(right, 48000, 16000), atol=1e-6)


def test_resampling_is_deterministic():
    x = np.random.default_rng(0).standard_normal(9999).astype(np.float32)
    assert resample(x, 44100, 16000).tobytes() == resample(x.copy(), 44100, 16000).tobytes()


@pytest.mark.parametrize(("sr_in", "sr_out"), [(0, 16000), (16000, 0), (-16000, 16000), (16000, -8000)])
def test_a_rate_that_is_not_positive_is_refused(sr_in, sr_out):
    with pytest.raises(ValueError):
        resample(np.zeros(100, dtype=np.float32), sr_in, sr_out)


# ----------------------------------------------------------------------------- frame_bounds


def test_frame_bounds_at_28_fps_and_16_khz():
    b = frame_bounds(28, 16000, 28)
    assert b.dtype == np.int64 and b.shape == (29,)
    assert b[0] == 0 and b[-1] == 16000
    assert b[:4].tolist() == [0, 571, 1143, 1714]  # round(f * 16000 / 28)
    assert set(np.diff(b).tolist()) == {571, 572}  # frames differ by at most one sample


def test_frame_bounds_of_no_frames():
    assert frame_bounds(0, 16000, 28).tolist() == [0]


def test_frame_bounds_do_not_drift_over_a_long_video():
    b = frame_bounds(28 * 3600, 16000, 28)  # an hour
    assert b[-1] == 16000 * 3600
    assert np.all(np.abs(b - np.arange(len(b)) * 16000 / 28) <= 0.5)


# ----------------------------------------------------------------------------- frame_loudness_db


def test_loudness_of_known_levels():
    sr, fps = 16000, 25  # 640 samples per frame
    audio = np.concatenate(
        [
            np.ones(640),  # full scale: 0 dBFS
            np.full(640, 0.5),  # -6.02 dBFS
            np.full(640, -0.1),  # -20 dBFS
            tone(1000.0, sr, 640 / sr, amp=1.0),  # a full-scale sine: -3.01 dBFS
            np.zeros(640),  # silence: the floor
        ]
    ).astype(np.float32)
    db = frame_loudness_db(audio, sr, fps, 5)
    assert db.shape == (5,)
    assert db[:4] == pytest.approx([0.0, 20 * np.log10(0.5), -20.0, 10 * np.log10(0.5)], abs=0.01)
    assert db[4] == -80.0


def test_loudness_floor_is_a_parameter_and_a_lower_bound():
    quiet = np.full(640, 1e-5, dtype=np.float32)  # -100 dBFS
    assert frame_loudness_db(quiet, 16000, 25, 1)[0] == -80.0
    assert frame_loudness_db(quiet, 16000, 25, 1, floor_db=-120.0)[0] == pytest.approx(-100.0, abs=0.01)
    assert frame_loudness_db(np.ones(640, dtype=np.float32), 16000, 25, 1, floor_db=10.0)[0] == 10.0


def test_audio_shorter_than_the_video_counts_as_silence_past_its_end():
    sr, fps = 16000, 25
    audio = np.ones(640 + 320, dtype=np.float32)  # one frame and a half
    db = frame_loudness_db(audio, sr, fps, 4)
    assert db[0] == pytest.approx(0.0, abs=1e-9)
    assert db[1] == pytest.approx(10 * np.log10(0.5), abs=0.01)  # half the frame has sound
    assert db[2:].tolist() == [-80.0, -80.0]


def test_audio_longer_than_the_video_is_ignored_past_the_last_frame():
    audio = np.concatenate([np.full(1280, 0.1), np.ones(5000)]).astype(np.float32)
    assert frame_loudness_db(audio, 16000, 25, 2) == pytest.approx([-20.0, -20.0], abs=0.01)


def test_each_frame_sees_only_its_own_samples():
    sr, fps, n = 16000, 28, 10
    b = frame_bounds(n, sr, fps)
    audio = np.zeros(b[-1], dtype=np.float32)
    audio[b[6] : b[7]] = 0.25  # frame 6 alone
    db = frame_loudness_db(audio, sr, fps, n)
    assert db[6] == pytest.approx(20 * np.log10(0.25), abs=0.01)
    assert np.all(np.delete(db, 6) == -80.0)


def test_loudness_is_exact_for_float32_input_of_many_frames():
    """The running sum is float64: late frames are as exact as early ones."""
    sr, fps, n = 16000, 28, 28 * 600  # ten minutes
    b = frame_bounds(n, sr, fps)
    audio = np.full(b[-1], 0.5, dtype=np.float32)
    audio[b[-2] :] = 0.01  # the last frame, after ten minutes of loud audio
    db = frame_loudness_db(audio, sr, fps, n)
    assert db[-1] == pytest.approx(-40.0, abs=0.01)
    assert db[0] == pytest.approx(20 * np.log10(0.5), abs=0.01)


# ----------------------------------------------------------------------------- mix_at_snr


def snr_db(clean: np.ndarray, mixture: np.ndarray) -> float:
    noise = mixture.astype(np.float64) - clean
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2)))


@pytest.mark.parametrize("target", [-5.0, 0.0, 7.5, 20.0])
def test_mixture_has_the_asked_snr_and_keeps_the_clean_speech(target):
    rng = np.random.default_rng(1)
    clean = tone(300.0, 16000, 1.0, amp=0.3)
    noise = (rng.standard_normal(16000) * 0.05).astype(np.float32)
    mixture = mix_at_snr(clean, noise, target)
    assert mixture.dtype == np.float32 and mixture.shape == clean.shape
    assert snr_db(clean, mixture) == pytest.approx(target, abs=1e-3)
    residual = mixture.astype(np.float64) - clean
    gain = np.dot(residual, noise) / np.dot(noise.astype(np.float64), noise)
    assert np.allclose(residual, gain * noise, atol=1e-6)  # only the noise was scaled


def test_mixture_does_not_depend_on_the_noise_level():
    clean = tone(300.0, 16000, 0.5, amp=0.3)
    noise = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    assert np.allclose(mix_at_snr(clean, noise, 3.0), mix_at_snr(clean, noise * 100, 3.0), atol=1e-6)


def test_inputs_are_not_modified():
    clean = tone(300.0, 16000, 0.1)
    noise = np.random.default_rng(3).standard_normal(1600).astype(np.float32)
    before = clean.copy(), noise.copy()
    mix_at_snr(clean, noise, 0.0)
    assert np.array_equal(clean, before[0]) and np.array_equal(noise, before[1])


def test_silent_clean_gets_no_noise():
    """No level to set an SNR against: g is 0 (tavse.data.mixtures.mix_signals adds noise at a fixed level itself)."""
    noise = np.ones(100, dtype=np.float32)
    assert np.array_equal(mix_at_snr(np.zeros(100, dtype=np.float32), noise, 0.0), np.zeros(100))


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"differ in shape"):
        mix_at_snr(np.zeros(100, dtype=np.float32), np.ones(99, dtype=np.float32), 0.0)
    with pytest.raises(ValueError, match=r"differ in shape"):
        mix_at_snr(np.zeros((100, 1), dtype=np.float32), np.ones(100, dtype=np.float32), 0.0)


def test_silent_noise_is_refused():
    with pytest.raises(ValueError, match="noise is silent"):
        mix_at_snr(tone(300.0, 16000, 0.1), np.zeros(1600, dtype=np.float32), 0.0)
