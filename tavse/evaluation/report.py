"""The results tables a person can paste (Markdown), for ``results/report.md`` and the report page.

The results table per system and SNR with 95 % CIs, the noisy floor and the oracle ceiling,
missing-modality rows; per variant, per noise kind and per input SNR, the figures that separate
removing noise from gating silence beside the noisy input and the oracle; and a flag for every
case where a system is worse than its own noisy input. The ``compare`` stage
(:mod:`tavse.pipeline.compare`) writes them.
"""

from __future__ import annotations

import logging

from tavse.corpus.noise_kinds import KINDS
from tavse.evaluation.stats import markdown_table

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
                    assert stat is not None  # is_worse is False for None
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
