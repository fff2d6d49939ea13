"""Synthetic DEMAND-layout noise: reproducible bytes, real layout, distinct and plausible environments,
each of its noise kind, and babble whose talkers are strangers to the target speakers."""

from __future__ import annotations

import hashlib
import io
import itertools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from scipy import signal

from tavse.corpus.noise_kinds import KINDS, NOISE_KINDS
from tavse.synth import noise as noise_module
from tavse.synth import speech
from tavse.synth.noise import (
    BABBLE_PHRASES,
    BABBLE_VARIANTS,
    DEMAND_ENVIRONMENTS,
    NOISE_ENVIRONMENTS,
    PEAK_DBFS,
    babble_voice,
    demand_sample_rate,
    synth_noise,
    write_demand_corpus,
)

REPO = Path(__file__).resolve().parents[2]
BABBLE = tuple(e for e in NOISE_ENVIRONMENTS if NOISE_KINDS[e] == "babble")
SMALL_ENVS = ["TCAR", "SPSQUARE", "SCAFE"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_demand_environment_is_synthesised_and_has_a_kind() -> None:
    assert len(DEMAND_ENVIRONMENTS) == 18
    assert NOISE_ENVIRONMENTS == tuple(sorted(DEMAND_ENVIRONMENTS))
    assert set(NOISE_KINDS) == set(DEMAND_ENVIRONMENTS) and set(NOISE_KINDS.values()) == set(KINDS)
    assert set(BABBLE) == {"OMEETING", "PCAFETER", "PRESTO", "PSTATION", "SCAFE", "SPSQUARE"}
    assert demand_sample_rate("SCAFE") == 48000 and demand_sample_rate("TCAR") == 16000
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert sorted(params["synth_noise"]["environments"]) == sorted(DEMAND_ENVIRONMENTS)


def test_default_noise_splits_hold_every_kind_and_category() -> None:
    splits = yaml.safe_load((REPO / "params.yaml").read_text())["noise"]["splits"]
    assert sorted(e for envs in splits.values() for e in envs) == sorted(DEMAND_ENVIRONMENTS)
    for split, envs in splits.items():
        assert {NOISE_KINDS[e] for e in envs} == set(KINDS), split
        assert sorted(e[0] for e in envs) == list("DNOPST"), split  # one of each DEMAND category


def test_write_demand_corpus_is_byte_identical(tmp_path: Path) -> None:
    a = write_demand_corpus(tmp_path / "a", SMALL_ENVS, duration_s=1.0, n_channels=2, seed=7)
    b = write_demand_corpus(tmp_path / "b", SMALL_ENVS, duration_s=1.0, n_channels=2, seed=7)
    assert [p.name for p in a] == [p.name for p in b] == ["TCAR_16k.zip", "SPSQUARE_16k.zip", "SCAFE_48k.zip"]
    assert [_sha(p) for p in a] == [_sha(p) for p in b]
    # Each environment is seeded from (seed, name): the others in the list do not matter...
    (alone,) = write_demand_corpus(tmp_path / "c", ["SCAFE"], duration_s=1.0, n_channels=2, seed=7)
    assert _sha(alone) == _sha(a[2])
    # ...but the corpus seed does.
    (other,) = write_demand_corpus(tmp_path / "d", ["TCAR"], duration_s=1.0, n_channels=2, seed=8)
    assert _sha(other) != _sha(a[0])
    assert not list(tmp_path.glob("*/.*"))  # no temp files left behind


def test_corpus_bytes_match_a_separate_process(tmp_path: Path) -> None:
    # SCAFE includes espeak babble, whose RNG used to be clock-seeded per process.
    (path,) = write_demand_corpus(tmp_path / "here", ["SCAFE"], duration_s=1.0, n_channels=2, seed=3)
    code = (
        "import hashlib, sys; from tavse.synth.noise import write_demand_corpus; "
        "(p,) = write_demand_corpus(sys.argv[1], ['SCAFE'], duration_s=1.0, n_channels=2, seed=3); "
        "print(hashlib.sha256(p.read_bytes()).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "there")], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == _sha(path)


def test_zip_layout_matches_demand(tmp_path: Path) -> None:
    paths = write_demand_corpus(tmp_path, SMALL_ENVS, duration_s=1.0, n_channels=4, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SCAFE_48k.zip", "SPSQUARE_16k.zip", "TCAR_16k.zip"]
    for path in paths:
        env, khz = path.stem.split("_")
        rate = int(khz[:-1]) * 1000
        with zipfile.ZipFile(path) as archive:
            assert archive.namelist() == [f"{env}/ch{c:02d}.wav" for c in range(1, 5)]
            for name in archive.namelist():
                info = sf.info(io.BytesIO(archive.read(name)))
                assert (info.samplerate, info.channels, info.frames, info.subtype) == (rate, 1, rate, "PCM_16")


def test_synth_noise_channels_are_near_copies_at_minus_3_dbfs() -> None:
    x = synth_noise("DKITCHEN", 2.0, 16000, 5, seed=1)
    assert x.shape == (5, 32000) and x.dtype == np.float32
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(PEAK_DBFS, abs=0.01)
    max_lag = 8  # 0.5 ms at 16 kHz
    ref = x[0, max_lag:-max_lag].astype(np.float64)
    for ch in range(1, 5):
        other = x[ch].astype(np.float64)
        best = 0.0
        for lag in range(-max_lag, max_lag + 1):
            seg = other[max_lag + lag : max_lag + lag + ref.size]
            best = max(best, float(np.dot(ref, seg) / np.sqrt(np.dot(ref, ref) * np.dot(seg, seg))))
        assert best > 0.98, (ch, best)  # a delayed copy...
        assert not np.array_equal(x[0], x[ch])  # ...but not an identical one


def test_environments_differ_in_spectrum() -> None:
    spectra = {}
    for env in NOISE_ENVIRONMENTS:
        x = synth_noise(env, 4.0, 16000, 1, seed=0)[0].astype(np.float64)
        assert np.all(np.isfinite(x))
        f, p = signal.welch(x, 16000, nperseg=512)
        band = (f >= 50) & (f <= 7000)
        level = 10 * np.log10(p[band])
        spectra[env] = level - level.mean()
    for a, b in itertools.combinations(spectra, 2):
        distance = float(np.mean(np.abs(spectra[a] - spectra[b])))
        assert distance > 1.5, (a, b, distance)


def _speech_measures(x: np.ndarray, sr: int) -> tuple[float, float]:
    """(share of power in 100-4000 Hz, share of envelope modulation at syllable rates 2-8 Hz)."""
    f, p = signal.welch(x, sr, nperseg=1024)
    band_share = p[(f >= 100) & (f <= 4000)].sum() / p.sum()
    voiced = signal.sosfilt(signal.butter(4, (300, 3000), "bandpass", fs=sr, output="sos"), x)
    hop = sr // 100
    env = np.sqrt(np.mean(voiced[: voiced.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    fm, pm = signal.welch(env / env.mean() - 1, 100, nperseg=256)
    syllabic = pm[(fm >= 2) & (fm <= 8)].sum() / pm[(fm > 0.5) & (fm <= 50)].sum()
    return float(band_share), float(syllabic)


def _level_spread_db(x: np.ndarray, sr: int) -> float:
    """How far loud moments stand out: 95th minus 50th percentile of 20 ms frame levels, in dB."""
    hop = sr // 50
    frames = x[: x.size // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return float(np.percentile(level, 95) - np.percentile(level, 50))


def test_each_environment_sounds_like_its_kind() -> None:
    for env in NOISE_ENVIRONMENTS:
        x = synth_noise(env, 8.0, 16000, 1, seed=0)[0].astype(np.float64)
        band, syllabic = _speech_measures(x, 16000)
        spread = _level_spread_db(x, 16000)
        kind = NOISE_KINDS[env]
        if kind == "babble":  # speech band and syllabic rhythm
            assert band > 0.8 and syllabic > 0.3, (env, band, syllabic)
        elif kind == "stationary":  # a steady floor: nothing stands far out
            assert spread < 8.5, (env, spread)
        else:  # transient: short events well above the floor
            assert spread > 12, (env, spread)
    for env in ("OOFFICE", "STRAFFIC", "DWASHING"):  # steady noise has no syllabic rhythm
        _, syllabic = _speech_measures(synth_noise(env, 8.0, 16000, 1, seed=0)[0].astype(np.float64), 16000)
        assert syllabic < 0.15, (env, syllabic)


# ---------------------------------------------------------------- babble talkers are strangers


def _words(text: str) -> str:
    return " " + " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split()) + " "


def test_babble_texts_are_not_target_commands() -> None:
    commands = {_words(c) for c in speech.COMMANDS}
    assert len(set(BABBLE_PHRASES)) == len(BABBLE_PHRASES) >= 30
    for phrase in BABBLE_PHRASES:
        sentences = [_words(x) for x in phrase.replace("?", ".").replace("!", ".").split(".") if x.strip()]
        assert _words(phrase) not in commands and not set(sentences) & commands, phrase
        assert not [c for c in commands if c in _words(phrase)], phrase  # no command inside a phrase either


def _target_voice_names() -> set[str]:
    """Every name voice_for_speaker can produce: language x (male or female) variant."""
    return {f"{lang}+{v}" for lang in speech.LANGUAGES for v in (*speech.MALE_VARIANTS, *speech.FEMALE_VARIANTS)}


def test_babble_voices_are_not_target_voices() -> None:
    targets = _target_voice_names()
    drawn = {speech.voice_for_speaker(spk, seed).name for spk in range(1, 143) for seed in (0, 1, 7, 1234)}
    assert drawn <= targets  # the enumeration above really covers voice_for_speaker
    assert not set(BABBLE_VARIANTS) & (set(speech.MALE_VARIANTS) | set(speech.FEMALE_VARIANTS))
    babble = {f"{lang}+{v}" for lang in speech.LANGUAGES for v in BABBLE_VARIANTS}
    assert not babble & targets
    rng = np.random.default_rng(0)
    assert {babble_voice(rng).name for _ in range(500)} <= babble


def test_babble_variants_exist_and_change_the_voice() -> None:
    # espeak-ng silently ignores an unknown variant, so check each is in the bundled data and audible.
    import espeakng_loader

    variants_dir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    text = "we should try that new bakery"
    plain, _ = speech.synthesize(text, speech.Voice("en-us"))
    outputs = {plain.tobytes()}
    for variant in BABBLE_VARIANTS:
        spec = (variants_dir / variant).read_text(errors="replace")
        assert not [line for line in spec.splitlines() if line.split()[:1] == ["klatt"]], variant  # formant synth
        audio, rate = speech.synthesize(text, speech.Voice(f"en-us+{variant}"))
        assert rate == speech.ESPEAK_SAMPLE_RATE and audio.size > rate // 2
        assert audio.tobytes() not in outputs, variant  # neither the plain voice nor another variant
        outputs.add(audio.tobytes())


def test_every_talker_in_the_noise_is_a_stranger(monkeypatch) -> None:
    calls: list[tuple[str, str]] = []
    real = noise_module.synthesize

    def spy(text, voice):
        calls.append((text, voice.name))
        return real(text, voice)

    monkeypatch.setattr(noise_module, "synthesize", spy)
    talking = set()
    for env in NOISE_ENVIRONMENTS:
        before = len(calls)
        synth_noise(env, 1.0, 16000, 1, seed=5)
        if len(calls) > before:
            talking.add(env)
    assert set(BABBLE) | {"DLIVING", "OHALLWAY", "TBUS", "TMETRO"} == talking
    targets = _target_voice_names()
    for text, name in calls:
        assert text in BABBLE_PHRASES and text not in speech.COMMANDS, text
        assert name not in targets and name.split("+")[1] in BABBLE_VARIANTS, name


def test_scafe_uses_the_48k_band() -> None:
    x = synth_noise("SCAFE", 3.0, 48000, 1, seed=0)[0].astype(np.float64)
    f, p = signal.welch(x, 48000, nperseg=2048)
    # Real content above the 8 kHz Nyquist of a 16 kHz file (pink air noise, clinks).
    assert p[(f > 8500) & (f < 20000)].sum() / p.sum() > 5e-4


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DNOWHERE"):
        synth_noise("DNOWHERE", 1.0, 16000, 1, 0)
    with pytest.raises(ValueError, match="duration_s"):
        synth_noise("TCAR", 0.0, 16000, 1, 0)
    with pytest.raises(ValueError, match="twice"):
        write_demand_corpus(tmp_path, ["TCAR", "TCAR"], 1.0, 1, 0)
