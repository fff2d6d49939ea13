"""Training on the tiny real data: outputs, and exact resume after SIGUSR1 mid-epoch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tavse.training.schedule import param_groups, warmup_cosine
from tavse.training.signals import EXIT_PREEMPTED
from tests.conftest import ROOT, TRAINED_VARIANT as VARIANT, run_training


def _env(d: Path) -> dict:
    return dict(os.environ, TAVSE_SCRATCH_DIR=str(d / "scratch"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                PYTHONUNBUFFERED="1")


def _train(d: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.train", VARIANT], cwd=d, env=_env(d), capture_output=True, text=True)


def _curve(d: Path, name: str) -> list[tuple[str, str]]:
    with open(d / "dvclive" / VARIANT / "plots" / "metrics" / "val" / f"{name}.tsv") as fh:
        return [(r["step"], r[name]) for r in csv.DictReader(fh, delimiter="\t")]


@pytest.fixture(scope="module")
def uninterrupted(tiny_trained) -> Path:
    return tiny_trained


def test_outputs_load_with_weights_only_and_carry_config(uninterrupted):
    ckpt = torch.load(uninterrupted / "models" / VARIANT / "best.pt", weights_only=True)
    assert ckpt["variant"] == VARIANT and ckpt["modalities"] == ["rgb", "thermal"]
    assert ckpt["config"]["train"]["max_steps"] == 12 and set(ckpt["data_hashes"])
    summary = json.loads((uninterrupted / "models" / VARIANT / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["best_step"] in (4, 8, 12)
    assert summary["parameters"]["visual_rgb"] > 0 and summary["parameters"]["visual_thermal"] > 0
    assert [s for s, _ in _curve(uninterrupted, "si_snri")] == ["4", "8", "12"]
    assert "gate_rgb" in summary["best"] and 0 < summary["best"]["gate_rgb"] < 1
    # The resumable state is removed once the run has finished.
    assert not list((uninterrupted / "scratch").rglob("state.pt"))


def test_sigusr1_mid_epoch_then_resume_is_bitwise_identical(tiny_data, uninterrupted, tmp_path):
    d = run_training(tiny_data, tmp_path / "interrupted", max_steps=12, eval_every=4)
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", VARIANT], cwd=d, env=_env(d),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    # The first periodic save (step 2) proves the loop is running; signal it then.
    while not list((d / "scratch").rglob("state.pt")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SIGUSR1 received; state saved at step" in err
    stopped_at = int(err.split("state saved at step ")[1].split()[0])
    assert 2 <= stopped_at < 12
    assert not (d / "models" / VARIANT).exists()  # no half-written output
    # As if the run had gone on to log the next validation and then been killed without saving:
    # resuming from the saved state logs that step again, and the stale row must not stay.
    tsv = d / "dvclive" / VARIANT / "plots" / "metrics" / "val" / "si_snri.tsv"
    next_eval = (stopped_at // 4 + 1) * 4
    old = tsv.read_text() if tsv.is_file() else "step\tsi_snri\n"  # stopped before the first validation
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text(old + f"{next_eval}\t-99.0\n")

    res = _train(d)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"at step {stopped_at}" in res.stderr
    assert "dropping 1 row(s) logged after the saved state" in res.stderr
    a = torch.load(uninterrupted / "models" / VARIANT / "best.pt", weights_only=True)
    b = torch.load(d / "models" / VARIANT / "best.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["val"] == b["val"]
    for name in ("si_snri", "si_snr"):
        assert _curve(d, name) == _curve(uninterrupted, name)  # dvclive resumed its steps


def test_warmup_cosine_shape():
    lr = [warmup_cosine(s, 10, 100, 0.1) for s in range(101)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:])) and lr[100] == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_and_scales():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.scale = torch.nn.Parameter(torch.zeros(()))
    decay, no_decay = param_groups(model, 0.01)
    assert len(decay["params"]) == 1 and decay["params"][0] is model[0].weight
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
