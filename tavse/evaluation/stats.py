"""Summary statistics, bootstrap CIs and paired significance tests over per-item metrics.

Missing values (None or NaN: a metric that failed on an item) are left out of every
statistic and counted. Statistics that are undefined (e.g. the mean of nothing) are
``None`` so results serialise to JSON as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
_BOOT_CHUNK_ELEMENTS = 2_000_000  # resampled values held at once: bounds memory for large test sets


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _present(values: Iterable[float | None]) -> np.ndarray:
    """The non-missing values as a float64 array."""
    return np.array([float(v) for v in values if v is not None and not _is_missing(v)], dtype=np.float64)


def bootstrap_ci(
    values: Iterable[float | None], seed: int, n_boot: int = 2000, alpha: float = ALPHA
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap ``(1 - alpha)`` confidence interval of the mean, ignoring None/NaN.

    Resamples the present values with replacement ``n_boot`` times using
    ``numpy.random.default_rng(seed)`` (same seed and values, same interval) and takes the
    ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled means. ``(None, None)`` when
    no value is present.
    """
    x = _present(values)
    n = x.size
    if n == 0:
        return None, None
    if n == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        means[start : start + rows] = x[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarize(values: Iterable[float | None], seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """n, n_missing, mean, std (sample, ddof=1), median and the 95 % bootstrap CI of the mean."""
    values = list(values)
    x = _present(values)
    n = int(x.size)
    low, high = bootstrap_ci(x, seed, n_boot)
    return {
        "n": n,
        "n_missing": len(values) - n,
        "mean": float(x.mean()) if n else None,
        "std": float(x.std(ddof=1)) if n > 1 else None,
        "median": float(np.median(x)) if n else None,
        "ci95_low": low,
        "ci95_high": high,
    }


def _sorted_keys(keys: Iterable[Hashable]) -> list[Hashable]:
    """Natural order when comparable (SNRs ascending, names A-Z), else by text, for stable output."""
    keys = list(keys)
    try:
        return sorted(keys)  # type: ignore[type-var]
    except TypeError:
        return sorted(keys, key=repr)


def group_summary(
    rows: Sequence[Mapping[str, Any]], metric: str, by: str | None, seed: int, n_boot: int = 2000
) -> dict[Hashable, dict[str, Any]]:
    """:func:`summarize` of ``row[metric]`` per value of ``row[by]``, groups in sorted order.

    ``by=None`` gives one group, ``"all"``. A row without ``metric`` counts as missing; a
    row without ``by`` is a ``KeyError`` (the grouping column must exist everywhere).
    """
    groups: dict[Hashable, list[float | None]] = {}
    for i, row in enumerate(rows):
        if by is None:
            key: Hashable = "all"
        elif by in row:
            key = row[by]
        else:
            raise KeyError(f"row {i} has no grouping key {by!r}")
        groups.setdefault(key, []).append(row.get(metric))
    return {key: summarize(groups[key], seed, n_boot) for key in _sorted_keys(groups)}


def rank_biserial(differences: np.ndarray) -> float | None:
    """Matched-pairs rank-biserial correlation (Kerby 2014) of paired differences.

    Zero differences are dropped (as in the Wilcoxon test with ``zero_method='wilcox'``);
    the rest are ranked by ``|d|`` with average ranks for ties, giving rank sums ``T+``
    (positive d) and ``T-`` (negative d); r = (T+ − T−) / (T+ + T−), in [−1, 1]. r > 0
    means the first sample tends to be larger. None when every difference is zero.
    """
    d = differences[differences != 0]
    if d.size == 0:
        return None
    ranks = sps.rankdata(np.abs(d))
    t_plus, t_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    return (t_plus - t_minus) / (t_plus + t_minus)


def _paired(
    a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Values of the IDs present in both, in sorted-ID order, and how many IDs were left out."""
    ids = set(a) | set(b)
    paired = _sorted_keys(i for i in ids if not _is_missing(a.get(i)) and not _is_missing(b.get(i)))
    x = np.array([float(a[i]) for i in paired], dtype=np.float64)  # type: ignore[arg-type]
    y = np.array([float(b[i]) for i in paired], dtype=np.float64)  # type: ignore[arg-type]
    return x, y, len(ids) - len(paired)


def paired_wilcoxon(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``a`` vs ``b``, paired by item ID.

    Only IDs present (not None/NaN) in both are paired; the rest of the union of IDs is
    ``n_excluded``. Pairs are taken in sorted-ID order, so dict order never matters. Uses
    ``scipy.stats.wilcoxon`` defaults: zero differences dropped; p exact for n <= 50 without
    ties or zeros, an exhaustive sign-flip permutation test for n <= 13 with them, the
    normal approximation otherwise (all deterministic). ``effect_size`` is
    :func:`rank_biserial` of a − b. Test fields are None when there is no non-zero
    difference to test.

    Returns:
        n_pairs, n_excluded, statistic, p_value, median_difference (a − b), mean_difference,
        effect_size.
    """
    x, y, n_excluded = _paired(a, b)
    d = x - y
    out: dict[str, Any] = {
        "n_pairs": int(d.size),
        "n_excluded": n_excluded,
        "statistic": None,
        "p_value": None,
        "median_difference": float(np.median(d)) if d.size else None,
        "mean_difference": float(d.mean()) if d.size else None,
        "effect_size": rank_biserial(d),
    }
    if np.any(d != 0):  # scipy cannot test an all-zero (or empty) set of differences
        res = sps.wilcoxon(x, y, alternative="two-sided")
        out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


def compare_variants(
    per_variant: Mapping[str, Mapping[Hashable, Mapping[str, float | None]]],
    metrics: Sequence[str],
    seed: int,
    alpha: float = ALPHA,
    n_boot: int = 2000,
) -> list[dict[str, Any]]:
    """Paired Wilcoxon tests for every unordered pair of variants, for each metric.

    ``per_variant[variant][item_id][metric]`` is the per-item value (a missing key counts
    as None). Pairs follow the variants' order (``a`` before ``b`` as given). P-values are
    Bonferroni-corrected within each metric over the number of variant pairs m:
    ``p_adjusted = min(1, p * m)``; ``significant`` is ``p_adjusted < alpha``. ``seed``
    drives the 95 % bootstrap CI of the mean paired difference a − b.

    Returns:
        One row per (metric, a, b): metric, a, b, the :func:`paired_wilcoxon` fields,
        diff_ci95_low/high, p_adjusted, significant.
    """
    pairs = list(combinations(list(per_variant), 2))
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        for va, vb in pairs:
            a = {i: m.get(metric) for i, m in per_variant[va].items()}
            b = {i: m.get(metric) for i, m in per_variant[vb].items()}
            test = paired_wilcoxon(a, b)
            x, y, _ = _paired(a, b)  # sorted-ID order, so dict order cannot change the resamples
            low, high = bootstrap_ci(x - y, seed, n_boot)
            p = test["p_value"]
            p_adj = None if p is None else min(1.0, p * len(pairs))
            rows.append(
                {
                    "metric": metric,
                    "a": va,
                    "b": vb,
                    **test,
                    "diff_ci95_low": low,
                    "diff_ci95_high": high,
                    "p_adjusted": p_adj,
                    "significant": p_adj is not None and p_adj < alpha,
                }
            )
    return rows


def _cell(value: Any, fmt: str) -> str:
    """One table cell: floats with ``fmt``, missing as an en dash, booleans as yes/no, '|' escaped."""
    if _is_missing(value):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), fmt)
    return str(value).replace("|", r"\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    floatfmt: str | Mapping[str, str] = ".2f",
    headers: Sequence[str] | None = None,
) -> str:
    """A GitHub-flavoured markdown table of ``rows`` restricted to ``columns``.

    ``floatfmt`` is a format spec for every float, or a per-column mapping (columns not in
    it use ``.2f``), e.g. ``{"p_adjusted": ".3g"}``. ``headers`` defaults to the column
    names. Numeric columns are right-aligned. Missing values print as "–".
    """
    headers = [str(h).replace("|", r"\|") for h in (columns if headers is None else headers)]
    if len(headers) != len(columns):
        raise ValueError(f"{len(headers)} headers for {len(columns)} columns")
    fmts = {c: (floatfmt if isinstance(floatfmt, str) else floatfmt.get(c, ".2f")) for c in columns}
    body = [[_cell(row.get(c), fmts[c]) for c in columns] for row in rows]

    def numeric(c: str) -> bool:
        vals = [row.get(c) for row in rows if not _is_missing(row.get(c))]
        return bool(vals) and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in vals
        )

    rule = ["---:" if numeric(c) else ":---" for c in columns]
    lines = ["| " + " | ".join(r) + " |" for r in [headers, rule, *body]]
    return "\n".join(lines) + "\n"
