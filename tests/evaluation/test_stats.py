"""Bootstrap CIs, summaries, paired Wilcoxon tests, Bonferroni and markdown tables."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from tavse.evaluation import stats as S


def sample(n: int = 40, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(2.0, 1.0, n))


def test_bootstrap_ci_is_seeded_and_contains_the_mean():
    x = sample()
    low, high = S.bootstrap_ci(x, seed=1)
    assert (low, high) == S.bootstrap_ci(x, seed=1)
    assert (low, high) != S.bootstrap_ci(x, seed=2)
    assert low < float(np.mean(x)) < high
    # roughly the normal-theory interval for n=40
    half = 1.96 * np.std(x, ddof=1) / math.sqrt(len(x))
    assert high - low == pytest.approx(2 * half, rel=0.25)


def test_bootstrap_ci_ignores_missing_values():
    x = sample()
    assert S.bootstrap_ci([None, *x, float("nan")], seed=3) == S.bootstrap_ci(x, seed=3)
    assert S.bootstrap_ci([None, float("nan")], seed=3) == (None, None)
    assert S.bootstrap_ci([1.5], seed=3) == (1.5, 1.5)


def test_bootstrap_ci_chunking_does_not_change_the_stream(monkeypatch):
    x = sample(50)
    whole = S.bootstrap_ci(x, seed=4)
    monkeypatch.setattr(S, "_BOOT_CHUNK_ELEMENTS", 50 * 7)  # 7 resamples per chunk
    assert S.bootstrap_ci(x, seed=4) == pytest.approx(whole, abs=1e-12)


def test_summarize():
    s = S.summarize([1.0, 2.0, None, 4.0, float("nan"), 5.0], seed=0)
    assert s["n"] == 4 and s["n_missing"] == 2
    assert s["mean"] == 3.0 and s["median"] == 3.0
    assert s["std"] == pytest.approx(np.std([1, 2, 4, 5], ddof=1))
    assert s["ci95_low"] <= 3.0 <= s["ci95_high"]
    assert s == S.summarize([1.0, 2.0, None, 4.0, float("nan"), 5.0], seed=0)
    empty = S.summarize([None], seed=0)
    assert empty["n"] == 0 and empty["n_missing"] == 1 and empty["mean"] is None and empty["ci95_low"] is None


ROWS = [
    {"id": "a", "snr_db": 5, "noise_env": "STRAFFIC", "pesq_wb": 2.0},
    {"id": "b", "snr_db": -5, "noise_env": "DKITCHEN", "pesq_wb": 1.0},
    {"id": "c", "snr_db": 0, "noise_env": "STRAFFIC", "pesq_wb": 1.5},
    {"id": "d", "snr_db": 5, "noise_env": "DKITCHEN", "pesq_wb": None},
    {"id": "e", "snr_db": -5, "noise_env": "STRAFFIC", "pesq_wb": 1.2},
    {"id": "f", "snr_db": 5, "noise_env": "STRAFFIC"},  # metric missing entirely
]


def test_group_summary_by_key():
    by_snr = S.group_summary(ROWS, "pesq_wb", "snr_db", seed=0)
    assert list(by_snr) == [-5, 0, 5]  # numeric order, not text order
    assert by_snr[-5]["n"] == 2 and by_snr[-5]["mean"] == pytest.approx(1.1)
    assert by_snr[5]["n"] == 1 and by_snr[5]["n_missing"] == 2 and by_snr[5]["mean"] == 2.0
    by_env = S.group_summary(ROWS, "pesq_wb", "noise_env", seed=0)
    assert list(by_env) == ["DKITCHEN", "STRAFFIC"]
    assert by_env["STRAFFIC"]["mean"] == pytest.approx((2.0 + 1.5 + 1.2) / 3)
    overall = S.group_summary(ROWS, "pesq_wb", None, seed=0)
    assert list(overall) == ["all"] and overall["all"] == S.summarize([r.get("pesq_wb") for r in ROWS], seed=0)
    with pytest.raises(KeyError, match="snr"):
        S.group_summary([{"pesq_wb": 1.0}], "pesq_wb", "snr_db", seed=0)


def test_wilcoxon_hand_computed_example():
    """d = a - b = [1, -2, 3, 4, 5]: ranks of |d| are 1..5, T+ = 13, T- = 2.

    Exact two-sided p: sign assignments (of 2^5 = 32) with T- <= 2 are {}, {1}, {2}, so
    p = 2 * 3/32 = 0.1875. Rank-biserial r = (13 - 2) / 15.
    """
    a = {"u1": 11.0, "u2": 8.0, "u3": 13.0, "u4": 14.0, "u5": 15.0}
    b = dict.fromkeys(a, 10.0)
    res = S.paired_wilcoxon(a, b)
    assert res["n_pairs"] == 5 and res["n_excluded"] == 0
    assert res["statistic"] == 2.0
    assert res["p_value"] == pytest.approx(0.1875)
    assert res["median_difference"] == 3.0 and res["mean_difference"] == pytest.approx(2.2)
    assert res["effect_size"] == pytest.approx(11 / 15)
    direct = sps.wilcoxon([11, 8, 13, 14, 15], [10] * 5, alternative="two-sided")
    assert (res["statistic"], res["p_value"]) == (direct.statistic, direct.pvalue)
    flipped = S.paired_wilcoxon(b, a)
    assert flipped["effect_size"] == pytest.approx(-11 / 15) and flipped["p_value"] == res["p_value"]


def test_rank_biserial_with_ties_and_zeros():
    # zeros dropped; |d| = 1, 1, 2 -> average ranks 1.5, 1.5, 3; T+ = 1.5 + 3, T- = 1.5
    assert S.rank_biserial(np.array([0.0, 1.0, -1.0, 2.0])) == pytest.approx((4.5 - 1.5) / 6)
    assert S.rank_biserial(np.zeros(3)) is None


def paired_data(n: int = 30, shift: float = 0.3, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    base = rng.normal(2.0, 0.5, n)
    a = {f"item{i:03d}": float(v + shift + rng.normal(0, 0.2)) for i, v in enumerate(base)}
    b = {f"item{i:03d}": float(v) for i, v in enumerate(base)}
    return a, b


def test_wilcoxon_ignores_dict_order():
    a, b = paired_data()
    keys_a, keys_b = list(a), list(b)
    random.Random(1).shuffle(keys_a)
    random.Random(2).shuffle(keys_b)
    shuffled = S.paired_wilcoxon({k: a[k] for k in keys_a}, {k: b[k] for k in keys_b})
    assert shuffled == S.paired_wilcoxon(a, b)


def test_wilcoxon_excludes_unpaired_items_without_shifting_others():
    a, b = paired_data(n=20, shift=0.1)
    a_missing = dict(a)
    a_missing["item003"] = None  # failed metric on one side
    b_missing = {k: v for k, v in b.items() if k != "item011"}  # item absent on the other
    b_missing["extra"] = 1.0  # item only in b
    res = S.paired_wilcoxon(a_missing, b_missing)
    assert res["n_pairs"] == 18 and res["n_excluded"] == 3
    kept = [k for k in a if k not in ("item003", "item011")]
    direct = sps.wilcoxon([a[k] for k in kept], [b[k] for k in kept], alternative="two-sided")
    assert res["statistic"] == direct.statistic and res["p_value"] == direct.pvalue
    assert res["median_difference"] == pytest.approx(np.median([a[k] - b[k] for k in kept]))


def test_wilcoxon_without_differences():
    a = {"x": 1.0, "y": 2.0}
    res = S.paired_wilcoxon(a, dict(a))
    assert res["n_pairs"] == 2 and res["p_value"] is None and res["statistic"] is None
    assert S.paired_wilcoxon({}, {})["n_pairs"] == 0


def test_compare_variants_bonferroni():
    base, _ = paired_data(n=30, shift=0.0, seed=5)
    rng = np.random.default_rng(6)
    ids = list(base)
    per_variant = {  # A clearly better than B and C; B and C differ only by noise
        "A": {i: {"pesq_wb": base[i] + 0.5, "stoi": 0.9} for i in ids},
        "B": {i: {"pesq_wb": base[i] + float(rng.normal(0, 0.05)), "stoi": 0.8} for i in ids},
        "C": {i: {"pesq_wb": base[i] + float(rng.normal(0, 0.05))} for i in ids},  # no stoi at all
    }
    rows = S.compare_variants(per_variant, ["pesq_wb", "stoi"], seed=0)
    assert [(r["metric"], r["a"], r["b"]) for r in rows] == [
        ("pesq_wb", "A", "B"),
        ("pesq_wb", "A", "C"),
        ("pesq_wb", "B", "C"),
        ("stoi", "A", "B"),
        ("stoi", "A", "C"),
        ("stoi", "B", "C"),
    ]
    for r in rows:
        if r["p_value"] is not None:
            assert r["p_adjusted"] == min(1.0, 3 * r["p_value"])
            assert r["significant"] == (r["p_adjusted"] < 0.05)
    ab, ac, bc = rows[:3]
    assert ab["significant"] and ac["significant"] and ab["effect_size"] == 1.0
    assert ab["diff_ci95_low"] < ab["mean_difference"] < ab["diff_ci95_high"]
    assert ab["mean_difference"] == pytest.approx(0.5, abs=0.05)
    assert not bc["significant"] and bc["p_adjusted"] == min(1.0, 3 * bc["p_value"])
    stoi_ab, stoi_ac = rows[3], rows[4]
    assert stoi_ab["significant"] and stoi_ab["n_pairs"] == 30
    assert stoi_ac["n_pairs"] == 0 and stoi_ac["n_excluded"] == 30 and stoi_ac["p_adjusted"] is None
    assert not stoi_ac["significant"]
    assert rows == S.compare_variants(per_variant, ["pesq_wb", "stoi"], seed=0)
    shuffled = {}
    for k, (name, items) in enumerate(per_variant.items()):  # same variant order, shuffled item order
        order = list(items)
        random.Random(k).shuffle(order)
        shuffled[name] = {i: items[i] for i in order}
    assert S.compare_variants(shuffled, ["pesq_wb", "stoi"], seed=0) == rows


def test_bonferroni_caps_at_one():
    # x - y = [1, -2, 3, -4, 5, -6, 7, -8]: T+ = 16, T- = 20, exact p ~ 0.84, so 3p > 1
    x = {f"i{k}": float((k + 1) * (-1) ** k) for k in range(8)}
    y = dict.fromkeys(x, 0.0)
    rows = S.compare_variants(
        {
            "x": {i: {"m": v} for i, v in x.items()},
            "y": {i: {"m": v} for i, v in y.items()},
            "z": {i: {"m": v} for i, v in x.items()},
        },
        ["m"],
        seed=0,
    )
    xy, xz, yz = rows
    assert xy["p_value"] > 1 / 3 and xy["p_adjusted"] == 1.0 and not xy["significant"]
    assert xz["p_value"] is None and xz["p_adjusted"] is None  # identical: nothing to test
    assert yz["p_value"] == xy["p_value"] and yz["effect_size"] == -xy["effect_size"]


def test_markdown_table():
    rows = [
        {"variant": "audio|only", "pesq_wb": 2.345, "n": 10, "p": 0.00123, "sig": True},
        {"variant": "thermal", "pesq_wb": None, "n": 9, "p": float("nan"), "sig": False},
    ]
    table = S.markdown_table(
        rows,
        ["variant", "pesq_wb", "n", "p", "sig"],
        floatfmt={"p": ".3g"},
        headers=["Variant", "PESQ-WB", "N", "p", "Significant"],
    )
    assert table == (
        "| Variant | PESQ-WB | N | p | Significant |\n"
        "| :--- | ---: | ---: | ---: | :--- |\n"
        "| audio\\|only | 2.35 | 10 | 0.00123 | yes |\n"
        "| thermal | – | 9 | – | no |\n"
    )
    with pytest.raises(ValueError):
        S.markdown_table(rows, ["variant"], headers=["a", "b"])
