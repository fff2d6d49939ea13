"""``make exp-table``: every variant's headline figures in every experiment, one row each.

``dvc exp show`` gives one row per experiment and one column per (metrics file, key); the four
variants share their keys, so DVC names each column by its file path, and a table of them does not
fit a terminal. This reads the same data (``dvc exp show --json``, extra arguments passed on, e.g.
``-A`` or ``-n 5``) and prints one row per experiment and variant: the validation figures of the
checkpoint training kept (``dvclive/<variant>/metrics.json``) beside the test figures
(``results/<variant>/metrics.json``), then each experiment's params that differ from its baseline.

    python -m tavse.evaluation.exp_table [DVC EXP SHOW ARGS...]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (file, key, header): file "val" = the training's dvclive metrics, "test" = evaluate's.
# The key "si_snri_snr" stands for the lowest input SNR's (si_snri_snr-5 by default).
COLUMNS = (
    ("val", "si_snri", "SI-SNRi"),
    ("val", "si_snri_active", "active"),
    ("test", "si_snri", "SI-SNRi"),
    ("test", "si_snri_snr", "@{snr} dB"),
    ("test", "si_snri_active", "active"),
    ("test", "pesq_wb", "PESQ-WB"),
    ("test", "estoi", "ESTOI"),
)
LEGEND = (
    "SI-SNRi in dB. active: SI-SNRi on the target's speech-active samples (training keeps the checkpoint\n"
    "with the best validation figure). @: at the lowest input SNR. validation: dvclive/<variant>/metrics.json,\n"
    "test: results/<variant>/metrics.json."
)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _metrics_file(data: dict, path: str) -> dict:
    return ((data.get("metrics") or {}).get(path) or {}).get("data") or {}


def _lowest_snr_key(test: dict) -> str | None:
    keys = [k for k in test if k.startswith("si_snri_snr")]
    return keys[0] if len(keys) == 1 else None


def _name(entry: dict) -> str:
    rev = entry.get("rev") or "?"
    return entry.get("name") or (rev if rev == "workspace" else rev[:7])


def rows_of(name: str, data: dict) -> list[dict]:
    """One row per variant of one ``dvc exp show --json`` entry's ``data``: name, variant and COLUMNS' values."""
    params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
    live_dir = params.get("train", {}).get("dvclive_dir", "dvclive")
    model_dir = params.get("train", {}).get("out_dir", "models")
    out_dir = params.get("evaluation", {}).get("out_dir", "results")
    rows = []
    for variant in params.get("variants") or {}:
        files = {
            "val": _metrics_file(data, f"{live_dir}/{variant}/metrics.json"),
            "test": _metrics_file(data, f"{out_dir}/{variant}/metrics.json"),
        }
        # dvc.lock: the model evaluate@ scored (its dep) is not the one train@ wrote (its out), as in
        # an experiment that only trained: the test figures in the commit are another model's.
        model = f"{model_dir}/{variant}"
        scored = ((data.get("deps") or {}).get(model) or {}).get("hash")
        stale = scored is not None and scored != ((data.get("outs") or {}).get(model) or {}).get("hash")
        if stale:
            files["test"] = {}
        low = _lowest_snr_key(files["test"])
        row: dict[str | int, Any] = {  # COLUMNS' values under their index
            "experiment": name,
            "variant": variant + ("*" if stale else ""),
            "snr": low[len("si_snri_snr") :] if low else "?",
        }
        for i, (file, key, _) in enumerate(COLUMNS):
            row[i] = files[file].get(low if key == "si_snri_snr" else key)
        rows.append(row)
    return rows


def param_changes(data: dict, baseline: dict) -> list[str]:
    """``key=value`` for every params.yaml key whose value differs from ``baseline``'s."""
    mine = _flat((data.get("params") or {}).get("params.yaml", {}).get("data") or {})
    base = _flat((baseline.get("params") or {}).get("params.yaml", {}).get("data") or {})
    return [f"{k}={json.dumps(mine.get(k))}" for k in sorted(set(mine) | set(base)) if mine.get(k) != base.get(k)]


def exp_table(shown: list[dict]) -> str:
    """The text table of ``dvc exp show --json`` output ``shown``."""
    rows: list[dict] = []
    changes: list[str] = []
    head = next((e for e in shown if e.get("rev") != "workspace" and e.get("data")), None)
    for entry in shown:
        name = _name(entry)
        data = entry.get("data") or {}
        rows += rows_of(name, data)
        if entry.get("rev") == "workspace" and head is not None:
            if diff := param_changes(data, head["data"]):
                changes.append(f"{name} (vs {_name(head)}): {', '.join(diff)}")
        for exp in entry.get("experiments") or []:
            for run in exp.get("revs") or []:
                run_name = _name(run)
                if run.get("error") or not run.get("data"):
                    changes.append(f"{run_name}: failed, no metrics")
                    continue
                rows += rows_of(run_name, run["data"])
                if diff := param_changes(run["data"], data):
                    changes.append(f"{run_name} (vs {name}): {', '.join(diff)}")
    snr = next((r["snr"] for r in rows if r["snr"] != "?"), "?")
    headers = ["experiment", "variant", *(h.format(snr=snr) for _, _, h in COLUMNS)]
    cells = [
        [
            r["experiment"],
            r["variant"],
            *(
                "-" if r[i] is None else f"{r[i]:.2f}" if k != "estoi" else f"{r[i]:.3f}"
                for i, (_, k, _) in enumerate(COLUMNS)
            ),
        ]
        for r in rows
    ]
    widths = [max(len(str(c[j])) for c in [headers, *cells]) for j in range(len(headers))]
    n_val = sum(f == "val" for f, _, _ in COLUMNS)
    val_w = sum(widths[2 : 2 + n_val]) + 2 * (n_val - 1)
    group = (
        " " * (widths[0] + widths[1] + 4)
        + "validation".center(val_w)
        + "  "
        + "test".center(sum(widths[2 + n_val :]) + 2 * (len(COLUMNS) - n_val - 1))
    )

    def line(cols: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cols, widths))).rstrip()

    text = [group.rstrip(), line(headers), *(line(c) for c in cells), "", LEGEND]
    if any(r["variant"].endswith("*") for r in rows):
        text.append(
            "*: not evaluated since it was trained (evaluate@ scored another model); dvc repro evaluate@<variant>."
        )
    if changes:
        text += ["", "Params changed:", *(f"  {c}" for c in changes)]
    return "\n".join(text) + "\n"


def main(argv: Sequence[str]) -> int:
    beside = Path(sys.executable).parent / "dvc"  # the environment's own, when it is not on PATH
    dvc = str(beside) if beside.exists() else shutil.which("dvc") or "dvc"
    proc = subprocess.run([dvc, "exp", "show", "--json", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    sys.stdout.write(exp_table(json.loads(proc.stdout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
