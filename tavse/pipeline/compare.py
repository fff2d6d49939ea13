"""Stage ``compare``: paired statistics between variants, and the results tables.

Reads each variant's per-item rows (``results/<variant>/items.csv``) and the reference rows,
pairs items by mixture ID, and writes ``results/compare.json`` (every test; not DVC metrics),
``results/compare.md`` (the Wilcoxon table) and ``results/report.md`` (the tables of
:mod:`tavse.evaluation.report`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tavse.common.config import Config
from tavse.common.io import atomic_path, write_json
from tavse.evaluation.report import (
    EXPLANATION,
    NOISY,
    ORACLE,
    TESTED,
    against_input_table,
    flags_section,
    noise_kinds,
    results_table,
    worse_than_input,
)
from tavse.evaluation.results import METRICS, read_items, rounded
from tavse.evaluation.stats import compare_variants, markdown_table

log = logging.getLogger("tavse.compare")


def run(cfg: Config) -> dict:
    """Wilcoxon tests between every pair of variants (full condition) and the tables; returns the tests."""
    out = Path(cfg.evaluation.out_dir)
    variants = list(cfg.variants)
    per_variant = {}
    summaries: dict[str, dict] = {}
    ref = json.loads((out / "reference" / "summary.json").read_text())
    summaries[NOISY] = ref["noisy"]
    for v in variants:
        rows = read_items(out / v / "items.csv")
        per_variant[v] = {r["mix_id"]: {m: r[m] for m in METRICS} for r in rows if r["condition"] == "full"}
        summary = json.loads((out / v / "summary.json").read_text())
        for key, s in summary.items():
            summaries[key] = s
    summaries[ORACLE] = ref["oracle_irm"]
    tests = rounded(compare_variants(per_variant, METRICS, cfg.seed, n_boot=cfg.evaluation.bootstrap))
    metrics: dict[str, dict[str, dict]] = {t["metric"]: {} for t in tests}
    for t in tests:
        metrics[t["metric"]][f"{t['a']}_vs_{t['b']}"] = {
            "median_difference": t["median_difference"],
            "mean_difference": t["mean_difference"],
            "diff_ci95_low": t["diff_ci95_low"],
            "diff_ci95_high": t["diff_ci95_high"],
            "effect_size": t["effect_size"],
            "p_value": t["p_value"],
            "p_adjusted": t["p_adjusted"],
            "significant": t["significant"],
            "n_pairs": t["n_pairs"],
        }
    write_json(out / "compare.json", metrics)
    cols = [
        "metric",
        "a",
        "b",
        "n_pairs",
        "median_difference",
        "diff_ci95_low",
        "diff_ci95_high",
        "effect_size",
        "p_value",
        "p_adjusted",
        "significant",
    ]
    compare_md = (
        "Paired Wilcoxon signed-rank tests by mixture ID (a − b), Bonferroni-corrected over "
        f"{len(variants) * (len(variants) - 1) // 2} variant pairs per metric; effect size = matched-pairs "
        "rank-biserial correlation.\n\n"
        + markdown_table(
            sorted((t for t in tests if t["metric"] in TESTED), key=lambda t: TESTED.index(t["metric"])),
            cols,
            floatfmt={"p_value": ".2e", "p_adjusted": ".2e"},
        )
        + "\n"
    )
    snrs = [f"{s:+g}" for s in cfg.evaluation.snrs_db]
    kinds = noise_kinds(summaries)
    against = "".join(
        f"### {v}\n\n" + against_input_table(v, summaries[v], ref["noisy"], ref["oracle_irm"], snrs, kinds) + "\n"
        for v in variants
    )
    report = (
        "# TAVSE results\n\nMean [95% bootstrap CI] on the frozen test mixtures "
        f"(`{cfg.evaluation.test_mixtures}`); `x/no_rgb` = variant x with that stream zeroed.\n\n"
        + results_table(summaries, snrs)
        + "\n"
        + EXPLANATION
        + "\n## Worse than the noisy input\n\n"
        + flags_section(worse_than_input(summaries, snrs, kinds))
        + "\n## Against the noisy input and the oracle, per noise kind and input SNR\n\n"
        "Each variant (all streams) beside the noisy input (floor) and the oracle IRM (ceiling) on the same "
        "mixtures; mean [95% bootstrap CI]; a **bold** cell is worse than the noisy input.\n\n"
        + against
        + "\n## Paired comparisons\n\n"
        + compare_md
    )
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_md)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(report)
    shown = [t for t in tests if t["metric"] in TESTED]
    log.info(
        "compare done: %s, %s, %s; %d of %d paired tests significant after correction",
        out / "report.md",
        out / "compare.md",
        out / "compare.json",
        sum(bool(t["significant"]) for t in shown),
        len(shown),
    )
    return metrics
