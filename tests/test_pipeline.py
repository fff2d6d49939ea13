"""End to end: the real `dvc` CLI runs the pipeline on the tiny preset in a fresh clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def clone_repo(dest: Path) -> Path:
    """A copy of the working tree (tracked + untracked-not-ignored files) as a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=dest, check=True)
    return dest


def set_params(repo: Path, **dotted) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in dotted.items():
        node = p
        *parents, last = key.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TAVSE_SCRATCH_DIR=str(repo / ".scratch"))
    res = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


# The tiny preset and a few training steps: the whole pipeline in about a minute per run.
TINY = {
    "synth.preset": "tiny", "synth_noise.duration_s": 8.0, "synth_noise.channels": 1,
    "validation.segments_per_utterance": 2, "train.segment_frames": 14, "train.batch_size": 2,
    "train.max_steps": 4, "train.warmup_steps": 1, "train.eval_every": 2, "train.checkpoint_every": 2,
    "train.num_workers": 0,
}


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = clone_repo(tmp_path_factory.mktemp("repo"))
    set_params(repo, **TINY)
    dvc(repo, "repro")
    return repo


def test_repro_produces_every_output(tiny_repo):
    ingest = json.loads((tiny_repo / "reports" / "ingest.json").read_text())
    assert ingest["utterances"] == 8 and ingest["skipped_total"] == 0
    noise = json.loads((tiny_repo / "reports" / "noise.json").read_text())
    assert set(noise["splits"]) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert (tiny_repo / "data" / "ingest" / "lmdb" / split / "data.mdb").is_file()
        assert list((tiny_repo / "data" / "noise" / split).glob("*.wav"))
    shown = json.loads(dvc(tiny_repo, "metrics", "show", "--json").stdout)
    assert "reports/ingest.json" in json.dumps(shown)


def test_second_repro_is_a_no_op_and_outputs_are_clean(tiny_repo):
    before = lock_outs(tiny_repo)
    res = dvc(tiny_repo, "repro")
    assert "Running stage" not in res.stdout, res.stdout
    assert lock_outs(tiny_repo) == before
    status = dvc(tiny_repo, "status", "--json")
    assert json.loads(status.stdout) == {}, status.stdout  # readers did not modify any LMDB


def test_repro_from_scratch_gives_identical_hashes(tiny_repo, tmp_path):
    again = clone_repo(tmp_path / "again")
    shutil.copy2(tiny_repo / "params.yaml", again / "params.yaml")
    dvc(again, "repro")
    assert lock_outs(again) == lock_outs(tiny_repo)
