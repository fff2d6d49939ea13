"""``report``: the study's results as one self-contained HTML page, ``results/report.html``.

The page answers the study's question in words (from the paired tests of ``compare``), then
shows the numbers behind the answer and lets a person listen: the headline table, SI-SNRi per
input SNR and per noise environment, the cells where a system is worse than its noisy input,
the paired tests, the stream-zeroing table, the training curves, the learned stream gates and,
for the listening samples, audio players with labelled spectrograms and mouth-crop strips.

Nothing is recomputed differently: every figure comes from ``compare.json``, the ``summary.json``
and ``items.csv`` files, ``gates.json``, the samples folders, the dvclive curves and the trained
models' ``summary.json``. Every image and sound is a ``data:`` URI (charts are inline SVG), the
page has no script, and it names no other file or server, so it works opened from disk offline.
Same inputs, same bytes.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tavse.common.config import Config
from tavse.common.io import atomic_path
from tavse.corpus.manifest import read_manifest
from tavse.corpus.noise_kinds import NOISE_KINDS
from tavse.evaluation.report import (
    EXPLANATION,
    NOISY,
    ORACLE,
    is_worse,
    noise_kinds,
    worse_than_input,
)
from tavse.evaluation.results import read_items
from tavse.evaluation.samples import colour_range, read_audio, read_samples_json, spectrogram_image
from tavse.evaluation.stats import ALPHA

PRIMARY = "si_snri_active"  # the study's measure of noise removal: gating silence cannot raise it
# (metric, header, unit) of the headline table; * marks a change against the noisy input.
HEADLINE = (
    ("si_snri", "SI-SNRi", "dB"),
    ("si_snri_active", "SI-SNRi speech-active", "dB"),
    ("silence_atten_db", "silence atten.", "dB"),
    ("pesq_wb", "PESQ-WB", ""),
    ("delta_pesq_wb", "ΔPESQ-WB", ""),
    ("estoi", "ESTOI", ""),
    ("delta_estoi", "ΔESTOI", ""),
    ("stoi", "STOI", ""),
    ("sdr", "SDR", "dB"),
)
PAIRED = ("si_snri_active", "si_snri", "delta_pesq_wb", "delta_estoi")
ZEROING = ("si_snri_active", "si_snri", "delta_pesq_wb", "delta_estoi")
LABEL = {m: h for m, h, _ in HEADLINE}
REFERENCE_AUDIO = (("noisy", "noisy input"), ("clean", "clean target"), ("oracle_irm", "oracle IRM (ceiling)"))
REF_SYSTEM = {"noisy": "noisy", "oracle_irm": "oracle_irm"}  # samples key -> system in reference items.csv


class ReportError(ValueError):
    """An input of the report is missing or does not fit the others (the message names the file)."""


# ----------------------------------------------------------------------------- the answer in words


@dataclass(frozen=True)
class Roles:
    """Which variant plays which part in the study's question (found by their streams)."""

    audio_only: str | None
    rgb: str | None
    thermal: str | None
    rgb_thermal: str | None


def roles(variants: Mapping[str, Sequence[str]]) -> Roles:
    by_streams = {tuple(sorted(s)): name for name, s in variants.items()}
    return Roles(
        by_streams.get(()), by_streams.get(("rgb",)), by_streams.get(("thermal",)), by_streams.get(("rgb", "thermal"))
    )


def paired(tests: Mapping[str, Mapping[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """compare.json's test of one metric between ``a`` and ``b``, as differences ``a − b``
    (compare stores each pair once, in the variants' order), or None when it has no such pair."""
    if f"{a}_vs_{b}" in tests:
        return dict(tests[f"{a}_vs_{b}"])
    if f"{b}_vs_{a}" not in tests:
        return None
    t = dict(tests[f"{b}_vs_{a}"])
    neg = lambda v: None if v is None else -v
    t.update(
        mean_difference=neg(t.get("mean_difference")),
        median_difference=neg(t.get("median_difference")),
        effect_size=neg(t.get("effect_size")),
        diff_ci95_low=neg(t.get("diff_ci95_high")),
        diff_ci95_high=neg(t.get("diff_ci95_low")),
    )
    return t


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _num(v: float | None, digits: int = 2, sign: str = "") -> str:
    """``v`` with ``digits`` decimals (two significant digits when that would print a non-zero as 0),
    a true minus sign; "–" for None."""
    if v is None:
        return "–"
    text = f"{v:{sign}.{digits}f}" if v == 0 or abs(v) >= 0.5 * 10**-digits else f"{v:{sign}.2g}"
    return text.replace("-", "−")


def _signed(v: float | None, digits: int = 2) -> str:
    return _num(v, digits, "+")


def direction(t: Mapping[str, Any] | None) -> int:
    """+1 / −1 when the test is significant (a > b / a < b, by the sign of the rank effect the test
    is about), 0 when it is not (or there is nothing to test)."""
    if t is None or not t.get("significant"):
        return 0
    eff = t.get("effect_size") or 0.0
    if eff == 0:
        eff = t.get("median_difference") or 0.0
    return 1 if eff > 0 else -1 if eff < 0 else 0


def describe_test(a_label: str, b_label: str, t: Mapping[str, Any] | None) -> str:
    """One comparison in words with its numbers: effect, 95 % CI, corrected p and the verdict."""
    if t is None:
        return f"{a_label} vs {b_label}: not compared (one of them is not among the variants)."
    if t.get("p_adjusted") is None:
        return f"{a_label} vs {b_label}: identical outputs on every paired mixture, nothing to test."
    verdict = "significant" if t["significant"] else "not significant"
    return (
        f"{a_label} − {b_label}: {_signed(t.get('mean_difference'))} dB mean paired difference "
        f"[95% CI {_signed(t.get('diff_ci95_low'))}, {_signed(t.get('diff_ci95_high'))}], "
        f"median {_signed(t.get('median_difference'))} dB, rank-biserial r = {_signed(t.get('effect_size'))}, "
        f"Bonferroni-corrected Wilcoxon p = {fmt_p(t['p_adjusted'])} over {t['n_pairs']} paired mixtures: "
        f"{verdict} at α = {ALPHA:g}."
    )


def verdict_sentence(vs_audio: Mapping[str, Any] | None, vs_rgb: Mapping[str, Any] | None) -> str:
    """The study's answer, from the two tests of the thermal variant (against audio only and RGB)."""
    if vs_audio is None:
        return "The question cannot be answered here: the variants lack an audio-only or an audio+thermal model."
    d_audio, d_rgb = direction(vs_audio), direction(vs_rgb)
    if d_audio < 0:
        return "No: with thermal video of the mouth the model removed noise significantly worse than from audio alone."
    if d_audio == 0:
        head = "No measurable help: the thermal variant's difference from audio alone is not significant"
        if d_rgb < 0:
            return head + ", and it is significantly worse than the RGB variant."
        return head + "."
    if vs_rgb is None:
        return "Yes over audio alone: thermal video of the mouth significantly improves noise removal (no RGB variant to compare)."
    if d_rgb > 0:
        return (
            "Yes: thermal video of the mouth significantly improves noise removal over audio alone and over "
            "ordinary RGB video of the mouth."
        )
    if d_rgb < 0:
        return (
            "Thermal video of the mouth significantly improves noise removal over audio alone, but significantly "
            "less than RGB video does."
        )
    return (
        "Thermal video of the mouth significantly improves noise removal over audio alone, but not measurably "
        "more than ordinary RGB video does: the difference between the thermal and the RGB variant is not "
        "significant."
    )


def corpus_caveat(speakingfaces_source: str, demand_source: str) -> str | None:
    """The warning that the numbers come from the embedded synthetic corpus (None for real recordings)."""
    parts = []
    if speakingfaces_source == "synthetic":
        parts.append(
            "the speakers are synthetic, not SpeakingFaces recordings (espeak-ng voices; rendered faces whose "
            "lips open with the speech's loudness and a thermal map whose warm breath region follows the "
            "speech, so both video streams carry the speech envelope by construction)"
        )
    if demand_source == "synthetic":
        parts.append("the noise is synthesised in DEMAND's layout, not DEMAND's recordings")
    if not parts:
        return None
    return (
        "Caveat: these results come from the embedded synthetic corpus: " + "; ".join(parts) + ". They show "
        "that the pipeline works and how the variants compare on that corpus; they do not tell whether thermal "
        "video helps on real people. Point data.speakingfaces_dir and data.demand_dir at the real corpora to "
        "answer that."
    )


def answer_paragraph(
    tests: Mapping[str, Mapping[str, Any]],
    overall: Mapping[str, Mapping[str, Any]],
    variants: Mapping[str, Sequence[str]],
    caveat: str | None,
    n_flagged_full: int = 0,
) -> str:
    """The answer to the study's question in one paragraph of plain text, with its numbers.

    ``tests``: compare.json's entry for :data:`PRIMARY` (pair -> test); ``overall``: system ->
    the overall :data:`PRIMARY` summary (mean, CI) of each variant, :data:`NOISY` and :data:`ORACLE`;
    ``n_flagged_full``: (metric, condition) cells where a variant with all its streams is worse
    than its noisy input.
    """
    r = roles(variants)
    ranked = sorted(
        (v for v in variants if overall.get(v, {}).get("mean") is not None), key=lambda v: -overall[v]["mean"]
    )
    out = ["Does thermal video of the mouth help remove noise, compared with audio only and with RGB video? "]
    vs_audio = paired(tests, r.thermal, r.audio_only) if r.thermal and r.audio_only else None
    vs_rgb = paired(tests, r.thermal, r.rgb) if r.thermal and r.rgb else None
    out.append(verdict_sentence(vs_audio, vs_rgb) + " ")
    if ranked:
        best = ranked[0]
        s = overall[best]
        others = ", ".join(f"{v} {_num(overall[v]['mean'])}" for v in ranked[1:])
        out.append(
            f"On speech-active SI-SNRi (the improvement on the samples where the target speaks, which muting "
            f"silence cannot raise), {best} is best with {_num(s['mean'])} dB "
            f"[95% CI {_num(s['ci95_low'])}, {_num(s['ci95_high'])}]" + (f" (then {others} dB" if others else "")
        )
        if ORACLE in overall and overall[ORACLE].get("mean") is not None:
            out.append(
                f"{'; ' if others else ' ('}the oracle ceiling is {_num(overall[ORACLE]['mean'])} dB, the "
                "noisy input 0)"
            )
        elif others:
            out.append(")")
        if len(ranked) > 1:
            lead = paired(tests, best, ranked[1])
            if lead is not None and not lead.get("significant"):
                out.append(f"; its lead over {ranked[1]} is not significant (p = {fmt_p(lead.get('p_adjusted'))})")
        out.append(". ")
    if vs_audio is not None:
        assert r.thermal and r.audio_only  # vs_audio is only looked up with both
        out.append(describe_test(r.thermal, r.audio_only, vs_audio) + " ")
    if vs_rgb is not None:
        assert r.thermal and r.rgb  # vs_rgb is only looked up with both
        out.append(describe_test(r.thermal, r.rgb, vs_rgb) + " ")
    if r.rgb_thermal and r.rgb:
        out.append(
            "Adding thermal to RGB: " + describe_test(r.rgb_thermal, r.rgb, paired(tests, r.rgb_thermal, r.rgb)) + " "
        )
    out.append(
        "No variant with all its streams is worse than its noisy input (on ΔESTOI, ΔPESQ-WB or speech-active "
        "SI-SNRi) overall, per noise kind or per input SNR. "
        if n_flagged_full == 0
        else f"In {n_flagged_full} (metric, condition) cell(s) a variant with all its streams is worse than its noisy "
        "input (flagged below). "
    )
    if caveat:
        out.append(caveat)
    return "".join(out).strip()


# ----------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Everything the page shows, read from the pipeline's outputs."""

    variants: dict[str, list[str]]
    snrs: list[str]
    compare: dict
    summaries: dict[str, dict]  # system key (noisy, variants, x/no_y, oracle) -> summary
    items: dict[str, dict[str, dict]]  # system key -> mix_id -> item row (full condition)
    gates: dict[str, dict]  # variant -> gates.json
    trained: dict[str, dict]  # variant -> models/<variant>/summary.json
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # variant -> metric -> (steps, values)
    samples: list[dict]  # reference samples.json entries, with "folders" of each system
    sample_dirs: dict[str, Path]  # "reference" / variant -> its samples folder
    sources: tuple[str, str]  # manifest source types of SpeakingFaces and DEMAND
    test_list: str
    zeroed: dict[str, dict[str, dict]] = field(default_factory=dict)  # "x/no_y" -> mix_id -> item row


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (run the stage that writes it first)") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A dvclive TSV (``step<TAB>name``) as (steps, values)."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (train@ writes it)") from None
    if not rows or rows[0][:1] != ["step"] or len(rows[0]) < 2:
        raise ReportError(f"{path}: expected a header 'step<TAB>{path.stem}'")
    try:
        data = np.array([[float(r[0]), float(r[1])] for r in rows[1:]], dtype=np.float64).reshape(-1, 2)
    except (ValueError, IndexError) as e:
        raise ReportError(f"{path}: a row is not two numbers ({e})") from None
    return data[:, 0], data[:, 1]


CURVES = {
    "val/si_snri_active": "validation SI-SNRi speech-active (dB)",
    "val/si_snri": "validation SI-SNRi (dB)",
    "train/train_loss": "training loss (−SI-SNR, dB)",
}


def load_inputs(cfg: Config) -> Inputs:
    out = Path(cfg.evaluation.out_dir)
    variants: dict[str, list[str]] = {v: list(spec.streams) for v, spec in cfg.variants.items()}
    ref = _json(out / "reference" / "summary.json")
    summaries: dict[str, dict] = {NOISY: ref["noisy"]}
    items: dict[str, dict[str, dict]] = {}
    for row in read_items(out / "reference" / "items.csv"):
        if row["condition"] == "full":
            items.setdefault(row["system"], {})[row["mix_id"]] = row
    gates, trained, curves = {}, {}, {}
    for v in variants:
        summary = _json(out / v / "summary.json")
        if v not in summary:
            raise ReportError(f"{out / v / 'summary.json'}: no entry {v!r} (keys: {', '.join(summary)})")
        summaries.update(summary)
        zeroed: dict[str, dict[str, dict]] = {}
        for r in read_items(out / v / "items.csv"):
            key = v if r["condition"] == "full" else f"{v}/{r['condition']}"
            (items if key == v else zeroed).setdefault(key, {})[r["mix_id"]] = r
        gates[v] = _json(out / v / "gates.json")
        trained[v] = _json(Path(cfg.train.out_dir) / v / "summary.json")
        live = Path(cfg.train.dvclive_dir) / v / "plots" / "metrics"
        curves[v] = {k: read_curve(live / f"{k}.tsv") for k in CURVES}
        for s in variants[v] if len(variants[v]) > 1 else ():
            curves[v][f"gate_{s}"] = read_curve(live / "val" / f"gate_{s}.tsv")
    summaries[ORACLE] = ref["oracle_irm"]
    compare = _json(out / "compare.json")
    if PRIMARY not in compare:
        raise ReportError(f"{out / 'compare.json'}: no tests of {PRIMARY}")
    sample_dirs = {"reference": out / "reference" / "samples", **{v: out / v / "samples" for v in variants}}
    reference = read_samples_json(sample_dirs["reference"])["samples"]
    ids = [s["mix_id"] for s in reference]
    for v in variants:
        theirs = read_samples_json(sample_dirs[v])["samples"]
        if [s["mix_id"] for s in theirs] != ids:
            raise ReportError(
                f"{sample_dirs[v] / 'samples.json'}: samples {[s['mix_id'] for s in theirs]} differ "
                f"from the reference's {ids} (re-run evaluate@{v} and reference with the same params)"
            )
        for mine, their in zip(reference, theirs):
            mine.setdefault("variants", {})[v] = their
    sources = (
        read_manifest(cfg.data.speakingfaces_dir, "speakingfaces").source["type"],
        read_manifest(cfg.data.demand_dir, "demand").source["type"],
    )
    return Inputs(
        variants,
        [f"{s:+g}" for s in cfg.evaluation.snrs_db],
        compare,
        summaries,
        items,
        gates,
        trained,
        curves,
        reference,
        sample_dirs,
        sources,
        cfg.evaluation.test_mixtures,
        zeroed,
    )


# ----------------------------------------------------------------------------- charts (inline SVG)

COLOURS = {NOISY: "#7f7f7f", ORACLE: "#000000"}
PALETTE = ("#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#2ca02c", "#8c564b")


def colour(system: str, variants: Iterable[str]) -> str:
    return COLOURS.get(system) or PALETTE[list(variants).index(system) % len(PALETTE)]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "tavse-report", "font.size": 9})
    return plt


def svg(fig) -> str:
    """The figure as an inline <svg> element (text as text, fixed ids, no date: same figure, same bytes)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _errorbars(ax, xs, stats: Sequence[dict | None], colour_: str, label: str, offset: float = 0.0, **kw) -> None:
    x, y, lo, hi = [], [], [], []
    for xi, s in zip(xs, stats):
        if s and s.get("mean") is not None:
            x.append(xi + offset)
            y.append(s["mean"])
            lo.append(s["mean"] - s["ci95_low"])
            hi.append(s["ci95_high"] - s["mean"])
    ax.errorbar(x, y, yerr=[lo, hi], color=colour_, label=label, capsize=3, marker="o", ms=4, **kw)


def snr_chart(inp: Inputs) -> str:
    plt = _plt()
    systems = [NOISY, *inp.variants, ORACLE]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    xs = [float(s) for s in inp.snrs]
    for ax, metric in zip(axes, ("si_snri_active", "si_snri")):
        for k, system in enumerate(systems):
            by = inp.summaries[system][metric]["by_snr"]
            _errorbars(
                ax,
                xs,
                [by.get(s) for s in inp.snrs],
                colour(system, inp.variants),
                system,
                offset=(k - (len(systems) - 1) / 2) * 0.18,
                ls="--" if system in (NOISY, ORACLE) else "-",
            )
        ax.axhline(0, color="#bbbbbb", lw=0.8)
        ax.set_xticks(xs)
        ax.set_xlabel("input SNR (dB)")
        ax.set_ylabel(f"{LABEL[metric]} (dB)")
        ax.set_title(f"{LABEL[metric]}: mean and 95% CI", fontsize=9)
    axes[1].legend(fontsize=7, loc="best")
    return svg(fig)


def environments(inp: Inputs) -> list[str]:
    found = {e for s in inp.summaries.values() for e in s[PRIMARY].get("by_noise", {})}
    kind_order = {k: i for i, k in enumerate(noise_kinds(inp.summaries))}
    return sorted(found, key=lambda e: (kind_order.get(NOISE_KINDS.get(e, ""), 99), e))


def env_label(env: str) -> str:
    return f"{env} ({NOISE_KINDS.get(env, '?')})"


def environment_chart(inp: Inputs) -> str:
    plt = _plt()
    envs = environments(inp)
    systems = [*inp.variants, ORACLE]
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.55 * len(envs)), layout="constrained")
    height = 0.8 / len(systems)
    for k, system in enumerate(systems):
        by = inp.summaries[system][PRIMARY]["by_noise"]
        ys = np.arange(len(envs)) + (k - (len(systems) - 1) / 2) * height
        means = [by[e]["mean"] if e in by and by[e]["mean"] is not None else np.nan for e in envs]
        lo = [m - by[e]["ci95_low"] if e in by and by[e]["mean"] is not None else 0 for m, e in zip(means, envs)]
        hi = [by[e]["ci95_high"] - m if e in by and by[e]["mean"] is not None else 0 for m, e in zip(means, envs)]
        ax.barh(
            ys,
            means,
            height=height,
            xerr=[lo, hi],
            color=colour(system, inp.variants),
            label=system,
            capsize=2,
            error_kw={"lw": 0.8},
        )
    ax.axvline(0, color="#444444", lw=0.8)
    ax.set_yticks(np.arange(len(envs)), [env_label(e) for e in envs])
    ax.invert_yaxis()
    ax.set_xlabel(f"{LABEL[PRIMARY]} (dB), mean and 95% CI; left of 0 = worse than the noisy input")
    ax.legend(fontsize=7, loc="lower right")
    return svg(fig)


def training_chart(inp: Inputs) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(11, 3.3), layout="constrained")
    for ax, (key, label) in zip(axes, CURVES.items()):
        for v in inp.variants:
            steps, values = inp.curves[v][key]
            ax.plot(steps, values, color=colour(v, inp.variants), label=v, marker=".", ms=3)
            best = inp.trained[v].get("best_step")
            if key == "val/si_snri_active" and best in steps:
                ax.plot([best], [values[list(steps).index(best)]], marker="*", ms=11, color=colour(v, inp.variants))
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    return svg(fig)


def gate_chart(inp: Inputs) -> str | None:
    gated = [v for v in inp.variants if len(inp.variants[v]) > 1]
    if not gated:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
    styles = {"rgb": "-", "thermal": "--"}
    for v in gated:
        for s in inp.variants[v]:
            steps, values = inp.curves[v][f"gate_{s}"]
            ax.plot(steps, values, ls=styles.get(s, ":"), marker=".", color=colour(v, inp.variants), label=f"{v}: {s}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("gate (0 closed, 1 open)")
    ax.set_title("learned stream gates on the validation list", fontsize=9)
    ax.legend(fontsize=7)
    return svg(fig)


def gate_item_chart(inp: Inputs) -> str | None:
    """Per test mixture, each stream's gate against the input SNR (marker: noise kind) and against
    what zeroing that stream costs on that mixture (speech-active SI-SNRi, full minus zeroed)."""
    gated = [v for v in inp.variants if inp.gates.get(v, {}).get("items")]
    if not gated:
        return None
    plt = _plt()
    kinds = sorted({r["noise_kind"] for v in gated for r in inp.gates[v]["items"]})
    markers = dict(zip(kinds, "os^Dv"))
    panels = [(v, s) for v in gated for s in inp.gates[v]["streams"]]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 5.4), layout="constrained", squeeze=False)
    for col, (v, s) in enumerate(panels):
        rows = inp.gates[v]["items"]
        full, zero = inp.items[v], inp.zeroed.get(f"{v}/no_{s}", {})
        for kind in kinds:
            sel = [r for r in rows if r["noise_kind"] == kind]
            axes[0, col].scatter(
                [r["snr_db"] for r in sel], [r[s] for r in sel], s=14, marker=markers[kind], label=kind, alpha=0.7
            )
            cost = [
                (r[s], full[r["mix_id"]][PRIMARY] - zero[r["mix_id"]][PRIMARY])
                for r in sel
                if r["mix_id"] in zero
                and full[r["mix_id"]][PRIMARY] is not None
                and zero[r["mix_id"]][PRIMARY] is not None
            ]
            if cost:
                axes[1, col].scatter(*zip(*cost), s=14, marker=markers[kind], label=kind, alpha=0.7)
        axes[0, col].set_title(f"{v}: {s} gate", fontsize=9)
        axes[0, col].set_xlabel("input SNR (dB)")
        axes[0, col].set_ylabel("gate (0 closed, 1 open)")
        axes[1, col].set_xlabel(f"{s} gate")
        axes[1, col].set_ylabel(f"cost of zeroing {s} (dB)")
        axes[1, col].axhline(0, color="#999", lw=0.6)
    axes[0, 0].legend(fontsize=7, title="noise kind", title_fontsize=7)
    return svg(fig)


# ----------------------------------------------------------------------------- HTML pieces

e = html.escape


def _ci(s: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not s or s.get("mean") is None:
        return "–"
    return (
        f"{_num(s['mean'], digits)}<br><small>[{_num(s['ci95_low'], digits)}, {_num(s['ci95_high'], digits)}]</small>"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table; cells are HTML already (escape text before)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<div class="wide"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def cell(metric: str, stat: dict[str, Any] | None, system: str, digits: int = 2) -> str:
    """A mean [CI] cell, flagged when the system is worse than its noisy input there."""
    if system != NOISY and is_worse(metric, stat):
        return f'<td class="worse" title="worse than the noisy input">▼ {_ci(stat, digits)}</td>'
    return f"<td>{_ci(stat, digits)}</td>"


def markdown_inline(text: str) -> str:
    """``**bold**`` and ``*italic*`` of report.py's explanation as HTML (the rest escaped)."""
    out = e(text.strip())
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)


def headline_table(inp: Inputs) -> str:
    rows = []
    for system, s in inp.summaries.items():
        rows.append(
            [
                e(system),
                *(cell(m, s[m]["overall"], system, 3 if unit == "" else 2) for m, _, unit in HEADLINE),
                str(s[PRIMARY]["overall"]["n"]),
            ]
        )
    headers = [f"{h}{f' ({u})' if u else ''}" for _, h, u in HEADLINE]
    return table(["system", *headers, "n"], rows, "num")


def snr_table(inp: Inputs) -> str:
    rows = []
    for system in [NOISY, *inp.variants, ORACLE]:
        s = inp.summaries[system]
        rows.append(
            [
                e(system),
                *(cell(m, s[m]["by_snr"].get(snr), system) for m in ("si_snri_active", "si_snri") for snr in inp.snrs),
            ]
        )
    headers = [f"{LABEL[m]} @ {snr} dB" for m in ("si_snri_active", "si_snri") for snr in inp.snrs]
    return table(["system", *headers], rows, "num")


def environment_table(inp: Inputs) -> str:
    envs = environments(inp)
    rows = []
    for system in [NOISY, *inp.variants, ORACLE]:
        by = inp.summaries[system][PRIMARY]["by_noise"]
        rows.append([e(system), *(cell(PRIMARY, by.get(env), system) for env in envs)])
    n = [str(inp.summaries[NOISY][PRIMARY]["by_noise"].get(env, {}).get("n", 0)) for env in envs]
    rows.append(["<em>mixtures</em>", *n])
    return table(["system", *(e(env_label(env)) for env in envs)], rows, "num")


def flags_table(flags: list[dict]) -> str:
    if not flags:
        return "<p>No system is worse than its noisy input on ΔESTOI, ΔPESQ-WB or SI-SNRi speech-active, in any condition.</p>"
    rows = [
        [
            e(f["system"]),
            e(f["metric"]),
            e(f["condition"]),
            f'<td class="worse">{_num(f["mean"], 3)} <small>[{_num(f["ci95_low"], 3)}, {_num(f["ci95_high"], 3)}]</small></td>',
            "yes" if f["ci_below_zero"] else "no",
            str(f["n"]),
        ]
        for f in flags
    ]
    return (
        f'<p class="flag">▼ {len(flags)} (system, metric, condition) cells where a system is worse than its noisy '
        "input (mean below 0; <em>CI below 0</em>: the whole 95% CI is).</p>"
        + table(["system", "metric", "condition", "mean [95% CI]", "CI below 0", "n"], rows, "num")
    )


def paired_table(inp: Inputs) -> str:
    rows = []
    variants = list(inp.variants)
    for metric in PAIRED:
        for i, a in enumerate(variants):
            for b in variants[i + 1 :]:
                t = paired(inp.compare.get(metric, {}), b, a)  # later variant minus earlier: visual minus fewer streams
                if t is None:
                    continue
                sig = "yes" if t.get("significant") else "no"
                rows.append(
                    [
                        e(LABEL.get(metric, metric)),
                        f"{e(b)} − {e(a)}",
                        f"{_signed(t.get('mean_difference'), 3)} <small>[{_signed(t.get('diff_ci95_low'), 3)}, "
                        f"{_signed(t.get('diff_ci95_high'), 3)}]</small>",
                        _signed(t.get("median_difference"), 3),
                        _signed(t.get("effect_size")),
                        fmt_p(t.get("p_value")),
                        fmt_p(t.get("p_adjusted")),
                        f'<td class="{"sig" if sig == "yes" else ""}">{sig}</td>',
                        str(t.get("n_pairs", "–")),
                    ]
                )
    return table(
        [
            "metric",
            "difference",
            "mean [95% CI]",
            "median",
            "rank-biserial r",
            "p",
            "p (Bonferroni)",
            "significant",
            "pairs",
        ],
        rows,
        "num",
    )


def zeroing_table(inp: Inputs) -> str:
    rows = []
    for v, streams in inp.variants.items():
        if not streams:
            continue
        full = inp.summaries[v]
        for key in [v, *(f"{v}/no_{s}" for s in streams)]:
            if key not in inp.summaries:
                raise ReportError(f"results/{v}/summary.json: no entry {key!r} (stream-zeroing rows)")
            s = inp.summaries[key]
            cells = []
            for m in ZEROING:
                cells.append(cell(m, s[m]["overall"], key))
                change = (
                    None
                    if key == v or s[m]["overall"]["mean"] is None or full[m]["overall"]["mean"] is None
                    else s[m]["overall"]["mean"] - full[m]["overall"]["mean"]
                )
                cells.append("" if key == v else _signed(change))
            rows.append([e(key if key != v else f"{v} (all streams)"), *cells])
    headers = [h for m in ZEROING for h in (e(LABEL[m]), "change")]
    return table(["system", *headers], rows, "num")


def gates_table(inp: Inputs) -> str | None:
    rows = []
    for v, _streams in inp.variants.items():
        g = inp.gates[v]
        if not g.get("streams"):
            continue
        best = inp.trained[v].get("best", {})
        for s in g["streams"]:
            conds = [f"{_ci(g[s]['by_snr'].get(snr), 3)}" for snr in inp.snrs]
            kinds = [f"{_ci(g[s]['by_noise_kind'].get(k), 3)}" for k in noise_kinds(inp.summaries)]
            rows.append([e(v), e(s), _num(best.get(f"gate_{s}"), 3), _ci(g[s]["overall"], 3), *conds, *kinds])
    if not rows:
        return None
    return table(
        [
            "variant",
            "stream",
            "validation, best step",
            "test, overall",
            *(f"test @ {snr} dB" for snr in inp.snrs),
            *(f"test, {k}" for k in noise_kinds(inp.summaries)),
        ],
        rows,
        "num",
    )


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _file(folder: Path, name: str) -> bytes:
    path = folder / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (listed in {folder / 'samples.json'})") from None


def sample_card(inp: Inputs, k: int, s: dict) -> str:
    ref_dir = inp.sample_dirs["reference"]
    audio = {key: _file(ref_dir, s["audio"][key]) for key, _ in REFERENCE_AUDIO}
    for v, theirs in s["variants"].items():
        audio[v] = _file(inp.sample_dirs[v], theirs["audio"][v])
    signals = {key: read_audio(data) for key, data in audio.items()}
    vlim = colour_range(signals["clean"])
    where = f"{s['noise_env']} ({s['noise_kind']}) at {s['snr_db']:+g} dB"
    rows = []
    names = dict(REFERENCE_AUDIO) | {v: v for v in inp.variants}
    for key, data in audio.items():
        system = REF_SYSTEM.get(key, key)
        item = inp.items.get(system, {}).get(s["mix_id"]) if key != "clean" else None
        score = (
            ""
            if item is None
            else f"SI-SNRi speech-active {_signed(item['si_snri_active'])} dB, ΔPESQ-WB {_signed(item['delta_pesq_wb'], 3)}, "
            f"ΔESTOI {_signed(item['delta_estoi'], 3)}"
        )
        gates = s["variants"].get(key, {}).get("gates") or {}
        if gates:
            score += "; gates " + ", ".join(f"{m} {g:.2f}" for m, g in gates.items())
        spec = spectrogram_image(
            {f"{names[key]}: {s['mix_id']}, {where}": signals[key]},
            "",
            vlim,
            width_in=7.2,
            row_in=1.6,
            dpi=80,
            fmt="jpeg",
        )
        rows.append(
            f'<div class="system"><div class="who"><strong>{e(names[key])}</strong><br><small>{e(score)}</small>'
            f'<br><audio controls preload="metadata" src="{data_uri("audio/flac", data)}"></audio></div>'
            f'<img alt="spectrogram of {e(names[key])} for {e(s["mix_id"])}" src="{data_uri("image/jpeg", spec)}">'
            "</div>"
        )
    mouth = _file(ref_dir, s["mouth"])
    return (
        f'<section class="sample" id="sample-{k}"><h3>{k}. {e(s["mix_id"])}: speaker {s["speaker"]}, {e(where)}, '
        f"{s['duration_s']:.2f} s</h3>"
        f'<img class="mouth" alt="RGB and thermal mouth crops of {e(s["utt_id"])}" src="{data_uri("image/png", mouth)}">'
        + "".join(rows)
        + "</section>"
    )


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:1240px;margin:1.5em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.answer{font-size:1.05em;background:#f3f7fb;border-left:4px solid #1f77b4;padding:.8em 1em}
.caveat{background:#fff6e0;color:#6b4a00}
table{border-collapse:collapse;margin:.6em 0;font-size:.82em}th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f4f4f4;text-align:left}table.num td{text-align:right;white-space:nowrap}table.num td:first-child{text-align:left}
td.worse{background:#fde2e2;color:#a00000}td.sig{background:#e3f4e3}.flag{color:#a00000;font-weight:600}
small{color:#666}.sample{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;margin:1em 0}
.sample h3{margin:.3em 0}.system{display:flex;gap:1em;align-items:center;border-top:1px solid #eee;padding:.3em 0}
.who{width:330px;flex:none}audio{width:320px;margin-top:.3em}img.mouth{max-width:100%}nav a{margin-right:.8em}
svg{max-width:100%;height:auto}.wide{overflow-x:auto}
"""


def render(inp: Inputs, extra: Sequence[tuple[str, str, str]] = ()) -> str:
    """The whole page as one HTML string; ``extra`` sections (id, title, HTML) follow the answer."""
    flags = worse_than_input(inp.summaries, inp.snrs, noise_kinds(inp.summaries))
    n_flagged_full = sum(f["system"] in inp.variants for f in flags)
    caveat = corpus_caveat(*inp.sources)
    overall = {k: inp.summaries[k][PRIMARY]["overall"] for k in [*inp.variants, ORACLE]}
    answer = answer_paragraph(inp.compare[PRIMARY], overall, inp.variants, caveat, n_flagged_full)
    gates_svg, gates_tab, gates_items = gate_chart(inp), gates_table(inp), gate_item_chart(inp)
    samples = "".join(sample_card(inp, k, s) for k, s in enumerate(inp.samples, 1))
    answer_html = e(answer)
    if caveat:  # the same paragraph, its caveat marked
        answer_html = answer_html.replace(e(caveat), f'<strong class="caveat">{e(caveat)}</strong>')
    n_items = inp.summaries[NOISY][PRIMARY]["overall"]["n"]
    sections = [
        ("answer", "The answer", f'<p class="answer">{answer_html}</p>'),
        *extra,
        (
            "headline",
            "All systems on the test mixtures",
            f"<p>Mean <small>[95% bootstrap CI]</small> over {n_items} frozen test mixtures (<code>{e(inp.test_list)}</code>); "
            "<code>x/no_rgb</code> = variant x with that stream zeroed at test time; ▼ red: worse than the noisy input.</p>"
            + headline_table(inp)
            + f"<p><small>{markdown_inline(EXPLANATION)}</small></p>",
        ),
        ("worse", "Worse than the noisy input", flags_table(flags)),
        ("snr", "Per input SNR", snr_chart(inp) + snr_table(inp)),
        (
            "environment",
            "Per noise environment",
            f"<p>{e(LABEL[PRIMARY])} per test environment (its noise kind in brackets).</p>"
            + environment_chart(inp)
            + environment_table(inp),
        ),
        (
            "paired",
            "Paired tests",
            f"<p>Wilcoxon signed-rank tests paired by mixture, Bonferroni-corrected over the "
            f"{len(inp.variants) * (len(inp.variants) - 1) // 2} variant pairs of each metric "
            "(<code>results/compare.json</code>); the difference is the later variant minus the earlier one; "
            "the CI is the 95% bootstrap CI of the mean paired difference.</p>" + paired_table(inp),
        ),
        (
            "zeroing",
            "Stream zeroing",
            "<p>Each variant with one visual stream replaced by zeros at test time (mean <small>[95% CI]</small>; "
            "<em>change</em>: against the same variant with all its streams). A large drop means the model relies on "
            "that stream.</p>" + zeroing_table(inp),
        ),
        (
            "training",
            "Training curves",
            "<p>Validation on the frozen validation list every <code>train.eval_every</code> steps; ★ the checkpoint "
            "kept (best validation SI-SNRi speech-active).</p>" + training_chart(inp),
        ),
        (
            "gates",
            "Gate values",
            (
                "<p>The learned sigmoid gate of each visual stream (0: the stream is shut out of the fusion, 1: fully "
                "used): on the validation list during training, and on the test mixtures (mean <small>[95% CI]</small>). "
                "A gate sees only its own stream's video, not the audio: where every utterance is mixed at every input "
                "SNR, its per-SNR means are the same.</p>"
                + (gates_svg or "")
                + (gates_tab or "")
                + (
                    "<p>Per test mixture: each gate against the input SNR, and against what zeroing that stream costs "
                    "on that mixture (SI-SNRi speech-active with all streams minus with that one zeroed): a gate that "
                    "tracks reliance rises with the cost.</p>" + gates_items
                    if gates_items
                    else ""
                )
            )
            if gates_tab
            else "<p>No variant has gates (a gate per stream exists only with two or more visual streams).</p>",
        ),
        (
            "samples",
            "Listen",
            f"<p>{len(inp.samples)} test mixtures spread over speakers, input SNRs and noise environments (the same for "
            "every system; chosen by <code>tavse.evaluation.samples.select_samples</code>). Audio: 16-bit FLAC at 16 kHz, "
            "every signal of a mixture at one gain. Spectrograms of a mixture share one colour scale, from the clean "
            "target's loudest bin down 80 dB. Each strip shows the mouth crops the models see: RGB above, thermal "
            "(temperature order, inferno colours) below.</p>" + samples,
        ),
    ]
    nav = "".join(f'<a href="#{k}">{e(title)}</a>' for k, title, _ in sections)
    body = "".join(f'<h2 id="{k}">{e(title)}</h2>{content}' for k, title, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>TAVSE report: does thermal video of the mouth help remove noise?</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>TAVSE: does thermal video of the mouth help remove noise?</h1>"
        f"<p><small>Audio only vs audio+RGB vs audio+thermal vs audio+RGB+thermal, one architecture and one training "
        f"recipe. Generated by the <code>report</code> stage from <code>results/</code>, <code>dvclive/</code> and "
        f"<code>models/*/summary.json</code>; self-contained (no script, no external file).</small></p>"
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report_page(cfg: Config, extra: Sequence[tuple[str, str, str]] = (), path: Path | None = None) -> Path:
    """Render ``results/report.html`` (or ``path``) from the pipeline's outputs, with ``extra``
    sections after the answer (see :func:`render`); returns its path."""
    page = render(load_inputs(cfg), extra)
    path = Path(cfg.evaluation.out_dir) / "report.html" if path is None else path
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    logging.getLogger("tavse.report").info(
        "report done: %s (%.0f kB, self-contained: open it in a browser)", path, len(page.encode()) / 1000
    )
    return path
