"""The study table: every variant and ablation setting over its training seeds, compared with seed variance.

Each (variant, setting) has one result per training seed (see :mod:`tavse.study.experiments`).
A seed's score is its mean over the test mixtures; the table gives the mean ± sd of those
per-seed scores. Comparisons use a **hierarchical bootstrap**: each replicate draws the test
mixtures with replacement (one draw shared by both sides, as the mixtures are the same) and,
independently for each side, its seeds with replacement, and takes the difference of the
seed-averaged means. Both sources of chance are then in the interval: which mixtures were
tested and how each training run happened to go. A test on per-seed means alone (e.g. Welch's
t with 3 seeds each) has 2-4 degrees of freedom and ignores how precisely each seed is measured;
a per-mixture test on one seed each (the ``compare`` stage) ignores the seeds. With one seed a
side the seed term is absent and the bootstrap reduces to the paired per-mixture one: the table
says so. Two-sided p = twice the smaller tail share (+1 smoothing), Bonferroni-corrected over
the comparisons of a family (the variant pairs of the default setting; each ablation setting
against its variant's default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from tavse.study.experiments import SEED_KEY, VariantRun, setting_key

PRIMARY = "si_snri_active"  # gating silence cannot raise it (see the compare stage's report)
TABLE_METRICS = {
    "si_snri": "SI-SNRi (dB)",
    "si_snri_active": "SI-SNRi speech-active (dB)",
    "pesq_wb": "PESQ-WB",
    "estoi": "ESTOI",
}
COMPARED = ("si_snri_active", "si_snri", "estoi")
ALPHA = 0.05


@dataclass
class Setting:
    """One variant under one params setting: its seeds' per-item rows."""

    variant: str
    key: str
    label: str
    seeds: dict[int, list[dict]] = field(default_factory=dict)
    runs: dict[int, str] = field(default_factory=dict)

    def conditions(self) -> list[str]:
        first = next(iter(self.seeds.values()))
        return sorted({r["condition"] for r in first}, key=lambda c: (c != "full", c))

    def matrix(self, metric: str, condition: str = "full", snr: float | None = None) -> tuple[list[str], np.ndarray]:
        """Mixture IDs and a (seeds, mixtures) array of ``metric`` (NaN where it failed)."""
        per_seed = []
        for seed in sorted(self.seeds):
            per_seed.append(
                {
                    r["mix_id"]: r[metric]
                    for r in self.seeds[seed]
                    if r["condition"] == condition and (snr is None or r["snr_db"] == snr)
                }
            )
        ids = sorted(set.intersection(*(set(d) for d in per_seed)))
        vals = np.array([[np.nan if d[i] is None else d[i] for i in ids] for d in per_seed], dtype=np.float64)
        return ids, vals


def label_of(params: dict[str, Any], default: dict[str, Any]) -> str:
    """How ``params`` differ from the default setting's (seed aside): ``fusion=concat``, or ``default``."""
    keys = sorted(k for k in params if k != SEED_KEY and params[k] != default.get(k))
    if not keys:
        return "default"
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={params.get(k)}" for k in keys)


def settings(found: list[VariantRun], default_params: dict[str, dict[str, Any]]) -> list[Setting]:
    """Group variant runs by setting; a (setting, seed) met twice (the same params) is kept once."""
    by_key: dict[tuple[str, str], Setting] = {}
    for vr in found:
        key = setting_key(vr.params)
        s = by_key.setdefault(
            (vr.variant, key), Setting(vr.variant, key, label_of(vr.params, default_params[vr.variant]))
        )
        if vr.seed not in s.seeds:
            s.seeds[vr.seed] = vr.rows
            s.runs[vr.seed] = vr.run
    return sorted(by_key.values(), key=lambda s: (list(default_params).index(s.variant), s.label != "default", s.label))


def seed_scores(s: Setting, metric: str, condition: str = "full", snr: float | None = None) -> np.ndarray:
    """Each seed's mean over the mixtures it scored."""
    _, vals = s.matrix(metric, condition, snr)
    return np.nanmean(vals, axis=1) if vals.size else np.array([])


def mean_sd(scores: np.ndarray) -> dict[str, float | int | None]:
    n = int(scores.size)
    return {
        "n_seeds": n,
        "mean": float(scores.mean()) if n else None,
        "sd": float(scores.std(ddof=1)) if n > 1 else None,
    }


def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, seed: int, n_boot: int = 2000) -> dict[str, float]:
    """Difference of seed-averaged means, ``a`` minus ``b``: (seeds, mixtures) arrays over the same mixtures.

    Mixtures with a missing value on either side are left out. Returns the observed difference,
    its 95 % interval and the two-sided p (see the module notes).
    """
    keep = ~(np.isnan(a).any(0) | np.isnan(b).any(0))
    a, b = a[:, keep], b[:, keep]
    n, ka, kb = a.shape[1], a.shape[0], b.shape[0]
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1 / n), size=n_boot) / n  # (B, n) mixture weights, shared
    sa = rng.multinomial(ka, np.full(ka, 1 / ka), size=n_boot) / ka  # (B, ka) seed weights
    sb = rng.multinomial(kb, np.full(kb, 1 / kb), size=n_boot) / kb
    diff = ((w @ a.T) * sa).sum(1) - ((w @ b.T) * sb).sum(1)
    observed = float(a.mean() - b.mean())
    low, high = np.quantile(diff, [ALPHA / 2, 1 - ALPHA / 2])
    tail = min((diff <= 0).sum(), (diff >= 0).sum())
    p = min(1.0, 2 * (int(tail) + 1) / (n_boot + 1))
    return {
        "effect": observed,
        "ci95_low": float(low),
        "ci95_high": float(high),
        "p": p,
        "n_mixtures": int(n),
        "seeds_a": int(ka),
        "seeds_b": int(kb),
    }


def _compare(pairs: list[tuple[Setting, Setting]], seed: int, n_boot: int) -> list[dict]:
    out: list[dict[str, Any]] = []
    for a, b in pairs:
        for metric in COMPARED:
            ids_a, ma = a.matrix(metric)
            ids_b, mb = b.matrix(metric)
            common = sorted(set(ids_a) & set(ids_b))
            ma = ma[:, [ids_a.index(i) for i in common]]
            mb = mb[:, [ids_b.index(i) for i in common]]
            res = hierarchical_bootstrap(ma, mb, seed, n_boot)
            out.append({"a": f"{a.variant} ({a.label})", "b": f"{b.variant} ({b.label})", "metric": metric, **res})
    family = max(1, len(pairs))
    for r in out:
        r["p_bonferroni"] = float(min(1.0, r["p"] * family))
        r["significant"] = bool(r["p_bonferroni"] < ALPHA)
    return out


def study(
    found: list[VariantRun], default_params: dict[str, dict[str, Any]], snrs_db: list[float], seed: int, n_boot: int
) -> dict:
    """The table's content: one row per (variant, setting, condition), and the comparisons."""
    groups = settings(found, default_params)
    rows = []
    for s in groups:
        for cond in s.conditions():
            row: dict[str, Any] = {
                "variant": s.variant,
                "setting": s.label,
                "condition": cond,
                "seeds": sorted(s.seeds),
                "runs": [s.runs[k] for k in sorted(s.runs)],
            }
            for m in TABLE_METRICS:
                row[m] = mean_sd(seed_scores(s, m, cond))
            row["si_snri_by_snr"] = {f"{snr:+g}": mean_sd(seed_scores(s, "si_snri", cond, snr)) for snr in snrs_db}
            rows.append(row)
    defaults = [s for s in groups if s.label == "default"]
    main = _compare(list(combinations(defaults, 2)), seed, n_boot)
    by_variant = {s.variant: s for s in defaults}
    ablated = _compare(
        [(s, by_variant[s.variant]) for s in groups if s.label != "default" and s.variant in by_variant], seed, n_boot
    )
    return {
        "primary": PRIMARY,
        "rows": rows,
        "variant_comparisons": main,
        "ablation_comparisons": ablated,
        "method": "hierarchical bootstrap over training seeds and test mixtures (tavse.study.table)",
        "n_boot": n_boot,
    }


def _ms(x: dict, digits: int) -> str:
    if x["mean"] is None:
        return "–"
    return f"{x['mean']:.{digits}f}" + (f" ± {x['sd']:.{digits}f}" if x["sd"] is not None else "")


def markdown(result: dict, snrs_db: list[float]) -> str:
    """The study table and its comparisons as markdown."""
    snr_cols = [f"{s:+g}" for s in snrs_db]
    head = [
        "variant",
        "setting",
        "condition",
        "seeds",
        *TABLE_METRICS.values(),
        *(f"SI-SNRi @ {c} dB" for c in snr_cols),
    ]
    lines = [
        "# Study table",
        "",
        "Mean ± sd over training seeds of each seed's mean over the test mixtures (sd needs 2 seeds or more).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["rows"]:
        cells = [
            r["variant"],
            r["setting"],
            r["condition"],
            ",".join(map(str, r["seeds"])),
            *(_ms(r[m], 3 if m in ("estoi",) else 2) for m in TABLE_METRICS),
            *(_ms(r["si_snri_by_snr"][c], 2) for c in snr_cols),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for title, key in (
        ("Variants compared (default setting)", "variant_comparisons"),
        ("Each ablation setting against its variant's default", "ablation_comparisons"),
    ):
        comps = result[key]
        if not comps:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            f"Difference a − b, 95 % interval and p from a {result['method']} ({result['n_boot']} replicates); "
            "p Bonferroni-corrected over the pairs of this table. A side with one seed contributes no seed variance.",
            "",
            "| a | b | metric | seeds a/b | effect | 95 % interval | p (corrected) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in comps:
            star = " *" if c["significant"] else ""
            lines.append(
                f"| {c['a']} | {c['b']} | {c['metric']} | {c['seeds_a']}/{c['seeds_b']} | {c['effect']:+.2f} | "
                f"[{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}] | {_fmt_p(c['p_bonferroni'])}{star} |"
            )
    return "\n".join(lines) + "\n"


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def plot_by_snr(result: dict, snrs_db: list[float], path) -> None:
    """SI-SNRi per input SNR, mean ± sd over seeds, one line per (variant, setting), full condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tavse.common.io import atomic_path

    cols = [f"{s:+g}" for s in snrs_db]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in (r for r in result["rows"] if r["condition"] == "full"):
        means = [r["si_snri_by_snr"][c]["mean"] for c in cols]
        sds = [r["si_snri_by_snr"][c]["sd"] or 0.0 for c in cols]
        ax.errorbar(
            snrs_db,
            means,
            yerr=sds,
            marker="o",
            ms=3,
            capsize=3,
            label=f"{r['variant']} ({r['setting']}, {len(r['seeds'])} seed{'s' if len(r['seeds']) > 1 else ''})",
        )
    ax.set_xlabel("input SNR (dB)")
    ax.set_ylabel("SI-SNRi (dB), mean ± sd over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def html_section(result: dict, snrs_db: list[float], chart_png: bytes) -> str:
    """The study table, its comparisons and the per-SNR chart as one report-page section."""
    from tavse.evaluation.page import data_uri, e, table

    def ms(x: dict, digits: int) -> str:
        return e(_ms(x, digits))

    cols = [f"{s:+g}" for s in snrs_db]
    rows = [
        [
            e(r["variant"]),
            e(r["setting"]),
            e(r["condition"]),
            e(",".join(map(str, r["seeds"]))),
            *(ms(r[m], 3 if m == "estoi" else 2) for m in TABLE_METRICS),
            *(ms(r["si_snri_by_snr"][c], 2) for c in cols),
        ]
        for r in result["rows"]
    ]
    out = [
        f"<p>Every variant and ablation setting over its training seeds: mean ± sd of each seed's mean over the "
        f"test mixtures ({e(result['method'])}; <code>python -m tavse.study table</code>, "
        f"<code>ablations.yaml</code>).</p>",
        table(
            [
                "variant",
                "setting",
                "condition",
                "seeds",
                *map(e, TABLE_METRICS.values()),
                *(f"SI-SNRi @ {c} dB" for c in cols),
            ],
            rows,
        ),
        f'<img alt="SI-SNRi per input SNR, mean and sd over seeds" src="{data_uri("image/png", chart_png)}">',
    ]
    for title, key in (
        ("Variants compared (default setting)", "variant_comparisons"),
        ("Each ablation setting against its variant's default", "ablation_comparisons"),
    ):
        comps = result[key]
        if comps:
            out.append(f"<h3>{e(title)}</h3>")
            out.append(
                table(
                    ["a", "b", "metric", "seeds a/b", "a − b", "95% interval", "p (Bonferroni)"],
                    [
                        [
                            e(c["a"]),
                            e(c["b"]),
                            e(c["metric"]),
                            f"{c['seeds_a']}/{c['seeds_b']}",
                            f"{c['effect']:+.2f}",
                            f"[{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}]",
                            f"<strong>{_fmt_p(c['p_bonferroni'])}</strong>"
                            if c["significant"]
                            else _fmt_p(c["p_bonferroni"]),
                        ]
                        for c in comps
                    ],
                )
            )
    return "".join(out)
