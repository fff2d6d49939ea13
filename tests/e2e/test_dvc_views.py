"""What `dvc plots show`, `dvc metrics show` and `make exp-table` make of this project's dvc.yaml.

A throwaway git + DVC repository gets the project's dvc.yaml, params.yaml, plot templates and
HTML template, and the files the pipeline writes in their places, written by the pipeline's own
writers: the training's dvclive curves and summary through dvclive (as ``tavse.training.loop``
logs them), evaluation's metrics.json, si_snri_by_snr.csv and a samples folder through
``write_results``. The real DVC CLI then draws and tabulates them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tavse.evaluation.exp_table import exp_table
from tavse.evaluation.results import HEADLINE, METRICS, lowest_snr_key, write_results
from tavse.training.loop import LIVE_SUMMARY
from tests.e2e.test_plots_offline import _dvc, _project_html_template_setting

ROOT = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
VARIANTS = list(PARAMS["variants"])
SNRS = PARAMS["evaluation"]["snrs_db"]
LIVE_DIR, RESULTS = PARAMS["train"]["dvclive_dir"], PARAMS["evaluation"]["out_dir"]
STEPS = (50, 100, 150)
# What the training logs per validation (tavse.training.loop._validate_and_track), gates aside.
VAL_CURVES = ("si_snr", "si_snri", "si_snri_active", "silence_atten_db", "si_snri_snr-5", "si_snri_active_snr-5")
WIDTH = 120  # a terminal


def _rows(system: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "mix_id": f"m{k}",
            "utt_id": f"s121_t1_p1_c{k:04d}",
            "speaker": 121,
            "snr_db": float(snr),
            "noise_env": "PRESTO",
            "noise_kind": "babble",
            "system": system,
            "condition": condition,
            "failures": {},
            **{m: float(rng.normal(3, 1)) for m in METRICS},
        }
        for k, snr in enumerate(s for s in SNRS for _ in range(2))
        for condition in ("full", "no_rgb")
    ]


def _write_training_outputs(repo: Path, variant: str, seed: int) -> None:
    from dvclive import Live

    rng = np.random.default_rng(seed)
    live = Live(str(repo / LIVE_DIR / variant), save_dvc_exp=False, dvcyaml=None, report=None)
    best = {}
    for step in STEPS:
        live.step = step
        row = {k: float(rng.normal(4, 1)) for k in VAL_CURVES}
        for k, v in row.items():
            live.log_metric("val/" + k, v)
        live.log_metric("train/train_loss", float(-8 - rng.random()))
        live.log_metric("train/lr", 1e-3)
        live.next_step()
        best = row if not best or row["si_snri_active"] > best["si_snri_active"] else best
    live.summary = {k: best[k] for k in LIVE_SUMMARY}  # as loop.train does at the end
    live.make_summary()


@pytest.fixture(scope="module")
def views_repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    repo = tmp / "repo"
    repo.mkdir()
    env = dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        DVC_TEST="1",
        DVC_SITE_CACHE_DIR=str(tmp / "site"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
    )  # this checkout's tavse, for python -m
    dvc = _dvc()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    for name in ("dvc.yaml", "params.yaml", "plots/template.html"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    run(dvc, "config", "plots.html_template", _project_html_template_setting())
    for i, v in enumerate(VARIANTS):
        _write_training_outputs(repo, v, seed=i)
        write_results(repo / RESULTS / v, _rows(v, seed=10 + i), seed=0, n_boot=50, plot_system=v, snrs_db=SNRS)
        samples = repo / RESULTS / v / "samples"  # what evaluate writes beside: WAVs and images
        samples.mkdir()
        (samples / "m0_clean.wav").write_bytes(b"RIFF\0\0\0\0WAVE")
        (samples / "m0_spectrogram.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return repo, run, dvc


def test_dvc_yaml_declares_plots_once_at_the_top_level():
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc_yaml["stages"].items():
        assert "plots" not in stage.get("do", stage), f"stage {name} declares plots: each would be drawn twice"
    drawn = [(f, field) for p in dvc_yaml["plots"] for d in p.values() for f, field in d["y"].items()]
    assert len(drawn) == len(set(drawn)), "a curve is drawn in two panels"
    assert not any(Path(f).suffix not in (".tsv", ".csv") for f, _ in drawn)  # no folder of samples


@pytest.mark.e2e
def test_plots_show_one_panel_per_quantity_one_colour_per_variant(views_repo, tmp_path):
    repo, run, dvc = views_repo
    proc = run(dvc, "plots", "show", "--out", str(tmp_path / "plots"))
    assert "failed to load" not in proc.stdout + proc.stderr, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert (tmp_path / "plots" / "index.html").is_file()

    shown = json.loads(run(dvc, "plots", "show", "--json").stdout)
    assert shown.get("errors") in (None, []), shown["errors"]
    ids = [next(iter(p)) for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]]
    assert list(shown["data"]) == ids  # the top-level panels only, none from a stage
    for plot_id, renders in shown["data"].items():
        assert len(renders) == 1 and renders[0]["type"] == "vega", plot_id
        spec = renders[0]["content"]
        enc = spec["encoding"]
        # The legend names variants: the colour is the variant, computed from the file name DVC
        # gives each point (the y files' paths without their common prefix, so the variant first).
        assert enc["color"]["field"] == "variant" and enc["strokeDash"]["field"] == "rev", plot_id
        assert spec["transform"] == [{"calculate": "split(datum.filename, '/')[0]", "as": "variant"}]
        points = spec["data"]["values"]
        assert {p["filename"].split("/")[0] for p in points} == set(VARIANTS), plot_id
        assert {p["rev"] for p in points} == {"workspace"}
        assert "(dB)" in enc["y"]["title"], plot_id  # units on the axis
        assert enc["x"]["title"] in ("training step", "input SNR (dB)"), plot_id
        assert spec["title"] != plot_id  # a sentence, not the id
        n_x = len(STEPS) if enc["x"]["field"] == "step" else len(SNRS)
        assert len(points) == n_x * len(VARIANTS), plot_id


@pytest.mark.e2e
def test_metrics_show_one_row_per_file_shared_columns(views_repo):
    repo, run, dvc = views_repo
    shown = json.loads(run(dvc, "metrics", "show", "--json").stdout)
    (files,) = (rev["data"] for rev in shown.values())  # the workspace only
    expected = {f"{LIVE_DIR}/{v}/metrics.json" for v in VARIANTS} | {f"{RESULTS}/{v}/metrics.json" for v in VARIANTS}
    assert set(files) == expected  # no ingest or noise report, no p-values, no reference systems
    val = {tuple(sorted(files[f"{LIVE_DIR}/{v}/metrics.json"]["data"])) for v in VARIANTS}
    test = {tuple(sorted(files[f"{RESULTS}/{v}/metrics.json"]["data"])) for v in VARIANTS}
    assert val == {tuple(sorted({*LIVE_SUMMARY, "step"}))}
    assert test == {tuple(sorted({*HEADLINE, lowest_snr_key(SNRS)}))}
    text = run(dvc, "metrics", "show").stdout.splitlines()
    assert len(text) == 1 + len(expected)
    assert max(map(len, text)) <= WIDTH, "\n".join(text)


@pytest.mark.e2e
def test_exp_table_fits_a_terminal(views_repo):
    repo, run, dvc = views_repo
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    params = (repo / "params.yaml").read_text()
    assert "modality_dropout: 0.0" in params
    (repo / "params.yaml").write_text(params.replace("modality_dropout: 0.0", "modality_dropout: 0.25", 1))
    proc = run(sys.executable, "-m", "tavse.evaluation.exp_table")
    lines = proc.stdout.splitlines()
    print(proc.stdout)
    assert max(map(len, lines)) <= WIDTH, proc.stdout
    rows = [cells for cells in map(str.split, lines) if len(cells) == 9 and cells[1] in VARIANTS]
    assert len(rows) == 2 * len(VARIANTS)  # the workspace and the commit, each variant once
    test = json.loads((repo / RESULTS / VARIANTS[0] / "metrics.json").read_text())
    val = json.loads((repo / LIVE_DIR / VARIANTS[0] / "metrics.json").read_text())
    assert rows[0][:2] == ["workspace", VARIANTS[0]]
    assert rows[0][2:] == [
        f"{val['si_snri']:.2f}",
        f"{val['si_snri_active']:.2f}",
        f"{test['si_snri']:.2f}",
        f"{test[lowest_snr_key(SNRS)]:.2f}",
        f"{test['si_snri_active']:.2f}",
        f"{test['pesq_wb']:.2f}",
        f"{test['estoi']:.3f}",
    ]
    assert "workspace (vs " in proc.stdout and "variants.audio_rgb_thermal.modality_dropout=0.25" in proc.stdout


def test_exp_table_marks_results_of_another_model_and_failed_runs():
    def data(seed: int, model_hash: str, scored_hash: str) -> dict:
        params = {
            "variants": {"audio_only": [], "audio_thermal": ["thermal"]},
            "train": {"seed": seed},
            "evaluation": {"snrs_db": [-5, 0]},
        }
        metrics = {}
        for v in params["variants"]:
            metrics[f"dvclive/{v}/metrics.json"] = {"data": {"si_snri": 5.0 + seed, "si_snri_active": 4.0, "step": 9}}
            metrics[f"results/{v}/metrics.json"] = {
                "data": {"si_snri": 6.0, "si_snri_active": 3.5, "si_snri_snr-5": 7.0, "pesq_wb": 1.4, "estoi": 0.7}
            }
        return {
            "params": {"params.yaml": {"data": params}},
            "metrics": metrics,
            "outs": {f"models/{v}": {"hash": model_hash} for v in params["variants"]},
            "deps": {f"models/{v}": {"hash": scored_hash} for v in params["variants"]},
        }

    shown = [
        {"rev": "workspace", "name": None, "data": data(1, "a", "a"), "experiments": None},
        {
            "rev": "0123456789abcdef",
            "name": "main",
            "data": data(1, "a", "a"),
            "experiments": [
                {"revs": [{"rev": "fedcba9876543210", "name": "trained-only", "data": data(2, "b", "a")}]},
                {"revs": [{"rev": "aaaaaaaaaaaaaaaa", "name": "broken", "data": None, "error": {"msg": "failed"}}]},
            ],
        },
    ]
    text = exp_table(shown)
    lines = text.splitlines()
    assert max(map(len, lines)) <= WIDTH
    rows = {tuple(c[:2]): c[2:] for c in map(str.split, lines) if len(c) == 9}
    assert rows[("workspace", "audio_only")] == ["6.00", "4.00", "6.00", "7.00", "3.50", "1.40", "0.700"]
    # An experiment that only trained: its commit still holds the baseline's test figures, not its own.
    assert rows[("trained-only", "audio_thermal*")] == ["7.00", "4.00", "-", "-", "-", "-", "-"]
    assert "@-5 dB" in lines[1] and "*: not evaluated since it was trained" in text
    assert "  trained-only (vs main): train.seed=2" in lines and "  broken: failed, no metrics" in lines
    assert not any(line.startswith("  workspace (vs") for line in lines)  # the workspace changed nothing
