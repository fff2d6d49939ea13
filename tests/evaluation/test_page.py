"""The report page's wording (the answer paragraph from the paired tests), sample choice and figures."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from tavse.evaluation.page import ORACLE, answer_paragraph, corpus_caveat, direction, paired, roles, verdict_sentence
from tavse.evaluation.samples import (
    flac_bytes,
    mouth_strip_png,
    playback_gain,
    read_audio,
    select_samples,
    spectrogram_db,
    spectrogram_image,
)

VARIANTS = {
    "audio_only": [],
    "audio_rgb": ["rgb"],
    "audio_thermal": ["thermal"],
    "audio_rgb_thermal": ["rgb", "thermal"],
}


def wilcoxon(mean: float, low: float, high: float, p: float, effect: float) -> dict:
    return {
        "mean_difference": mean,
        "diff_ci95_low": low,
        "diff_ci95_high": high,
        "median_difference": mean * 0.9,
        "effect_size": effect,
        "p_value": p / 6,
        "p_adjusted": p,
        "significant": p < 0.05,
        "n_pairs": 60,
    }


def overall(**means: float) -> dict:
    return {k: {"mean": v, "ci95_low": v - 0.5, "ci95_high": v + 0.5, "n": 60} for k, v in means.items()}


# compare.json stores each pair once, a before b in the variants' order, difference a - b.
SIGNIFICANT_OVER_AUDIO = {
    "audio_only_vs_audio_rgb": wilcoxon(-0.42, -0.7, -0.15, 0.008, -0.48),
    "audio_only_vs_audio_thermal": wilcoxon(-0.41, -0.72, -0.10, 0.042, -0.40),
    "audio_only_vs_audio_rgb_thermal": wilcoxon(-0.48, -0.8, -0.2, 0.011, -0.46),
    "audio_rgb_vs_audio_thermal": wilcoxon(0.01, -0.2, 0.22, 0.50, 0.26),
    "audio_rgb_vs_audio_rgb_thermal": wilcoxon(-0.06, -0.3, 0.2, 1.0, -0.10),
    "audio_thermal_vs_audio_rgb_thermal": wilcoxon(-0.07, -0.3, 0.15, 0.85, -0.22),
}
MEANS = overall(audio_only=3.27, audio_rgb=3.69, audio_thermal=3.68, audio_rgb_thermal=3.75, **{ORACLE: 7.34})


def test_paired_turns_the_stored_pair_round():
    t = paired(SIGNIFICANT_OVER_AUDIO, "audio_thermal", "audio_only")
    assert t["mean_difference"] == 0.41 and t["effect_size"] == 0.40
    assert (t["diff_ci95_low"], t["diff_ci95_high"]) == (0.10, 0.72)  # negated and swapped
    assert paired(SIGNIFICANT_OVER_AUDIO, "audio_only", "audio_thermal")["mean_difference"] == -0.41
    assert paired(SIGNIFICANT_OVER_AUDIO, "audio_thermal", "nope") is None


def test_roles_are_found_by_streams_not_names():
    r = roles({"a": [], "b": ["thermal"], "c": ["thermal", "rgb"], "d": ["rgb"]})
    assert (r.audio_only, r.rgb, r.thermal, r.rgb_thermal) == ("a", "d", "b", "c")


def test_answer_when_thermal_beats_audio_but_not_rgb():
    text = answer_paragraph(SIGNIFICANT_OVER_AUDIO, MEANS, VARIANTS, None)
    assert "significantly improves noise removal over audio alone, but not measurably more than ordinary RGB" in text
    assert "audio_rgb_thermal is best with 3.75 dB [95% CI 3.25, 4.25]" in text
    assert "its lead over audio_rgb is not significant (p = 1)" in text
    # thermal - audio_only: the effect, its CI and the corrected p, significant
    assert (
        "audio_thermal − audio_only: +0.41 dB mean paired difference [95% CI +0.10, +0.72], median +0.37 dB, "
        "rank-biserial r = +0.40, Bonferroni-corrected Wilcoxon p = 0.042 over 60 paired mixtures: significant"
    ) in text
    # thermal - RGB: not significant, said so
    assert "audio_thermal − audio_rgb: −0.01 dB" in text and "p = 0.5 over 60 paired mixtures: not significant" in text
    assert "Adding thermal to RGB: audio_rgb_thermal − audio_rgb: +0.06 dB" in text
    assert (
        "the oracle ceiling is 7.34 dB" in text
        and "No variant with all its streams is worse than its noisy input" in text
    )
    assert "synthetic" not in text  # no caveat given: none printed


def test_answer_when_nothing_is_significant():
    flat = {k: {**v, "p_adjusted": 0.9, "significant": False} for k, v in SIGNIFICANT_OVER_AUDIO.items()}
    text = answer_paragraph(flat, MEANS, VARIANTS, "Caveat: synthetic.", n_flagged_full=3)
    assert text.count("not significant") >= 3 and ": significant" not in text
    assert "No measurable help: the thermal variant's difference from audio alone is not significant." in text
    assert "In 3 (metric, condition) cell(s) a variant with all its streams is worse than its noisy input" in text
    assert text.endswith("Caveat: synthetic.")


def test_verdicts_cover_every_direction():
    up, down, flat = (
        wilcoxon(1, 0.5, 1.5, 0.001, 0.6),
        wilcoxon(-1, -1.5, -0.5, 0.001, -0.6),
        wilcoxon(0.1, -0.2, 0.4, 0.7, 0.1),
    )
    assert direction(up) == 1 and direction(down) == -1 and direction(flat) == 0 and direction(None) == 0
    assert verdict_sentence(up, up).startswith(
        "Yes: thermal video of the mouth significantly improves noise removal over audio alone and over ordinary RGB"
    )
    assert "significantly less than RGB" in verdict_sentence(up, down)
    assert verdict_sentence(down, flat).startswith("No: with thermal video")
    assert "significantly worse than the RGB variant" in verdict_sentence(flat, down)
    assert "cannot be answered" in verdict_sentence(None, None)


def test_caveat_only_for_synthetic_corpora():
    assert corpus_caveat("huggingface", "zenodo") is None
    both = corpus_caveat("synthetic", "synthetic")
    assert "embedded synthetic corpus" in both and "not SpeakingFaces recordings" in both and "DEMAND" in both
    assert "DEMAND" not in corpus_caveat("synthetic", "zenodo")
    assert "noise is synthesised" in corpus_caveat("local", "synthetic")


@dataclass
class Mix:
    mix_id: str
    utt_id: str
    snr_db: float
    noise_env: str
    noise_kind: str


def test_samples_spread_over_speakers_snrs_and_noises():
    envs = [
        ("DWASHING", "stationary"),
        ("NRIVER", "stationary"),
        ("OHALLWAY", "transient"),
        ("PRESTO", "babble"),
        ("SCAFE", "babble"),
        ("TMETRO", "stationary"),
    ]
    mixtures = [
        Mix(f"s{spk}_t1_p1_c{c:04d}_{k}", f"s{spk}_t1_p1_c{c:04d}", snr, *envs[(spk + c + k) % 6])
        for spk in (121, 122, 123)
        for c in range(5)
        for k, snr in enumerate((-5, 0, 5, 10))
    ]
    chosen = select_samples(mixtures, 8)
    assert len(chosen) == 8 and len({m.mix_id for m in chosen}) == 8
    assert {m.utt_id.split("_")[0] for m in chosen} == {"s121", "s122", "s123"}
    snr_counts = [sum(m.snr_db == s for m in chosen) for s in (-5, 0, 5, 10)]
    assert snr_counts == [2, 2, 2, 2]
    assert {m.noise_kind for m in chosen} == {"stationary", "transient", "babble"}
    assert len({m.noise_env for m in chosen}) == 6
    assert [m.snr_db for m in chosen] == sorted(m.snr_db for m in chosen)
    assert select_samples(list(reversed(mixtures)), 8) == chosen  # the list's order does not matter
    assert len(select_samples(mixtures[:3], 8)) == 3


def test_spectrogram_of_silence_has_no_log_of_zero_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = spectrogram_db(np.zeros(8000))
        png = spectrogram_image({"silence": np.zeros(8000), "tone": 0.5 * np.sin(np.arange(8000) * 0.3)}, "t", (-80, 0))
    assert np.all(s == -120) and png[:4] == b"\x89PNG"
    tone = spectrogram_db(np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000))
    assert abs(tone.max()) < 1.0  # a full-scale sine reads 0 dB
    w, h = Image.open(io.BytesIO(png)).size
    assert w == 560 and h > 200


def test_audio_round_trip_and_gain():
    x = np.sin(np.arange(4000) * 0.1).astype(np.float32) * 1.5
    g = playback_gain(x)
    assert g == pytest.approx(0.99 / 1.5, rel=1e-5) and playback_gain(x / 3) == 1.0
    y = read_audio(flac_bytes(x, g))
    assert np.max(np.abs(y - x * g)) < 1e-4 and flac_bytes(x, g) == flac_bytes(x, g)


def test_mouth_strip_labels_frames_in_time():
    rgb, thermal = np.random.default_rng(0).random((40, 3, 16, 16)), np.random.default_rng(1).random((40, 1, 16, 16))
    png = mouth_strip_png(rgb, thermal, 28, "strip")
    assert png[:4] == b"\x89PNG" and png == mouth_strip_png(rgb, thermal, 28, "strip")
    with pytest.raises(ValueError, match="40 RGB frames but 39 thermal"):
        mouth_strip_png(rgb, thermal[:39], 28, "strip")


@pytest.mark.e2e  # headless Chromium
def test_the_browser_check_catches_a_broken_sound_and_an_outside_request(tmp_path):
    """The check the report page must pass can fail: a page with a good sound, a missing one and an
    image from a server."""
    from tavse.evaluation.page import data_uri
    from tests.chromium import inspect_page

    good = data_uri("audio/flac", flac_bytes(np.sin(np.arange(16000) * 0.2) * 0.3))
    page = tmp_path / "page.html"
    page.write_text(
        f'<!DOCTYPE html><html><body><p>hello</p><audio preload="metadata" src="{good}"></audio>'
        '<audio preload="metadata" src="missing.flac"></audio>'
        '<img src="http://127.0.0.1:9/x.png"></body></html>'
    )
    seen = inspect_page(page, tmp_path / "shot.png", width=400, height=300, media_timeout_ms=10000)
    assert seen["audio"][0]["readyState"] >= 1 and seen["audio"][0]["error"] is None
    assert seen["audio"][0]["duration"] == pytest.approx(1.0, abs=0.01)
    assert seen["audio"][1]["error"] is not None  # MEDIA_ERR_SRC_NOT_SUPPORTED / network
    assert seen["external"] == ["http://127.0.0.1:9/x.png"]
    assert any(u.endswith("missing.flac") for u in seen["requests"])
    assert "hello" in seen["text"]
    assert Image.open(tmp_path / "shot.png").size == (400, 300)
