"""make smoke's command line (the whole run: tests/e2e/test_pipeline.py::test_smoke_reproduces_...)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_smoke_names_a_key_params_does_not_have(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "tavse.smoke", "--dir", str(tmp_path / "s"), "train.nope=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0 and "has no key train.nope" in res.stderr
