"""Shared fixtures: the repository's params with the tiny preset, and a tiny synthetic corpus."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from tavse.config import Config, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(tmp: Path) -> dict:
    """params.yaml with the tiny preset and every output under ``tmp``."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(p)
    p["synth"]["preset"] = "tiny"
    p["synth"]["out_dir"] = str(tmp / "speakingfaces")
    p["data"]["speakingfaces_dir"] = str(tmp / "speakingfaces")
    p["data"]["subjects_csv"] = str(tmp / "speakingfaces" / "subjects.csv")
    p["ingest"]["out_dir"] = str(tmp / "ingest")
    p["ingest"]["report"] = str(tmp / "reports" / "ingest.json")
    return p


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Config:
    """The tiny synthetic SpeakingFaces corpus, written once per test session."""
    from tavse.synth.corpus import write_corpus

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = config_from_dict(tiny_params(tmp))
    write_corpus(cfg.synth, cfg.data, cfg.seed)
    return cfg


def with_ingest(cfg: Config, **changes) -> Config:
    """``cfg`` with some ingest fields replaced."""
    return dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, **changes))
