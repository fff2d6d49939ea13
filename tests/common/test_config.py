"""params.yaml → one typed config; unknown, missing or ill-typed keys are errors."""

import copy
from pathlib import Path

import pytest
import yaml

from tavse.common.config import ConfigError, config_from_dict, load_config, params_hash

ROOT = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_repository_params_load():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.synth.size.val_speakers >= 3 and cfg.synth.size.test_speakers >= 3  # several speakers per split
    assert cfg.data.split_of(1) == "train" and cfg.data.split_of(120) == "val" and cfg.data.split_of(121) == "test"


def test_legacy_speaker_split():
    p = copy.deepcopy(PARAMS)
    p["data"]["speaker_split"] = "tavse_legacy"
    cfg = config_from_dict(p)
    assert cfg.data.split_of(114) == "val" and cfg.data.split_of(115) == "test" and cfg.data.split_of(143) is None


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["ingest"].update(roi_szie=48), "unknown key"),
        (lambda p: p["ingest"].pop("roi_size"), "missing key"),
        (lambda p: p["ingest"].update(roi_size="48"), "expected int"),
        (lambda p: p["ingest"].update(on_error="ignore"), "not one of"),
        (lambda p: p["synth"].update(preset="huge"), "synth.preset"),
        (lambda p: p["noise"]["splits"]["test"].append(p["noise"]["splits"]["train"][0]), "more than one split"),
        (lambda p: p.update(extra=1), "unknown key"),
        # Out of range: each message names the one key and what is allowed.
        (lambda p: p["train"].update(max_steps=0), r"train\.max_steps: 0 is out of range \(must be >= 1\)"),
        (lambda p: p["train"].update(eval_every=0), r"train\.eval_every: 0 is out of range"),
        (lambda p: p["train"].update(checkpoint_every=0), r"train\.checkpoint_every: 0 is out of range"),
        (lambda p: p["train"].update(batch_size=-8), r"train\.batch_size: -8 is out of range"),
        (lambda p: p["train"].update(lr=0.0), r"train\.lr: 0.0 is out of range \(must be > 0\)"),
        (lambda p: p["train"].update(warmup_steps=400), r"train\.warmup_steps: 400 must be below train\.max_steps"),
        (lambda p: p["train"].update(eval_every=401), r"train\.eval_every: 401 exceeds"),
        (lambda p: p["mix"].update(snrs_db=[]), r"mix\.snrs_db: must not be empty"),
        (lambda p: p["mix"]["babble"].update(prob=1.5), r"mix\.babble\.prob: 1.5 is out of range"),
        (lambda p: p["mix"]["babble"].update(talkers=[7, 3]), r"mix\.babble\.talkers: expected \[min, max\]"),
        (lambda p: p["mix"]["babble"].update(rt60_s=[0.5]), r"mix\.babble\.rt60_s: expected \[min, max\]"),
        (lambda p: p["mix"]["babble"].update(extra=1), r"unknown key\(s\) \['extra'\]"),
        (lambda p: p["train"].update(precision="fp16"), r"train\.precision"),
        (lambda p: p["evaluation"].update(snrs_db=[]), r"evaluation\.snrs_db: must not be empty"),
        (lambda p: p["validation"].update(snrs_db=[0, 99]), r"validation\.snrs_db\[1\]: 99.0 is out of range"),
        (
            lambda p: p["ingest"].update(roi_size=0),
            r"^params\.ingest\.roi_size: 0 is out of range \(must be >= 8 and <= 512\)$",
        ),
        (lambda p: p["ingest"].update(min_detection_ratio=1.5), r"ingest\.min_detection_ratio: 1.5"),
        (lambda p: p["ingest"].update(sample_rate=44100), r"ingest\.sample_rate: 44100"),
        (
            lambda p: p["variants"]["audio_rgb_thermal"].update(modality_dropout=1.0),
            r"variants\.audio_rgb_thermal\.modality_dropout: 1.0 is out of range \(must be >= 0 and < 1\)",
        ),
        (
            lambda p: p["variants"]["audio_rgb"].update(modality_dropout=0.2),
            r"variants\.audio_rgb\.modality_dropout: 0.2 needs two or more streams",
        ),
        (lambda p: p["variants"]["audio_rgb"].pop("fusion"), r"variants\.audio_rgb\.fusion: required"),
        (lambda p: p["variants"]["audio_only"].update(fusion="film"), r"variants\.audio_only\.fusion: 'film' given"),
        (
            lambda p: p["variants"]["audio_rgb"].update(fusion="sum"),
            r"variants\.audio_rgb\.fusion: 'sum' is not one of",
        ),
        (
            lambda p: p["variants"]["audio_rgb_thermal"].update(streams=["thermal", "rgb"]),
            r"variants\.audio_rgb_thermal\.streams: each of \['rgb', 'thermal'\] at most once, in that order",
        ),
        (lambda p: p["model"].update(fusion="film"), r"params\.model: unknown key\(s\) \['fusion'\]"),
        (lambda p: p["model"].update(win_length=1024), r"hop_length <= win_length <= n_fft"),
        (
            lambda p: p["model"]["sizes"]["small"].update(fusion_heads=3),
            r"model\.sizes\.small\.fusion_dim: 64 is not a multiple",
        ),
        (lambda p: p["synth"]["presets"]["tiny"].update(positions=[0]), r"synth\.presets\.tiny\.positions\[0\]: 0"),
        (lambda p: p["noise"]["splits"].update(val=[]), r"noise\.splits\.val: must list"),
        (lambda p: p["noise"].update(channels=[]), r"noise\.channels: must not be empty"),
        (lambda p: p.update(variants={}), r"variants: must declare"),
        (lambda p: p.update(seed=-1), r"params\.seed: -1 is out of range"),
        (lambda p: p["evaluation"].update(bootstrap=0), r"evaluation\.bootstrap: 0"),
    ],
)
def test_bad_params_are_rejected(edit, message):
    p = copy.deepcopy(PARAMS)
    edit(p)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(p)


def test_params_hash_is_stable_and_sensitive():
    cfg = config_from_dict(PARAMS)
    assert params_hash(cfg.ingest) == params_hash(config_from_dict(copy.deepcopy(PARAMS)).ingest)
    p = copy.deepcopy(PARAMS)
    p["ingest"]["roi_size"] += 1
    assert params_hash(config_from_dict(p).ingest) != params_hash(cfg.ingest)


def test_a_stage_reads_only_the_params_dvc_yaml_declares_for_it():
    """The view a stage gets: declared keys read as usual, anything else fails naming stage and key."""
    cfg = load_config(ROOT / "params.yaml", stage="train@audio_rgb")
    assert cfg.train.max_steps == PARAMS["train"]["max_steps"] and cfg.variants["audio_rgb"].streams == ["rgb"]
    assert cfg.ingest.roi_size == PARAMS["ingest"]["roi_size"]  # declared key by key
    assert cfg.ingest.out_dir == PARAMS["ingest"]["out_dir"]  # interpolated into the stage's deps
    with pytest.raises(ConfigError, match=r"stage train@audio_rgb reads params.yaml key 'ingest.workers'"):
        cfg.ingest.workers  # noqa: B018 (the read itself must raise)
    with pytest.raises(ConfigError, match=r"'variants.audio_only'"):
        cfg.variants["audio_only"]
    with pytest.raises(ConfigError, match=r"'evaluation'"):
        cfg.evaluation  # noqa: B018
    ingest = load_config(ROOT / "params.yaml", stage="ingest")
    assert ingest.data.split_of(121) == "test"  # a method runs against the view: its reads are checked too
    with pytest.raises(ConfigError, match=r"'data.demand_dir'"):
        ingest.data.demand_dir  # noqa: B018
