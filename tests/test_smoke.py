"""make smoke: the whole real pipeline on the tiny corpus in a copy, the workspace untouched."""

import subprocess
import sys

from tests.conftest import ROOT


def _status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


def test_smoke_runs_the_whole_pipeline_in_a_copy(tmp_path):
    before = _status()
    res = subprocess.run([sys.executable, "-m", "tavse.smoke", "--dir", str(tmp_path / "smoke")], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "the whole pipeline ran in" in res.stdout
    run = tmp_path / "smoke"
    assert (run / "results" / "report.html").stat().st_size > 0
    assert "Running stage 'train@audio_rgb_thermal'" in res.stdout
    assert "preset: tiny" in (run / "params.yaml").read_text()
    assert _status() == before  # nothing in the workspace changed


def test_smoke_names_a_key_params_does_not_have(tmp_path):
    res = subprocess.run([sys.executable, "-m", "tavse.smoke", "--dir", str(tmp_path / "s"), "train.nope=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "has no key train.nope" in res.stderr
