"""Per-item result rows and their summaries: the files evaluation writes and ``compare`` reads.

Light on purpose (numpy, scipy; no torch, no models) so that ``compare`` runs only this code.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from tavse.common.io import atomic_path, write_json
from tavse.evaluation.stats import group_summary

# si_snri_active: SI-SNR improvement on the target's speech-active samples only (gating silence
# cannot raise it); silence_atten_db: output over input energy where the target is silent;
# delta_*: the enhanced score minus the noisy input's score on the same mixture (< 0: worse than
# doing nothing).
METRICS = (
    "pesq_wb",
    "pesq_nb",
    "stoi",
    "estoi",
    "si_snr",
    "si_snri",
    "sdr",
    "si_snri_active",
    "silence_atten_db",
    "delta_pesq_wb",
    "delta_estoi",
)
ITEM_FIELDS = (
    "mix_id",
    "utt_id",
    "speaker",
    "snr_db",
    "noise_env",
    "noise_kind",
    "system",
    "condition",
    *METRICS,
    "failures",
)
HEADLINE = ("si_snri", "si_snri_active", "pesq_wb", "estoi")  # the DVC metrics, overall (headline_metrics)
BY_SNR_PLOT = ("si_snri", "si_snri_active")  # si_snri_by_snr.csv: mean and 95 % CI per input SNR (dvc plots)
log = logging.getLogger("tavse.evaluate")

SIGNIFICANT = 10  # digits kept: numpy's SIMD sums differ in the last ulp between processes


def rounded(obj: Any) -> Any:
    """``obj`` with every float cut to SIGNIFICANT digits, so results are byte-identical run to run."""
    if isinstance(obj, float):
        return float(f"{obj:.{SIGNIFICANT}g}")
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(rounded(v) for v in obj)
    return obj


def write_items(path: Path, rows: list[dict]) -> None:
    """Per-item CSV: one row per (mixture, system, condition); empty cell = metric failed (see failures)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ITEM_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                k: ("" if r.get(k) is None else json.dumps(r[k], sort_keys=True) if k == "failures" else r[k])
                for k in ITEM_FIELDS
            }
        )
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def read_items(path: str | Path) -> list[dict]:
    """Rows written by :func:`write_items`, metrics as floats (None where they failed)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for m in METRICS:
            r[m] = float(r[m]) if r[m] != "" else None
        r["snr_db"] = float(r["snr_db"])
        r["failures"] = json.loads(r["failures"]) if r["failures"] else {}
    return rows


def lowest_snr_key(snrs_db: list[float]) -> str:
    """The DVC metric key of SI-SNRi at the lowest input SNR (``si_snri_snr-5``), where gains are largest."""
    return f"si_snri_snr{min(snrs_db):+g}"


def headline_metrics(summary: dict, snrs_db: list[float]) -> dict:
    """The DVC metrics of one system (its full condition's :func:`system_summaries` entry): the means of
    HEADLINE overall and of SI-SNRi at the lowest input SNR (null where that SNR has no item).

    Few and the same keys for every variant, so ``dvc metrics show`` gives each variant a row of
    shared columns; everything else (the other metrics, per SNR, noise kind and environment,
    CIs, missing-modality conditions) is in ``summary.json``.
    """
    out = {m: summary[m]["overall"]["mean"] for m in HEADLINE}
    low = summary["si_snri"]["by_snr"].get(f"{min(snrs_db):+g}")
    out[lowest_snr_key(snrs_db)] = low["mean"] if low else None
    return out


def system_summaries(rows: list[dict], seed: int, n_boot: int, snrs_db: list[float] | None = None) -> tuple[dict, dict]:
    """(DVC metrics, full summary) per system key (``system`` or ``system/condition``).

    The full summary (``summary.json``) has, per metric, ``overall``, ``by_snr`` (``"+5"``),
    ``by_noise`` (environment) and ``by_noise_kind`` (``stationary``/``transient``/``babble``),
    each with n, mean, std, median and the 95 % bootstrap CI. The DVC metrics
    (:func:`headline_metrics`) are there for each system's full condition only, the lowest SNR
    that of ``snrs_db`` when given (so every variant has the same keys), else the lowest found.
    """
    full: dict[str, dict] = {}
    headline = {}
    for system, condition in sorted({(r["system"], r["condition"]) for r in rows}):
        sel = [r for r in rows if r["system"] == system and r["condition"] == condition]
        key = system if condition == "full" else f"{system}/{condition}"
        full[key] = {}
        for m in METRICS:
            by_snr = {f"{k:+g}": v for k, v in group_summary(sel, m, "snr_db", seed, n_boot).items()}
            by_kind = group_summary(sel, m, "noise_kind", seed, n_boot)
            full[key][m] = {
                "overall": group_summary(sel, m, None, seed, n_boot)["all"],
                "by_snr": by_snr,
                "by_noise": group_summary(sel, m, "noise_env", seed, n_boot),
                "by_noise_kind": by_kind,
            }
        if condition == "full":
            headline[system] = headline_metrics(full[key], snrs_db or sorted({r["snr_db"] for r in sel}))
    return headline, full


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_results(
    out: Path,
    rows: list[dict],
    seed: int,
    n_boot: int,
    plot_system: str | None = None,
    snrs_db: list[float] | None = None,
) -> dict:
    """items.csv, metrics.json, summary.json and (for ``plot_system``) si_snri_by_snr.csv into ``out``.

    metrics.json is ``plot_system``'s :func:`headline_metrics` (a variant's DVC metrics); without
    ``plot_system`` (the reference rows) it holds each system's, keyed by system.
    """
    headline, full = rounded(system_summaries(rows, seed, n_boot, snrs_db))
    write_items(out / "items.csv", rows)
    write_json(out / "metrics.json", headline if plot_system is None else headline[plot_system])
    write_json(out / "summary.json", full)
    if plot_system is not None:
        by_snr = {m: full[plot_system][m]["by_snr"] for m in BY_SNR_PLOT}
        header = ["snr_db", *(f"{m}{c}" for m in BY_SNR_PLOT for c in ("", "_ci95_low", "_ci95_high"))]
        lines = [",".join(header)] + [
            ",".join([k, *(_cell(by_snr[m][k][c]) for m in BY_SNR_PLOT for c in ("mean", "ci95_low", "ci95_high"))])
            for k in by_snr["si_snri"]
        ]
        with atomic_path(out / "si_snri_by_snr.csv") as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    log.info("%s: %s", out, headline_text(headline))
    return headline


def headline_text(headline: dict) -> str:
    """The headline numbers of each system (:func:`system_summaries`'s DVC metrics, full input), one line."""

    def number(metrics: dict, key: str, fmt: str) -> str:
        value = metrics.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

    return "; ".join(
        f"{system}: SI-SNRi {number(m, 'si_snri', '.2f')} dB, speech-active "
        f"{number(m, 'si_snri_active', '.2f')} dB, ESTOI {number(m, 'estoi', '.3f')}"
        for system, m in headline.items()
    )
