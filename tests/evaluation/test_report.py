"""The report's comparison against the noisy input: per noise kind and SNR, and its flags.

Rows are scored from real signals (harmonic speech-like items with silent stretches in
white or babble-like noise) through item_metrics and summarised as evaluation does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tavse import losses
from tavse.evaluation.metrics import input_row, metrics_row
from tavse.evaluation.report import NOISY, ORACLE, against_input_table, flags_section, noise_kinds, worse_than_input
from tavse.evaluation.results import system_summaries
from tavse.evaluation.scoring import oracle_irm

SR = 16000
SNRS = ["+10", "+20"]
KIND_OF = {"stationary": 0, "babble": 1}


def speech(seconds: float, f0: float, seed: int) -> np.ndarray:
    """Voiced harmonics with a 4 Hz syllable envelope and a silent pause in the middle."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 + 0.15 * f0 * np.sin(2 * np.pi * 0.5 * t)) / SR
    x = 0.1 * sum(np.sin(k * phase) / k for k in range(1, 25)) * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    x[int(0.4 * x.size) : int(0.65 * x.size)] = 0.0
    return x + 1e-5 * rng.standard_normal(t.size)


def noise(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "stationary":
        return rng.standard_normal(n)
    talkers = [speech(n / SR, f0, seed + 10 * k) for k, f0 in enumerate((100, 150, 210))]
    return sum(np.roll(t, 4000 * k) for k, t in enumerate(talkers)) + 0.1 * rng.standard_normal(n)


def muffle(x: np.ndarray) -> np.ndarray:
    """A strong low-pass (a 40-sample moving average)."""
    return np.convolve(x, np.ones(40) / 40, mode="same")


@pytest.fixture(scope="module")
def summaries() -> dict[str, dict]:
    rows = []
    for i in range(8):
        kind = ("stationary", "babble")[i % 2]
        snr = (10.0, 20.0)[(i // 2) % 2]
        clean = speech(2.5, 110 + 12 * i, seed=i)
        n = noise(kind, clean.size, seed=100 + i)
        n *= np.sqrt(np.mean(clean**2) / np.mean(n**2) / 10 ** (snr / 10))
        noisy = clean + n
        active = losses.speech_activity(torch.from_numpy(clean)).numpy()
        systems = {
            "noisy": noisy,
            "oracle_irm": oracle_irm(clean, noisy, 512, 400, 160).astype(np.float64),
            "gate": np.where(active, noisy, 0.0),
            "muffled": muffle(clean) + 1.5 * n,
        }  # worse than doing nothing: speech muffled, noise raised
        inputs = input_row((clean, noisy))
        for name, est in systems.items():
            rows.append(
                {
                    "mix_id": f"m{i}",
                    "snr_db": snr,
                    "noise_env": f"ENV{i % 2}",
                    "noise_kind": kind,
                    "system": name,
                    "condition": "full",
                    **metrics_row((clean, noisy, est, inputs)),
                }
            )
    _, full = system_summaries(rows, seed=0, n_boot=200)
    return {NOISY: full["noisy"], "gate": full["gate"], "muffled": full["muffled"], ORACLE: full["oracle_irm"]}


def test_summaries_are_split_by_noise_kind(summaries):
    s = summaries["gate"]["si_snri"]
    assert set(s["by_noise_kind"]) == {"stationary", "babble"}
    assert [v["n"] for v in s["by_noise_kind"].values()] == [4, 4]
    assert noise_kinds(summaries) == ["stationary", "babble"]  # KINDS, only those present


def test_the_noisy_input_changes_nothing(summaries):
    s = summaries[NOISY]
    for m in ("si_snri", "si_snri_active", "silence_atten_db", "delta_pesq_wb", "delta_estoi"):
        assert s[m]["overall"]["mean"] == 0.0 and s[m]["overall"]["n"] == 8, m


def test_a_gate_gains_si_snri_only_outside_speech(summaries):
    s = summaries["gate"]
    assert s["si_snri"]["overall"]["mean"] > 1.0
    assert s["si_snri_active"]["overall"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert s["silence_atten_db"]["overall"]["mean"] < -40


def test_report_flags_a_system_worse_than_its_input(summaries):
    flags = worse_than_input(summaries, SNRS, ["stationary", "babble"])
    muffled = {(f["metric"], f["condition"]) for f in flags if f["system"] == "muffled"}
    assert ("ΔESTOI", "overall") in muffled and ("ΔPESQ-WB", "overall") in muffled
    assert ("SI-SNRi speech-active", "overall") in muffled
    assert {c for _, c in muffled} >= {
        "overall",
        "noise kind stationary",
        "noise kind babble",
        "SNR +10 dB",
        "SNR +20 dB",
    }
    assert all(f["system"] != NOISY for f in flags)  # the input is never worse than itself
    assert not [f for f in flags if f["system"] == "gate" and f["metric"] == "SI-SNRi speech-active"]
    assert all(f["mean"] < 0 for f in flags)
    worst = next(
        f for f in flags if f["system"] == "muffled" and f["metric"] == "ΔESTOI" and f["condition"] == "overall"
    )
    assert worst["ci_below_zero"] and worst["n"] == 8
    text = flags_section(flags)
    assert (
        text.startswith(f"**FLAG: {len(flags)} (system, metric, condition)")
        and "| muffled | ΔESTOI | overall |" in text
    )
    assert flags_section([]).startswith("No system is worse")


def test_against_input_table_sets_each_system_beside_the_input_and_the_oracle(summaries):
    table = against_input_table(
        "muffled", summaries["muffled"], summaries[NOISY], summaries[ORACLE], SNRS, ["stationary", "babble"]
    )
    lines = table.splitlines()
    assert lines[0].startswith(
        "| condition | system | SI-SNRi (dB) | SI-SNRi speech-active (dB) | silence atten. (dB) "
        "| ΔPESQ-WB | ΔESTOI | n |"
    )
    body = lines[2:]
    assert len(body) == 3 * (1 + 2 + 2)  # (overall, 2 kinds, 2 SNRs) x (system, noisy, oracle)
    assert [line.split(" | ")[1] for line in body[:3]] == ["muffled", NOISY, ORACLE]
    assert [line.split(" | ")[0] for line in body[::3]] == [
        "| overall",
        "| noise kind stationary",
        "| noise kind babble",
        "| SNR +10 dB",
        "| SNR +20 dB",
    ]
    muffled_overall = body[0].split(" | ")
    assert muffled_overall[-2].startswith("**-") and muffled_overall[-3].startswith("**-")  # ΔESTOI, ΔPESQ-WB bold
    noisy_overall = body[1].split(" | ")
    assert noisy_overall[2:7] == ["0.00 [0.00, 0.00]"] * 5 and "**" not in body[1]
    assert "**" not in body[2]  # the oracle is better than its input everywhere here
