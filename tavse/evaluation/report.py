"""``compare``: paired statistics between variants and the results tables a person can paste.

Reads each variant's per-item rows (``results/<variant>/items.csv``) and the reference rows,
pairs items by mixture ID, and writes ``results/compare.json`` (every test; not DVC metrics),
``results/compare.md`` (the Wilcoxon table) and ``results/report.md`` (the results table per
system and SNR with 95 % CIs, the noisy floor and the oracle ceiling, missing-modality rows; per
variant, per noise kind and per input SNR, the figures that separate removing noise from gating
silence beside the noisy input and the oracle; and a flag for every case where a system is worse
than its own noisy input).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tavse.common.config import Config
from tavse.common.io import atomic_path, write_json
from tavse.corpus.noise_kinds import KINDS
from tavse.evaluation.results import METRICS, read_items, rounded
from tavse.evaluation.stats import compare_variants, markdown_table

log = logging.getLogger("tavse.compare")

HEADLINE = ("si_snri", "si_snri_active", "pesq_wb", "estoi", "stoi", "sdr")  # the results table, overall
# Paired tests shown in compare.md (compare.json holds them for every metric).
TESTED = ("si_snri", "si_snri_active", "pesq_wb", "delta_pesq_wb", "estoi", "delta_estoi", "stoi", "sdr")
# The per-variant table against the noisy input and the oracle.
AGAINST_INPUT = {
    "si_snri": "SI-SNRi (dB)",
    "si_snri_active": "SI-SNRi speech-active (dB)",
    "silence_atten_db": "silence atten. (dB)",
    "delta_pesq_wb": "ΔPESQ-WB",
    "delta_estoi": "ΔESTOI",
}
# A mean below 0 of these says the system is worse than its own noisy input.
WORSE_BELOW_ZERO = {"delta_estoi": "ΔESTOI", "delta_pesq_wb": "ΔPESQ-WB", "si_snri_active": "SI-SNRi speech-active"}
NOISY, ORACLE = "noisy (input)", "oracle IRM (ceiling)"

EXPLANATION = (
    "**What the SI-SNR figures measure.** SI-SNRi is computed over the whole utterance, its "
    "target-silent stretches included (about half of each test utterance), so it also rewards a system that "
    "merely attenuates those stretches, as a voice-activity gate does, without removing any noise from the "
    "speech. *SI-SNRi speech-active* scores only the samples where the clean target is speech-active (20 ms "
    "frames within 40 dB of its loudest frame): attenuating silence cannot raise it. *Silence atten.* is that "
    "gating itself, the output's energy over the noisy input's on the target-silent samples (0 dB: passed "
    "through; negative: attenuated). ΔPESQ-WB and ΔESTOI are the enhanced score minus the noisy input's on "
    "the same mixture; ESTOI ignores silent frames, so ΔESTOI sees only what happens inside speech. "
    "Below 0, any of ΔESTOI, ΔPESQ-WB and SI-SNRi speech-active means the output is worse than the input "
    "it was given.\n"
)


def _ci(s: dict | None) -> str:
    if s is None or s["mean"] is None:
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


def groups(metric_summary: dict, snrs: list[str], kinds: list[str]) -> list[tuple[str, dict | None]]:
    """``(condition label, statistics)`` of one metric's summary: overall, per noise kind, per input SNR."""
    out: list[tuple[str, dict | None]] = [("overall", metric_summary["overall"])]
    out += [(f"noise kind {k}", metric_summary.get("by_noise_kind", {}).get(k)) for k in kinds]
    out += [(f"SNR {snr} dB", metric_summary["by_snr"].get(snr)) for snr in snrs]
    return out


def noise_kinds(summaries: dict[str, dict]) -> list[str]:
    """The noise kinds present in any summary, KINDS first."""
    found = {k for s in summaries.values() for m in s.values() for k in m.get("by_noise_kind", {})}
    return [k for k in KINDS if k in found] + sorted(found - set(KINDS))


def is_worse(metric: str, stat: dict | None) -> bool:
    """Whether ``stat`` (a summary group) of ``metric`` says the system is worse than its noisy input."""
    return metric in WORSE_BELOW_ZERO and stat is not None and stat["mean"] is not None and stat["mean"] < 0


def against_input_table(name: str, summary: dict, noisy: dict, oracle: dict, snrs: list[str], kinds: list[str]) -> str:
    """Markdown: per condition (overall, noise kind, SNR) the system, the noisy input and the oracle
    side by side on AGAINST_INPUT; a cell worse than the noisy input is in bold."""
    rows = []
    labels = [label for label, _ in groups(summary["si_snri"], snrs, kinds)]
    per_system = {
        sys_name: {m: dict(groups(s[m], snrs, kinds)) for m in AGAINST_INPUT}
        for sys_name, s in ((name, summary), (NOISY, noisy), (ORACLE, oracle))
    }
    for label in labels:
        for sys_name, stats in per_system.items():
            row = {"condition": label, "system": sys_name}
            for m, header in AGAINST_INPUT.items():
                stat = stats[m][label]
                row[header] = f"**{_ci(stat)}**" if sys_name != NOISY and is_worse(m, stat) else _ci(stat)
            row["n"] = (stats["si_snri"][label] or {}).get("n", 0)
            rows.append(row)
    return markdown_table(rows, list(rows[0]))


def worse_than_input(summaries: dict[str, dict], snrs: list[str], kinds: list[str]) -> list[dict]:
    """Every (system, metric, condition) whose mean of a WORSE_BELOW_ZERO metric is below 0.

    ``summaries`` maps a system name to its summary (``summary.json`` entry); the noisy input
    itself is skipped. Rows: system, metric, condition, mean, ci95_low, ci95_high, n and
    ``ci_below_zero`` (the whole 95 % CI is below 0).
    """
    flags = []
    for system, s in summaries.items():
        if system == NOISY:
            continue
        for metric in WORSE_BELOW_ZERO:
            for label, stat in groups(s[metric], snrs, kinds):
                if is_worse(metric, stat):
                    flags.append(
                        {
                            "system": system,
                            "metric": WORSE_BELOW_ZERO[metric],
                            "condition": label,
                            "mean": stat["mean"],
                            "ci95_low": stat["ci95_low"],
                            "ci95_high": stat["ci95_high"],
                            "ci_below_zero": stat["ci95_high"] is not None and stat["ci95_high"] < 0,
                            "n": stat["n"],
                        }
                    )
    return flags


def flags_section(flags: list[dict]) -> str:
    """Markdown for :func:`worse_than_input`'s rows (or a line saying there are none)."""
    if not flags:
        return (
            "No system is worse than its noisy input on ΔESTOI, ΔPESQ-WB or SI-SNRi speech-active, in any condition.\n"
        )
    return (
        f"**FLAG: {len(flags)} (system, metric, condition) cells where a system is worse than its noisy "
        "input** (mean below 0; `CI below 0` = the whole 95 % CI is):\n\n"
        + markdown_table(
            flags,
            ["system", "metric", "condition", "mean", "ci95_low", "ci95_high", "ci_below_zero", "n"],
            headers=["system", "metric", "condition", "mean", "CI low", "CI high", "CI below 0", "n"],
        )
    )


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
