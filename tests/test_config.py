"""params.yaml → one typed config; unknown, missing or ill-typed keys are errors."""

import copy
from pathlib import Path

import pytest
import yaml

from tavse.common.config import ConfigError, config_from_dict, load_config, params_hash

ROOT = Path(__file__).resolve().parents[1]
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
