"""Training on the tiny real data: outputs, exact resume after SIGUSR1 mid-epoch, same bytes after SIGKILL."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tavse.training.schedule import param_groups, warmup_cosine
from tavse.training.signals import EXIT_PREEMPTED
from tavse.training.state import canonical
from tests.common.test_logs import assert_readable_log
from tests.conftest import ROOT, run_training
from tests.conftest import TRAINED_VARIANT as VARIANT


def _env(d: Path) -> dict:
    return dict(
        os.environ,
        TAVSE_SCRATCH_DIR=str(d / "scratch"),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )


def _train(d: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.train", VARIANT], cwd=d, env=_env(d), capture_output=True, text=True
    )


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train", VARIANT],
        cwd=d,
        env=_env(d),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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


def test_ctrl_c_saves_at_the_next_step_exits_75_and_logs_readably(tiny_data, uninterrupted, tmp_path):
    """Ctrl-C as a terminal sends it (SIGINT to the process group: the stage and its DataLoader
    worker) does what SIGUSR1 does: state saved at a step boundary, exit 75, no traceback, and the
    rerun ends with the uninterrupted model. Both logs, written to a file as under SLURM and run
    with warnings as errors, have no bar redraws, no overlong line, one line per validation and a
    closing summary."""
    d = run_training(tiny_data, tmp_path / "ctrl-c", max_steps=12, eval_every=4, num_workers=1)
    cmd = [sys.executable, "-W", "error", "-m", "stages.train", VARIANT]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=d, env=_env(d), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    deadline = time.time() + 300
    while not list((d / "scratch").rglob("state.pt")) and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, (tmp_path / "first.log").read_text()[-3000:]
    err = (tmp_path / "first.log").read_text()
    assert_readable_log(err, tmp_path)
    assert err.count("SIGINT (Ctrl-C): saving the state at the next step") == 1, err
    assert "SIGINT received; state saved at step" in err
    stopped_at = int(err.split("state saved at step ")[1].split()[0])
    assert 2 <= stopped_at < 12 and not (d / "models" / VARIANT).exists()

    res = subprocess.run(cmd, cwd=d, env=_env(d), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_readable_log(res.stderr, tmp_path)
    assert f"at step {stopped_at}" in res.stderr
    validations = [line for line in res.stderr.splitlines() if " val SI-SNRi " in line]
    assert [int(v.split(" step ")[1].split(":")[0]) for v in validations] == [s for s in (4, 8, 12) if s > stopped_at]
    assert all(" INFO tavse.train: " in v and "speech-active" in v and "train loss" in v for v in validations)
    last = res.stderr.strip().splitlines()[-1]
    best = json.loads((d / "models" / VARIANT / "summary.json").read_text())["best_step"]
    assert f"{VARIANT} done: 12 steps; best validation speech-active SI-SNRi " in last and f"at step {best}" in last
    assert last.endswith(f"-> {d / 'models' / VARIANT / 'best.pt'}")
    a = torch.load(uninterrupted / "models" / VARIANT / "best.pt", weights_only=True)
    b = torch.load(d / "models" / VARIANT / "best.pt", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["val"] == b["val"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_to_every_process_of_the_run_still_saves(tiny_data, tmp_path, sig):
    """SLURM signals every process of a job step (SIGTERM on preemption or scancel), the
    DataLoader worker too: the worker must not die of it before the stage has saved."""
    d = run_training(tiny_data, tmp_path / "group", max_steps=12, eval_every=4, num_workers=1)
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages.train", VARIANT],
            cwd=d,
            env=_env(d),
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.time() + 300
    while not list((d / "scratch").rglob("state.pt")) and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, (tmp_path / "run.log").read_text()[-3000:]
    err = (tmp_path / "run.log").read_text()
    assert f"{signal.Signals(sig).name} received; state saved at step" in err and "Traceback" not in err, err[-3000:]


def _output_md5s(d: Path) -> dict[str, str]:
    """md5 of every file the stage writes for VARIANT (its DVC outputs and the dvclive folder)."""
    files = [
        p for root in (d / "models" / VARIANT, d / "dvclive" / VARIANT) for p in sorted(root.rglob("*")) if p.is_file()
    ]
    return {str(p.relative_to(d)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def test_sigkill_after_a_save_then_rerun_writes_the_same_bytes(tiny_data, tmp_path):
    """Killed without warning after a state save, the rerun resumes and writes byte-identical files.

    The recipe (lr 1.0, 8 steps, a validation every 2) diverges after its first validations, so an
    early step is the best (step 2 when written) and the resumed run writes a history row and best
    weights that came back through ``torch.load`` into ``best.pt``; both runs
    use the same folder, as the paths are part of the stored config and of the summary.
    """
    d = run_training(tiny_data, tmp_path / "run", max_steps=8, eval_every=2, checkpoint_every=2, lr=1.0)
    res = _train(d)
    assert res.returncode == 0, res.stderr[-3000:]
    want = _output_md5s(d)
    best_step = json.loads((d / "models" / VARIANT / "summary.json").read_text())["best_step"]
    assert best_step < 8, "precondition: the best validation must come before the last one (change lr)"
    for sub in ("models", "dvclive"):
        shutil.rmtree(d / sub)
    assert not list((d / "scratch").rglob("state.pt"))

    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages.train", VARIANT], cwd=d, env=_env(d), stdout=subprocess.DEVNULL, stderr=log
        )
    deadline, seen, saved_at = time.time() + 300, None, 0
    while saved_at < best_step:  # wait for a state saved at or after the best validation
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.time() < deadline
        states = list((d / "scratch").rglob("state.pt"))
        if states and states[0].stat().st_mtime_ns != seen:
            seen = states[0].stat().st_mtime_ns
            saved_at = torch.load(states[0], weights_only=True)["progress"]["step"]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert saved_at < 8 and not (d / "models" / VARIANT).exists()

    res = _train(d)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"at step {saved_at}" in res.stderr
    got = _output_md5s(d)
    assert got.keys() == want.keys() and any(k.endswith("best.pt") for k in got)
    assert got == want


def test_a_second_training_of_the_same_run_in_the_same_scratch_is_refused(tiny_data, tmp_path):
    """Two processes training one run (variant and settings) in one scratch folder would overwrite each
    other's resumable state; the second is refused in one line that names the holder, before it writes."""
    import yaml

    from tavse.common.config import config_from_dict
    from tavse.common.locks import FileLock
    from tavse.training.loop import run_key

    d = run_training(tiny_data, tmp_path / "run", max_steps=4, eval_every=2)
    cfg = config_from_dict(yaml.safe_load((d / "params.yaml").read_text()))
    run_dir = d / "scratch" / "train" / f"{VARIANT}-{run_key(cfg, VARIANT)}"
    lock = FileLock(run_dir / ".lock")
    assert lock.acquire(wait=False)
    try:
        res = _train(d)
    finally:
        lock.close()
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert (
        f"train@{VARIANT} failed: {run_dir}: another process is training {VARIANT} with the same settings in "
        f"this scratch folder (pid {os.getpid()} on host "
    ) in res.stderr, res.stderr
    assert not (d / "models").exists() and not (run_dir / "state.pt").exists()


def test_canonical_checkpoint_pickles_the_same_after_a_round_trip(tmp_path):
    """The cause, in small: equal objects, other identities, other pickle bytes, unless canonical."""
    config = {"train": {"lr": 0.002, "out_dir": "models"}}
    row = {"step": 4, "si_snr": 1.5, "lr": 0.01}  # the literal "lr" is the config key's very object
    torch.save({"history": [row]}, tmp_path / "state.pt")
    restored = torch.load(tmp_path / "state.pt", weights_only=True)["history"][0]
    assert restored == row
    weights = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}

    def saved(ckpt: dict, folder: str) -> bytes:
        (tmp_path / folder).mkdir()
        torch.save(ckpt, tmp_path / folder / "best.pt")  # the archive inside is named after the file
        return (tmp_path / folder / "best.pt").read_bytes()

    made = {"state_dict": weights, "config": config, "val": row}
    back = {"state_dict": {k: v.clone() for k, v in weights.items()}, "config": config, "val": restored}
    assert saved(made, "made") != saved(back, "back")  # 'lr' pickled once as a reference, once in full
    a, b = saved(canonical(made), "canonical_made"), saved(canonical(back), "canonical_back")
    assert a == b == saved(canonical(made), "again")  # and torch.save itself is deterministic
    ckpt = torch.load(tmp_path / "canonical_made" / "best.pt", weights_only=True)
    assert ckpt["config"] == config and ckpt["val"] == row and torch.equal(ckpt["state_dict"]["w"], weights["w"])
    with pytest.raises(TypeError):
        canonical({"path": Path("models")})


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
