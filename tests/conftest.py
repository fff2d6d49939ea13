"""Shared fixtures: the repository's params with the tiny preset, and tiny real data built once."""

from __future__ import annotations

import copy
import dataclasses
import signal
from pathlib import Path

import pytest
import yaml

from tavse.common.config import Config, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: Ctrl-C's default action in it, whatever
    this process inherited (a shell without job control starts background commands with SIGINT
    ignored, and an ignored signal stays ignored across exec, so the test would wait forever)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_params(tmp: Path) -> dict:
    """params.yaml with the tiny preset, a short training recipe, and every path under ``tmp``."""
    p = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["synth"]["preset"] = "tiny"
    p["synth"]["out_dir"] = str(tmp / "speakingfaces")
    p["synth_noise"].update(out_dir=str(tmp / "demand"), duration_s=8.0, channels=1)
    p["data"].update(
        speakingfaces_dir=str(tmp / "speakingfaces"),
        subjects_csv=str(tmp / "speakingfaces" / "subjects.csv"),
        demand_dir=str(tmp / "demand"),
    )
    p["ingest"].update(out_dir=str(tmp / "ingest"), report=str(tmp / "reports" / "ingest.json"))
    p["noise"].update(out_dir=str(tmp / "noise"), report=str(tmp / "reports" / "noise.json"))
    p["validation"].update(out=str(tmp / "mixtures" / "val.csv"), segments_per_utterance=2)
    p["evaluation"].update(test_mixtures=str(tmp / "mixtures" / "test.csv"), out_dir=str(tmp / "results"), samples=1)
    p["train"].update(
        segment_frames=14,
        batch_size=2,
        grad_accum=1,
        max_steps=8,
        warmup_steps=2,
        eval_every=4,
        patience=10,
        checkpoint_every=2,
        num_workers=0,
        out_dir=str(tmp / "models"),
        dvclive_dir=str(tmp / "dvclive"),
    )
    return p


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Config:
    """The tiny synthetic SpeakingFaces and DEMAND corpora, written once per test session."""
    from tavse.corpus.manifest import write_synthetic_manifest
    from tavse.synth.corpus import write_corpus
    from tavse.synth.noise import write_demand_corpus

    cfg = config_from_dict(tiny_params(tmp_path_factory.mktemp("tiny")))
    write_corpus(cfg.synth, cfg.data, cfg.seed)
    write_synthetic_manifest(
        cfg.synth.out_dir, "speakingfaces", "synth_corpus", {"seed": cfg.seed, "preset": cfg.synth.preset}
    )
    sn = cfg.synth_noise
    write_demand_corpus(sn.out_dir, sn.environments, sn.duration_s, sn.channels, cfg.seed)
    write_synthetic_manifest(sn.out_dir, "demand", "synth_noise", {"seed": cfg.seed})
    return cfg


@pytest.fixture(scope="session")
def tiny_data(tiny_corpus, tmp_path_factory) -> Config:
    """``tiny_corpus`` run through ingest (2 workers), noise and the validation mixture list."""
    from tavse.pipeline import val_mixtures
    from tavse.pipeline.ingest import run_ingest
    from tavse.pipeline.noise import prepare_noise

    cfg = tiny_corpus
    run_ingest(cfg.ingest, cfg.data, work_dir=tmp_path_factory.mktemp("scratch"))
    prepare_noise(cfg.data.demand_dir, cfg.noise.out_dir, cfg.noise.splits, cfg.noise.channels)
    val_mixtures.run(cfg)
    return cfg


def with_ingest(cfg: Config, **changes) -> Config:
    """``cfg`` with some ingest fields replaced."""
    return dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, **changes))


TRAINED_VARIANT = "audio_rgb_thermal"


def run_training(cfg: Config, workdir: Path, variant: str = TRAINED_VARIANT, **train) -> Path:
    """A run folder with its own params.yaml (shared data, private outputs and scratch)."""
    import yaml as _yaml

    workdir.mkdir(parents=True, exist_ok=True)
    p = dataclasses.asdict(cfg)
    p["train"].update(out_dir=str(workdir / "models"), dvclive_dir=str(workdir / "dvclive"), **train)
    (workdir / "params.yaml").write_text(_yaml.safe_dump(p))
    return workdir


@pytest.fixture(scope="session")
def tiny_trained(tiny_data, tmp_path_factory) -> Path:
    """A run folder where ``stages.train`` trained TRAINED_VARIANT for 12 steps without interruption."""
    import os
    import subprocess
    import sys

    d = run_training(tiny_data, tmp_path_factory.mktemp("train") / "full", max_steps=12, eval_every=4)
    env = dict(os.environ, TAVSE_SCRATCH_DIR=str(d / "scratch"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "stages.train", TRAINED_VARIANT], cwd=d, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return d


@pytest.fixture(scope="session")
def tiny_reproduced(tmp_path_factory) -> Path:
    """The whole pipeline reproduced once with the real ``dvc repro`` on the smoke profile, in a clone
    of the working tree. Never changed: a test takes its own copy (:func:`copy_repo`)."""
    from tests.e2e.test_pipeline import TINY, clone_repo, dvc, set_params

    repo = clone_repo(tmp_path_factory.mktemp("tiny-reproduced"))
    set_params(repo, **TINY)
    dvc(repo, "repro")
    return repo


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a project folder (git, DVC cache and outputs), the hard links between outputs and cache kept."""
    import shutil
    import subprocess

    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    shutil.rmtree(dest / ".dvc" / "tmp", ignore_errors=True)  # DVC's locks and state: of the original's paths
    return dest
