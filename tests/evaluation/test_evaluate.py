"""evaluate@<variant>, reference, compare and the enhance command on the tiny real data."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tavse.corpus.noise_kinds import KINDS
from tavse.evaluation.results import HEADLINE, ITEM_FIELDS, lowest_snr_key, read_items
from tavse.evaluation.scoring import conditions, oracle_irm
from tavse.losses import si_snr
from tavse.pipeline import compare, evaluate, reference, test_mixtures
from tests.conftest import ROOT, TRAINED_VARIANT


@pytest.fixture(scope="module")
def evaluated(tiny_data, tiny_trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = dataclasses.replace(
        tiny_data,
        train=dataclasses.replace(tiny_data.train, out_dir=str(tiny_trained / "models")),
        evaluation=dataclasses.replace(tiny_data.evaluation, out_dir=str(out), workers=2),
        variants={TRAINED_VARIANT: tiny_data.variants[TRAINED_VARIANT], "audio_rgb": ["rgb"]},
    )
    test_mixtures.run(cfg)
    reference.run(cfg)
    evaluate.run(cfg, TRAINED_VARIANT)
    return cfg, out


def test_conditions_zero_each_stream():
    assert conditions(["rgb", "thermal"]) == {"full": (), "no_rgb": ("rgb",), "no_thermal": ("thermal",)}
    assert conditions([]) == {"full": ()}


def test_oracle_irm_is_a_ceiling():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    noisy = clean + 0.3 * rng.standard_normal(16000).astype(np.float32)
    est = oracle_irm(clean, noisy, 512, 400, 160)
    import torch

    gain = float(
        si_snr(torch.from_numpy(est)[None].double(), torch.from_numpy(clean)[None].double())
        - si_snr(torch.from_numpy(noisy)[None].double(), torch.from_numpy(clean)[None].double())
    )
    assert est.shape == noisy.shape and gain > 8


def test_items_cover_every_mixture_and_condition(evaluated):
    cfg, out = evaluated
    rows = read_items(out / TRAINED_VARIANT / "items.csv")
    mixtures = {r["mix_id"] for r in rows}
    assert len(rows) == 3 * len(mixtures)  # full, no_rgb, no_thermal
    assert {r["condition"] for r in rows} == {"full", "no_rgb", "no_thermal"}
    full = [r for r in rows if r["condition"] == "full"]
    assert all(r["si_snr"] is not None and r["stoi"] is not None for r in full)
    assert all(r["noise_kind"] in KINDS for r in rows)
    assert all(r[m] is not None for r in full for m in ("si_snri_active", "silence_atten_db", "delta_estoi"))
    metrics = json.loads((out / TRAINED_VARIANT / "metrics.json").read_text())
    assert set(metrics) == {*HEADLINE, lowest_snr_key(cfg.evaluation.snrs_db)}  # the same keys for every variant
    summary = json.loads((out / TRAINED_VARIANT / "summary.json").read_text())
    assert metrics["si_snri_active"] == summary[TRAINED_VARIANT]["si_snri_active"]["overall"]["mean"]
    assert set(summary) == {TRAINED_VARIANT, f"{TRAINED_VARIANT}/no_rgb", f"{TRAINED_VARIANT}/no_thermal"}
    by_kind = summary[TRAINED_VARIANT]["delta_estoi"]["by_noise_kind"]
    assert set(by_kind) == {r["noise_kind"] for r in rows}
    assert sum(v["n"] for v in by_kind.values()) == len(full)
    assert {"overall", "by_snr", "by_noise", "by_noise_kind"} == set(summary[TRAINED_VARIANT]["si_snri_active"])
    chosen = json.loads((out / TRAINED_VARIANT / "samples" / "samples.json").read_text())["samples"]
    assert len(chosen) == cfg.evaluation.samples
    for s in chosen:
        assert set(s["gates"]) == {"rgb", "thermal"} and all(0 <= g <= 1 for g in s["gates"].values())
        audio, rate = sf.read(out / TRAINED_VARIANT / "samples" / s["audio"][TRAINED_VARIANT])
        assert rate == 16000 and len(audio) == round(s["duration_s"] * 16000)
        assert (out / TRAINED_VARIANT / "samples" / s["spectrogram"]).read_bytes()[:4] == b"\x89PNG"
    ref = json.loads((out / "reference" / "samples" / "samples.json").read_text())["samples"]
    assert [s["mix_id"] for s in ref] == [s["mix_id"] for s in chosen]  # the same mixtures for every system
    assert all(set(s["audio"]) == {"noisy", "clean", "oracle_irm"} for s in ref)
    gates = json.loads((out / TRAINED_VARIANT / "gates.json").read_text())
    assert gates["streams"] == ["rgb", "thermal"] and gates["thermal"]["overall"]["n"] == len(full)
    assert (out / TRAINED_VARIANT / "si_snri_by_snr.csv").read_text().startswith("snr_db,si_snri")


def test_reference_rows_bracket_the_scale(evaluated):
    _, out = evaluated
    ref = json.loads((out / "reference" / "summary.json").read_text())
    mean = {s: {m: ref[s][m]["overall"]["mean"] for m in ref[s]} for s in ref}
    for m in ("si_snri", "si_snri_active", "silence_atten_db", "delta_pesq_wb", "delta_estoi"):
        assert mean["noisy"][m] == 0, m  # the input changes nothing
        assert all(g["mean"] == 0 for g in ref["noisy"][m]["by_snr"].values() if g["mean"] is not None), m
    assert mean["oracle_irm"]["si_snri"] > 5
    assert mean["oracle_irm"]["si_snri_active"] > 0 and mean["oracle_irm"]["delta_estoi"] > 0
    assert mean["oracle_irm"]["silence_atten_db"] < 0
    headline = json.loads((out / "reference" / "metrics.json").read_text())
    assert headline["oracle_irm"]["si_snri"] == mean["oracle_irm"]["si_snri"] and headline["noisy"]["si_snri"] == 0
    rows = read_items(out / "reference" / "items.csv")
    noisy = {r["mix_id"]: r for r in rows if r["system"] == "noisy"}
    assert all(r["delta_pesq_wb"] == 0 and r["delta_estoi"] == 0 and r["si_snri_active"] == 0 for r in noisy.values())


def test_compare_pairs_by_mix_id(evaluated, tmp_path):
    cfg, out = evaluated
    # A second "variant": the same rows with one item's PESQ failed and the file order reversed.
    rows = read_items(out / TRAINED_VARIANT / "items.csv")
    other = out / "audio_rgb"
    other.mkdir(exist_ok=True)
    (other / "summary.json").write_text(
        (out / TRAINED_VARIANT / "summary.json").read_text().replace(f'"{TRAINED_VARIANT}', '"audio_rgb')
    )
    header, *lines = (out / TRAINED_VARIANT / "items.csv").read_text().splitlines()
    broken = lines[::-1]
    i = next(k for k, line in enumerate(broken) if ",full," in line)
    cells = broken[i].split(",")
    cells[ITEM_FIELDS.index("pesq_wb")] = ""
    broken[i] = ",".join(cells)
    (other / "items.csv").write_text("\n".join([header, *broken]) + "\n")
    metrics = compare.run(cfg)
    pair = f"{TRAINED_VARIANT}_vs_audio_rgb"
    n_full = sum(r["condition"] == "full" for r in rows)
    assert metrics["si_snr"][pair]["n_pairs"] == n_full and metrics["si_snr"][pair]["median_difference"] == 0
    assert metrics["pesq_wb"][pair]["n_pairs"] == n_full - 1  # the failed item is excluded, no others shift
    assert metrics["pesq_wb"][pair]["median_difference"] == 0
    for m in ("si_snri_active", "delta_estoi", "delta_pesq_wb"):
        assert metrics[m][pair]["n_pairs"] >= n_full - 1
    t = metrics["si_snr"][pair]  # what the report page states: the effect with its CI, raw and corrected p
    assert t["mean_difference"] == 0 and t["diff_ci95_low"] == t["diff_ci95_high"] == 0 and t["p_value"] is None
    report = (out / "report.md").read_text()
    assert "noisy (input)" in report and "oracle IRM (ceiling)" in report and f"{TRAINED_VARIANT}/no_rgb" in report
    assert "## Worse than the noisy input" in report and "## Against the noisy input and the oracle" in report
    assert f"### {TRAINED_VARIANT}\n" in report and "| noise kind " in report and "| SNR +" in report
    assert "target-silent stretches included" in report and "attenuating silence cannot raise it" in report
    compare_md = (out / "compare.md").read_text()
    assert all(
        f"| {m} | {TRAINED_VARIANT} | audio_rgb |" in compare_md
        for m in ("si_snri_active", "delta_estoi", "delta_pesq_wb")
    )


def test_enhance_command_on_a_zip_and_a_folder(tiny_data, tiny_trained, tmp_path):
    archive = next(Path(tiny_data.data.speakingfaces_dir).glob("sub_121_ia.zip"))
    with zipfile.ZipFile(archive) as zf:
        wav = next(n for n in zf.namelist() if "mic1_audio_cmd_trim" in n)
        (tmp_path / "noisy.wav").write_bytes(zf.read(wav))
        utt = "s121_t1_p1_c" + f"{int(Path(wav).name.split('_')[4]):04d}"
        zf.extractall(tmp_path / "frames")
    model = tiny_trained / "models" / TRAINED_VARIANT / "best.pt"
    for frames in (archive, tmp_path / "frames"):
        out = tmp_path / f"enhanced_{frames.name}.wav"
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "tavse.enhance",
                "--model",
                str(model),
                "--noisy",
                str(tmp_path / "noisy.wav"),
                "--frames",
                str(frames),
                "--utterance",
                utt,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert "real-time factor" in res.stdout
        x, sr = sf.read(out)
        assert sr == 16000 and len(x) > 16000 and np.isfinite(x).all()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "tavse.enhance",
            "--model",
            str(model),
            "--noisy",
            str(tmp_path / "noisy.wav"),
            "--frames",
            str(archive),
            "--out",
            str(tmp_path / "x.wav"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode != 0 and "choose one with --utterance" in res.stderr
