"""The DVC metrics evaluation writes: few keys, the same for every variant (one metrics row each)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tavse.evaluation.results import HEADLINE, METRICS, lowest_snr_key, write_results

SNRS = [-5.0, 0.0, 5.0, 10.0]


def rows_of(system: str, conditions: tuple[str, ...], snrs: list[float], seed: int) -> list[dict]:
    """Per-item rows as evaluation writes them, metric values drawn at random (two items per SNR)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, snr in enumerate(s for s in snrs for _ in range(2)):
        for condition in conditions:
            rows.append(
                {
                    "mix_id": f"m{k}",
                    "utt_id": f"s121_t1_p1_c{k:04d}",
                    "speaker": 121,
                    "snr_db": snr,
                    "noise_env": ("DWASHING", "PRESTO")[k % 2],
                    "noise_kind": ("stationary", "babble")[k % 2],
                    "system": system,
                    "condition": condition,
                    "failures": {},
                    **{m: float(rng.normal()) for m in METRICS},
                }
            )
    return rows


@pytest.fixture
def written(tmp_path):
    variants = {  # audio_thermal's items miss the lowest SNR: its key is still there, null
        "audio_only": rows_of("audio_only", ("full",), SNRS, 0),
        "audio_rgb_thermal": rows_of("audio_rgb_thermal", ("full", "no_rgb", "no_thermal"), SNRS, 1),
        "audio_thermal": rows_of("audio_thermal", ("full", "no_thermal"), SNRS[1:], 2),
    }
    for v, rows in variants.items():
        write_results(tmp_path / v, rows, seed=0, n_boot=50, plot_system=v, snrs_db=SNRS)
    return tmp_path, variants


def test_every_variant_has_the_same_few_metrics_keys(written):
    out, variants = written
    metrics = {v: json.loads((out / v / "metrics.json").read_text()) for v in variants}
    expected = {*HEADLINE, "si_snri_snr-5"}
    assert lowest_snr_key(SNRS) == "si_snri_snr-5"
    for v, m in metrics.items():
        assert set(m) == expected, v  # flat: no variant name, condition or nesting in any key
        assert all(v not in key for key in m)
    assert metrics["audio_thermal"]["si_snri_snr-5"] is None
    assert all(isinstance(metrics[v][k], float) for v in ("audio_only", "audio_rgb_thermal") for k in expected)


def test_metrics_are_the_full_condition_means(written):
    out, variants = written
    rows = [r for r in variants["audio_rgb_thermal"] if r["condition"] == "full"]
    m = json.loads((out / "audio_rgb_thermal" / "metrics.json").read_text())
    for key in HEADLINE:
        assert m[key] == pytest.approx(np.mean([r[key] for r in rows]), rel=1e-9)
    assert m["si_snri_snr-5"] == pytest.approx(np.mean([r["si_snri"] for r in rows if r["snr_db"] == -5]), rel=1e-9)
    # Everything else stays in summary.json: every metric, every condition, every grouping.
    summary = json.loads((out / "audio_rgb_thermal" / "summary.json").read_text())
    assert set(summary) == {"audio_rgb_thermal", "audio_rgb_thermal/no_rgb", "audio_rgb_thermal/no_thermal"}
    assert set(summary["audio_rgb_thermal"]) == set(METRICS)


def test_by_snr_csv_holds_both_si_snri_figures(written):
    out, variants = written
    with open(out / "audio_only" / "si_snri_by_snr.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == [
        "snr_db",
        "si_snri",
        "si_snri_ci95_low",
        "si_snri_ci95_high",
        "si_snri_active",
        "si_snri_active_ci95_low",
        "si_snri_active_ci95_high",
    ]
    assert [r["snr_db"] for r in table] == ["-5", "+0", "+5", "+10"]
    rows = variants["audio_only"]
    for r in table:
        items = [x for x in rows if f"{x['snr_db']:+g}" == r["snr_db"]]
        assert float(r["si_snri_active"]) == pytest.approx(np.mean([x["si_snri_active"] for x in items]), abs=1e-4)
        assert float(r["si_snri_ci95_low"]) <= float(r["si_snri"]) <= float(r["si_snri_ci95_high"])


def test_reference_metrics_are_keyed_by_system(tmp_path):
    rows = rows_of("noisy", ("full",), SNRS, 3) + rows_of("oracle_irm", ("full",), SNRS, 4)
    write_results(tmp_path, rows, seed=0, n_boot=50, snrs_db=SNRS)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m) == {"noisy", "oracle_irm"}
    assert all(set(v) == {*HEADLINE, "si_snri_snr-5"} for v in m.values())
    assert not (tmp_path / "si_snri_by_snr.csv").exists()
