"""End to end: the real `dvc` CLI runs the pipeline on the tiny preset in a fresh clone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tavse import smoke
from tests.chromium import inspect_page
from tests.conftest import ROOT, copy_repo

pytestmark = pytest.mark.e2e  # every test runs on the real `dvc repro` of the tiny pipeline

BIN = Path(sys.executable).parent


def clone_repo(dest: Path) -> Path:
    """A copy of the working tree (tracked + untracked-not-ignored files) as a fresh git repo."""
    smoke.copy_worktree(ROOT, dest)
    return dest


def set_params(repo: Path, **dotted) -> None:
    smoke.set_params(repo / "params.yaml", dotted)


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TAVSE_SCRATCH_DIR=str(repo / ".tavse" / "scratch")
    )
    res = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


# The smoke profile (make smoke): the whole pipeline in about a minute per run.
TINY = smoke.SMOKE_PARAMS


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


@pytest.fixture(scope="module")
def tiny_repo(tiny_reproduced, tmp_path_factory) -> Path:
    return copy_repo(tiny_reproduced, tmp_path_factory.mktemp("pipeline") / "repo")


def git_commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=repo, check=True)


def test_repro_produces_every_output(tiny_repo):
    ingest = json.loads((tiny_repo / "reports" / "ingest.json").read_text())
    assert ingest["utterances"] == 8 and ingest["skipped_total"] == 0
    noise = json.loads((tiny_repo / "reports" / "noise.json").read_text())
    assert set(noise["splits"]) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert (tiny_repo / "data" / "ingest" / "lmdb" / split / "data.mdb").is_file()
        assert list((tiny_repo / "data" / "noise" / split).glob("*.wav"))
    for variant in ("audio_only", "audio_rgb", "audio_thermal", "audio_rgb_thermal"):
        ckpt = torch.load(tiny_repo / "models" / variant / "best.pt", weights_only=True)
        assert ckpt["variant"] == variant
        assert json.loads((tiny_repo / "results" / variant / "metrics.json").read_text())["si_snri"]
    assert "oracle IRM (ceiling)" in (tiny_repo / "results" / "report.md").read_text()
    # The DVC metrics: each variant's validation and test headline figures, every variant's
    # file with the same keys (shared columns); reports, p-values and the reference are plain outputs.
    (shown,) = (rev["data"] for rev in json.loads(dvc(tiny_repo, "metrics", "show", "--json").stdout).values())
    variants = ("audio_only", "audio_rgb", "audio_thermal", "audio_rgb_thermal")
    assert set(shown) == {f"{d}/{v}/metrics.json" for d in ("dvclive", "results") for v in variants}
    for d in ("dvclive", "results"):
        assert len({tuple(sorted(shown[f"{d}/{v}/metrics.json"]["data"])) for v in variants}) == 1, d
    assert set(shown["results/audio_rgb/metrics.json"]["data"]) == {
        "si_snri",
        "si_snri_snr-5",
        "si_snri_active",
        "pesq_wb",
        "estoi",
    }
    assert max(map(len, dvc(tiny_repo, "metrics", "show").stdout.splitlines())) <= 120
    for path in ("reports/ingest.json", "results/compare.json", "results/reference/metrics.json"):
        assert (tiny_repo / path).is_file(), path


def test_report_page_in_headless_chromium(tiny_repo, tmp_path):
    """results/report.html opened from disk in real headless Chromium: every sound loads, nothing is
    requested from outside the page, and it says what the study found."""
    page = tiny_repo / "results" / "report.html"
    html = page.read_text()
    assert not re.search(r'(?:src|href)="(?!data:|#)', html) and "<script" not in html and "@import" not in html
    samples = json.loads((tiny_repo / "results" / "reference" / "samples" / "samples.json").read_text())["samples"]
    assert len(samples) >= 8 and len({s["mix_id"] for s in samples}) == len(samples)
    assert len({s["snr_db"] for s in samples}) == 4 and len({s["noise_env"] for s in samples}) >= 3
    seen = inspect_page(page, tmp_path / "report.png", width=1280, height=1600)
    assert seen["external"] == [] and seen["failed"] == [] and seen["console"] == []
    assert all(u.startswith(("data:", "file:")) for u in seen["requests"])
    systems = 3 + 4  # noisy, clean, oracle; four variants
    assert len(seen["audio"]) == systems * len(samples)
    for audio, duration in zip(seen["audio"], [s["duration_s"] for s in samples for _ in range(systems)]):
        assert audio["readyState"] >= 1 and audio["error"] is None, audio
        assert audio["duration"] == pytest.approx(duration, abs=0.01)
    assert len(seen["images"]) == (systems + 1) * len(samples)  # a spectrogram per system, a mouth strip
    assert all(img["complete"] and img["width"] > 100 for img in seen["images"])
    assert seen["svgs"] == 5 and seen["scripts"] == 0  # SNR, environment, training, gate and per-mixture gate charts
    text = seen["text"]
    for heading in (
        "The answer",
        "All systems on the test mixtures",
        "Worse than the noisy input",
        "Per input SNR",
        "Per noise environment",
        "Paired tests",
        "Stream zeroing",
        "Training curves",
        "Gate values",
        "Listen",
    ):
        assert f"\n{heading}\n" in text, heading
    assert "Does thermal video of the mouth help remove noise" in text and "Bonferroni-corrected Wilcoxon p = " in text
    assert "audio_thermal − audio_only: " in text and "audio_thermal − audio_rgb: " in text
    assert "Caveat: these results come from the embedded synthetic corpus" in text
    assert "oracle IRM (ceiling)" in text and "audio_rgb_thermal/no_thermal" in text
    assert 1e6 < page.stat().st_size < 12e6


def test_report_names_the_input_that_does_not_fit(tiny_repo, tmp_path, monkeypatch):
    from tavse.common.config import config_from_dict
    from tavse.evaluation.page import ReportError, write_report_page

    results = tmp_path / "results"
    shutil.copytree(tiny_repo / "results", results)
    p = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    p["evaluation"]["out_dir"] = str(results)
    cfg = config_from_dict(p)
    monkeypatch.chdir(tiny_repo)
    theirs = results / "audio_rgb" / "samples" / "samples.json"
    data = json.loads(theirs.read_text())
    theirs.unlink()  # copied from a DVC output: read-only
    theirs.write_text(json.dumps({**data, "samples": data["samples"][1:]}))
    with pytest.raises(ReportError, match=f"{re.escape(str(theirs))}: samples .* differ from the reference's"):
        write_report_page(cfg)
    (results / "audio_thermal" / "gates.json").unlink()
    theirs.write_text(json.dumps(data))
    with pytest.raises(ReportError, match=f"{re.escape(str(results / 'audio_thermal' / 'gates.json'))}: missing"):
        write_report_page(cfg)
    assert (
        not (results / "report.html").exists()
        or (results / "report.html").read_bytes() == (tiny_repo / "results" / "report.html").read_bytes()
    )


def test_second_repro_is_a_no_op_and_outputs_are_clean(tiny_repo):
    before = lock_outs(tiny_repo)
    res = dvc(tiny_repo, "repro")
    assert "Running stage" not in res.stdout, res.stdout
    assert lock_outs(tiny_repo) == before
    status = dvc(tiny_repo, "status", "--json")
    assert json.loads(status.stdout) == {}, status.stdout  # readers did not modify any LMDB


def test_plots_show_all_variants_offline(tiny_repo, tmp_path):
    res = dvc(tiny_repo, "plots", "show", "--out", str(tmp_path / "plots"))
    assert "failed to load" not in res.stdout + res.stderr and "WARNING" not in res.stderr, res.stderr
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    shown = json.loads(dvc(tiny_repo, "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    assert len(shown["data"]) == len(yaml.safe_load((tiny_repo / "dvc.yaml").read_text())["plots"])
    for _plot_id, (render,) in shown["data"].items():
        # file names without the common prefix: the variant first (the template's legend)
        files = {p["filename"] for p in render["content"]["data"]["values"]}
        assert {f.split("/")[0] for f in files} == {"audio_only", "audio_rgb", "audio_thermal", "audio_rgb_thermal"}


def test_smoke_reproduces_from_scratch_the_same_bytes_in_a_copy(tiny_reproduced, tmp_path):
    """`make smoke` (the smoke profile's `dvc repro` in a copy of the working tree) leaves the workspace as it
    was, and its second run of the whole pipeline from scratch gives every output the same hash."""

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout

    before = status()
    res = subprocess.run(
        [sys.executable, "-m", "tavse.smoke", "--dir", str(tmp_path / "smoke")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "the whole pipeline ran in" in res.stdout and "Running stage 'train@audio_rgb_thermal'" in res.stdout
    run = tmp_path / "smoke"
    assert "preset: tiny" in (run / "params.yaml").read_text()
    assert lock_outs(run) == lock_outs(tiny_reproduced)
    assert status() == before  # nothing in the workspace changed


def test_experiment_with_modality_dropout_and_metrics_diff(tiny_repo):
    """The README's example: a per-variant setting re-trains that variant alone (the whole pipeline asked)."""
    git_commit(tiny_repo, "baseline results")
    res = dvc(tiny_repo, "exp", "run", "-S", "variants.audio_rgb_thermal.modality_dropout=0.2")
    ran = {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage '")}
    assert {s for s in ran if s.startswith("train@")} == {"train@audio_rgb_thermal"}, ran
    assert "evaluate@audio_rgb_thermal" in ran and "evaluate@audio_only" not in ran
    show = json.dumps(json.loads(dvc(tiny_repo, "exp", "show", "--json").stdout))
    assert '"modality_dropout": 0.2' in show
    diff = json.loads(dvc(tiny_repo, "metrics", "diff", "--json").stdout)
    assert "dvclive/audio_rgb_thermal/metrics.json" in json.dumps(diff)
