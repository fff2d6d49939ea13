"""The study table's statistics: seeds pooled per setting, the hierarchical bootstrap, the markdown."""

import numpy as np
import pytest

from tavse.study import table
from tavse.study.experiments import VariantRun


def _rows(values, condition="full", snrs=(-5.0, 5.0)):
    return [
        {
            "mix_id": f"m{i}",
            "condition": condition,
            "snr_db": snrs[i % len(snrs)],
            "si_snri": v,
            "si_snri_active": v - 1,
            "pesq_wb": 1.5,
            "estoi": 0.6,
        }
        for i, v in enumerate(values)
    ]


def test_identical_sides_give_no_effect_and_p_one():
    a = np.random.default_rng(0).normal(3, 1, (3, 40))
    res = table.hierarchical_bootstrap(a, a.copy(), seed=1)
    assert res["effect"] == 0 and res["p"] == 1.0
    assert res["ci95_low"] <= 0 <= res["ci95_high"]


def test_a_clear_difference_is_significant_and_deterministic():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 60)
    a = base + 1.0 + rng.normal(0, 0.1, (3, 60))
    b = base + rng.normal(0, 0.1, (3, 60))
    r1, r2 = table.hierarchical_bootstrap(a, b, seed=4), table.hierarchical_bootstrap(a, b, seed=4)
    assert r1 == r2
    assert r1["p"] < 0.01 and 0.8 < r1["ci95_low"] < r1["effect"] < r1["ci95_high"] < 1.2


def test_seed_variance_widens_the_interval_and_one_seed_has_none():
    """The same per-mixture spread, but seeds that disagree by ±1 dB: the interval must grow."""
    rng = np.random.default_rng(2)
    mix = rng.normal(0, 1, 50)
    b = np.stack([mix, mix, mix])
    calm = np.stack([mix + 0.5] * 3)
    shaky = np.stack([mix + 0.5 - 1.0, mix + 0.5, mix + 0.5 + 1.0])

    def width(a):
        r = table.hierarchical_bootstrap(a, b, 3)
        return r["ci95_high"] - r["ci95_low"]

    assert width(shaky) > 5 * width(calm)
    one = table.hierarchical_bootstrap(calm[:1], b[:1], 3)
    assert one["seeds_a"] == one["seeds_b"] == 1 and one["effect"] == pytest.approx(0.5)


def test_seeds_of_a_setting_are_pooled_and_duplicates_kept_once():
    default = {"train.seed": 1, "variants.v.fusion": "film"}
    found = [
        VariantRun("workspace", "v", default, 1, _rows([1.0, 2.0])),
        VariantRun("seeds-s2", "v", {**default, "train.seed": 2}, 2, _rows([3.0, 4.0])),
        VariantRun("fusion-film-s1", "v", default, 1, _rows([9.0, 9.0])),  # same params+seed: the same run
        VariantRun("fusion-concat-s1", "v", {**default, "variants.v.fusion": "concat"}, 1, _rows([0.0, 0.0])),
    ]
    groups = table.settings(found, {"v": default})
    assert [(g.label, sorted(g.seeds)) for g in groups] == [("default", [1, 2]), ("fusion=concat", [1])]
    assert groups[0].runs == {1: "workspace", 2: "seeds-s2"}
    scores = table.seed_scores(groups[0], "si_snri")
    assert list(scores) == [1.5, 3.5]
    ms = table.mean_sd(scores)
    assert ms["mean"] == 2.5 and ms["sd"] == pytest.approx(np.sqrt(2))


def test_study_rows_per_condition_and_snr_and_the_markdown():
    default = {"train.seed": 1}
    rows = _rows([2.0, 4.0]) + _rows([1.0, 1.0], condition="no_rgb")
    found = [
        VariantRun("workspace", "av", default, 1, rows),
        VariantRun("workspace", "a", default, 1, _rows([1.0, 2.0])),
        VariantRun("seeds-s2", "av", {"train.seed": 2}, 2, rows),
        VariantRun("seeds-s2", "a", {"train.seed": 2}, 2, _rows([1.0, 2.0])),
    ]
    res = table.study(found, {"a": default, "av": default}, [-5.0, 5.0], seed=0, n_boot=200)
    got = {(r["variant"], r["condition"]): r for r in res["rows"]}
    assert set(got) == {("a", "full"), ("av", "full"), ("av", "no_rgb")}
    assert got[("av", "full")]["si_snri_by_snr"]["-5"]["mean"] == 2.0
    assert got[("av", "full")]["si_snri_by_snr"]["+5"]["mean"] == 4.0
    comps = [c for c in res["variant_comparisons"] if c["metric"] == "si_snri"]
    assert len(comps) == 1 and comps[0]["effect"] == pytest.approx(-1.5)  # a − av
    md = table.markdown(res, [-5.0, 5.0])
    assert "| av | default | no_rgb | 1,2 |" in md and "hierarchical bootstrap" in md
