"""End to end: ablation sets queued as real DVC experiments on the tiny pipeline, then the study table."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_repo
from tests.e2e.test_pipeline import BIN, dvc, git_commit

pytestmark = pytest.mark.e2e  # real `dvc exp`/`dvc queue` runs on a copy of the reproduced pipeline

DATA_STAGES = ("synth_corpus", "synth_noise", "ingest", "noise", "val_mixtures", "test_mixtures", "reference")


def study(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TAVSE_SCRATCH_DIR=str(repo / ".tavse" / "scratch")
    )
    res = subprocess.run(
        [str(BIN / "python"), "-m", "tavse.study", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, f"tavse.study {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def study_repo(tiny_reproduced, tmp_path_factory) -> Path:
    repo = copy_repo(tiny_reproduced, tmp_path_factory.mktemp("study") / "repo")
    (repo / "ablations.yaml").write_text(
        yaml.safe_dump(
            {
                "seeds": [1, 2],
                "sets": {
                    "seeds": {"variants": ["audio_only", "audio_rgb", "audio_thermal", "audio_rgb_thermal"]},
                    "modality_dropout": {"variants": ["audio_rgb_thermal"], "vary": {"modality_dropout": [0.5]}},
                },
            }
        )
    )
    git_commit(repo, "baseline results")
    return repo


def test_queued_experiments_run_only_their_own_stages_and_the_table_pools_the_seeds(study_repo):
    listed = study(study_repo, "list").stdout
    assert "seeds-s1" in listed and "= the workspace" in listed
    assert study(study_repo, "count").stdout.strip() == "3"  # seeds-s2, modality_dropout-0.5-s1 and -s2
    waited = study(study_repo, "queue", "--start", "-j", "1", "--wait", "--poll-s", "2").stderr
    # --wait follows the queue while it runs (it is not held until the end by the worker's inherited pipes)
    assert "queue after" in waited and ("Running 1" in waited or "Queued" in waited), waited
    again = study(study_repo, "queue").stderr  # what ran is not queued again
    assert again.count("is already an experiment of HEAD: not queued again") == 3 and "0 experiment(s) queued" in again

    shown = json.loads(dvc(study_repo, "exp", "show", "--json").stdout)
    names = {r["name"] for rev in shown for e in (rev.get("experiments") or []) for r in e.get("revs", [])}
    assert {"seeds-s2", "modality_dropout-0.5-s1", "modality_dropout-0.5-s2"} <= names, names
    for name, trained in (
        ("seeds-s2", {"audio_only", "audio_rgb", "audio_thermal", "audio_rgb_thermal"}),
        ("modality_dropout-0.5-s1", {"audio_rgb_thermal"}),
    ):
        log = dvc(study_repo, "queue", "logs", name).stdout
        ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}
        assert {s.split("@")[1] for s in ran if s.startswith("train@")} == trained, (name, ran)
        assert not ran & set(DATA_STAGES), f"{name} re-ran data stages: {sorted(ran & set(DATA_STAGES))}"

    out = study(study_repo, "table", "--out", "results/study")
    result = json.loads((study_repo / "results" / "study" / "study.json").read_text())
    rows = {(r["variant"], r["setting"], r["condition"]): r for r in result["rows"]}
    assert rows[("audio_only", "default", "full")]["seeds"] == [1, 2]
    assert rows[("audio_rgb_thermal", "modality_dropout=0.5", "full")]["seeds"] == [1, 2]
    for cond in ("full", "no_rgb", "no_thermal"):  # every stream combination of the ablated model
        assert rows[("audio_rgb_thermal", "modality_dropout=0.5", cond)]["si_snri_active"]["sd"] is not None
    assert ("audio_rgb", "default", "full") in rows and ("audio_rgb", "modality_dropout=0.5", "full") not in rows
    pairs = {(c["a"], c["b"]) for c in result["variant_comparisons"]}
    assert ("audio_only (default)", "audio_rgb_thermal (default)") in pairs
    assert all(c["seeds_a"] == c["seeds_b"] == 2 for c in result["variant_comparisons"])
    assert [c["a"] for c in result["ablation_comparisons"]][0] == "audio_rgb_thermal (modality_dropout=0.5)"
    assert (study_repo / "results" / "study" / "si_snri_by_snr.png").stat().st_size > 10_000
    assert "| audio_rgb_thermal | modality_dropout=0.5 | no_thermal | 1,2 |" in out.stdout
    page = (study_repo / "results" / "study" / "report.html").read_text()
    assert 'id="study"' in page and "modality_dropout=0.5" in page and "hierarchical bootstrap" in page
