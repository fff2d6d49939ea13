"""``compare``: paired statistics between variants and the results tables a person can paste.

Reads each variant's per-item rows (``results/<variant>/items.csv``) and the reference rows,
pairs items by mixture ID, and writes ``results/compare.json`` (DVC metrics),
``results/compare.md`` (the Wilcoxon table) and ``results/report.md`` (the results table per
system and SNR with 95 % CIs, the noisy floor and the oracle ceiling, missing-modality rows).
"""

from __future__ import annotations

import json
from pathlib import Path

from tavse.common.config import Config
from tavse.evaluation.results import METRICS, read_items, rounded
from tavse.evaluation.stats import compare_variants, markdown_table
from tavse.common.io import atomic_path, write_json

HEADLINE = ("si_snri", "pesq_wb", "estoi", "stoi", "sdr")


def _ci(s: dict) -> str:
    if s["mean"] is None:
        return "–"
    return f"{s['mean']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]"


def results_table(summaries: dict[str, dict], snrs: list[str]) -> str:
    """Markdown: one row per system (and missing-modality condition); SI-SNRi per SNR, headline metrics overall."""
    rows = []
    for system, s in summaries.items():
        row = {"system": system}
        for snr in snrs:
            row[f"SI-SNRi @ {snr} dB"] = _ci(s["si_snri"]["by_snr"][snr]) if snr in s["si_snri"]["by_snr"] else "–"
        for m in HEADLINE:
            row[m] = _ci(s[m]["overall"])
        row["n"] = s["si_snri"]["overall"]["n"]
        rows.append(row)
    return markdown_table(rows, list(rows[0]))


def compare(cfg: Config) -> dict:
    """Wilcoxon tests between every pair of variants (full condition), tables, DVC metrics."""
    out = Path(cfg.evaluation.out_dir)
    variants = list(cfg.variants)
    per_variant = {}
    summaries: dict[str, dict] = {}
    ref = json.loads((out / "reference" / "summary.json").read_text())
    summaries["noisy (input)"] = ref["noisy"]
    for v in variants:
        rows = read_items(out / v / "items.csv")
        per_variant[v] = {r["mix_id"]: {m: r[m] for m in METRICS} for r in rows if r["condition"] == "full"}
        summary = json.loads((out / v / "summary.json").read_text())
        for key, s in summary.items():
            summaries[key] = s
    summaries["oracle IRM (ceiling)"] = ref["oracle_irm"]
    tests = rounded(compare_variants(per_variant, METRICS, cfg.seed, n_boot=cfg.evaluation.bootstrap))
    metrics = {t["metric"]: {} for t in tests}
    for t in tests:
        metrics[t["metric"]][f"{t['a']}_vs_{t['b']}"] = {
            "median_difference": t["median_difference"], "effect_size": t["effect_size"],
            "p_adjusted": t["p_adjusted"], "significant": t["significant"], "n_pairs": t["n_pairs"]}
    write_json(out / "compare.json", metrics)
    cols = ["metric", "a", "b", "n_pairs", "median_difference", "diff_ci95_low", "diff_ci95_high", "effect_size",
            "p_value", "p_adjusted", "significant"]
    compare_md = ("Paired Wilcoxon signed-rank tests by mixture ID (a − b), Bonferroni-corrected over "
                  f"{len(variants) * (len(variants) - 1) // 2} variant pairs per metric; effect size = matched-pairs "
                  "rank-biserial correlation.\n\n"
                  + markdown_table([t for t in tests if t["metric"] in HEADLINE], cols,
                                   floatfmt={"p_value": ".2e", "p_adjusted": ".2e"}) + "\n")
    snrs = [f"{s:+g}" for s in cfg.evaluation.snrs_db]
    report = ("# TAVSE results\n\nMean [95% bootstrap CI] on the frozen test mixtures "
              f"(`{cfg.evaluation.test_mixtures}`); `x/no_rgb` = variant x with that stream zeroed.\n\n"
              + results_table(summaries, snrs) + "\n\n## Paired comparisons\n\n" + compare_md)
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_md)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(report)
    return metrics
