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
from tavse.corpus.noise_kinds import KINDS
from tavse.evaluation.stats import group_summary

# si_snri_active: SI-SNR improvement on the target's speech-active samples only (gating silence
# cannot raise it); silence_atten_db: output over input energy where the target is silent;
# delta_*: the enhanced score minus the noisy input's score on the same mixture (< 0: worse than
# doing nothing).
METRICS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_snr", "si_snri", "sdr",
           "si_snri_active", "silence_atten_db", "delta_pesq_wb", "delta_estoi")
ITEM_FIELDS = ("mix_id", "utt_id", "speaker", "snr_db", "noise_env", "noise_kind", "system", "condition", *METRICS,
               "failures")
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
        w.writerow({k: ("" if r.get(k) is None else json.dumps(r[k], sort_keys=True) if k == "failures" else r[k])
                    for k in ITEM_FIELDS})
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


def _kinds(groups: dict) -> list[str]:
    """The noise kinds under fixed keys, in KINDS order (so every variant's metrics.json has the same
    keys), then any other kind found (sorted)."""
    return [*KINDS, *sorted(k for k in groups if k not in KINDS)]


def summarise(rows: list[dict], seed: int, n_boot: int, snrs_db: list[float] | None = None) -> tuple[dict, dict]:
    """(DVC metrics, full summary) per system key (``system`` or ``system/condition``).

    The full summary (``summary.json``) has, per metric, ``overall``, ``by_snr`` (``"+5"``),
    ``by_noise`` (environment) and ``by_noise_kind`` (``stationary``/``transient``/``babble``),
    each with n, mean, std, median and the 95 % bootstrap CI. The DVC metrics (``metrics.json``)
    hold means only: ``overall`` for every key, and for the full condition also ``snr<+g>`` per
    SNR (those of ``snrs_db`` when given, so every variant has the same keys) and
    ``kind_<kind>`` per noise kind (a group with no item is null).
    """
    full, headline = {}, {}
    for (system, condition) in sorted({(r["system"], r["condition"]) for r in rows}):
        sel = [r for r in rows if r["system"] == system and r["condition"] == condition]
        key = system if condition == "full" else f"{system}/{condition}"
        full[key] = {}
        headline[key] = {}
        for m in METRICS:
            by_snr = {f"{k:+g}": v for k, v in group_summary(sel, m, "snr_db", seed, n_boot).items()}
            by_kind = group_summary(sel, m, "noise_kind", seed, n_boot)
            full[key][m] = {"overall": group_summary(sel, m, None, seed, n_boot)["all"], "by_snr": by_snr,
                            "by_noise": group_summary(sel, m, "noise_env", seed, n_boot),
                            "by_noise_kind": by_kind}
            head = {"overall": full[key][m]["overall"]["mean"]}
            if condition == "full":
                snr_keys = list(by_snr) if snrs_db is None else [f"{s:+g}" for s in snrs_db]
                head.update({f"snr{k}": by_snr[k]["mean"] if k in by_snr else None for k in snr_keys})
                head.update({f"kind_{k}": by_kind[k]["mean"] if k in by_kind else None for k in _kinds(by_kind)})
            headline[key][m] = head
    return headline, full


def write_results(out: Path, rows: list[dict], seed: int, n_boot: int, plot_system: str | None = None,
                  snrs_db: list[float] | None = None) -> dict:
    """items.csv, metrics.json (DVC metrics), summary.json and si_snri_by_snr.csv into ``out``."""
    headline, full = rounded(summarise(rows, seed, n_boot, snrs_db))
    write_items(out / "items.csv", rows)
    write_json(out / "metrics.json", headline)
    write_json(out / "summary.json", full)
    if plot_system is not None:
        by_snr = full[plot_system]["si_snri"]["by_snr"]
        lines = ["snr_db,si_snri,ci95_low,ci95_high"] + [
            f"{k},{v['mean']:.4f},{v['ci95_low']:.4f},{v['ci95_high']:.4f}" for k, v in by_snr.items()]
        with atomic_path(out / "si_snri_by_snr.csv") as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    log.info("%s: %s", out, headline_text(headline))
    return headline


def headline_text(headline: dict) -> str:
    """The headline numbers of each full-input system (not the missing-modality conditions), one line."""
    def number(metrics: dict, key: str, fmt: str) -> str:
        value = metrics.get(key, {}).get("overall")
        return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

    return "; ".join(f"{system}: SI-SNRi {number(m, 'si_snri', '.2f')} dB, speech-active "
                     f"{number(m, 'si_snri_active', '.2f')} dB, ESTOI {number(m, 'estoi', '.3f')}"
                     for system, m in headline.items() if "/" not in system)
