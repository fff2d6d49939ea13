"""The runs of the study: the workspace's results and every DVC experiment on the same commit.

A run's per-item results are read through its ``dvc.lock``: the lock names the md5 of each
``results/<variant>/items.csv`` and the DVC cache holds the file under that md5, so experiments
made by the local queue or pushed back by the SLURM array are read without checking them out.
What produced a variant's results is the params its ``train@``/``evaluate@`` stages were run
with (also in the lock): runs whose params for a variant differ only in ``train.seed`` are seeds
of one *setting* of that variant.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tavse.evaluation.results import read_items

log = logging.getLogger("tavse.study")

SEED_KEY = "train.seed"
WORKSPACE = "workspace"


@dataclass(frozen=True)
class Run:
    """One pipeline run: the workspace or one experiment (``rev`` its commit, None for the workspace)."""

    name: str
    rev: str | None
    lock: dict


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def list_runs(repo: Path) -> list[Run]:
    """The workspace and the experiments whose baseline is ``HEAD`` (``refs/exps/<ab>/<cdef…>/<name>``), by name."""
    runs = [Run(WORKSPACE, None, yaml.safe_load((repo / "dvc.lock").read_text()) or {})]
    head = _git(repo, "rev-parse", "HEAD").strip()
    refs = _git(repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/exps/{head[:2]}/{head[2:]}/")
    for line in sorted(refs.splitlines()):
        ref, rev = line.split()
        lock = _git(repo, "show", f"{rev}:dvc.lock")
        runs.append(Run(ref.rsplit("/", 1)[1], rev, yaml.safe_load(lock) or {}))
    return runs


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"seed": 1}}`` -> ``{"train.seed": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def stage_params(run: Run, stage: str) -> dict[str, Any] | None:
    """The params.yaml values ``stage`` ran with, flattened; None if the run's lock lacks the stage."""
    entry = run.lock.get("stages", {}).get(stage)
    if entry is None:
        return None
    return flatten(entry.get("params", {}).get("params.yaml", {}))


def variant_params(run: Run, variant: str) -> dict[str, Any] | None:
    """What produced ``variant``'s results in ``run``: the params of its train@ and evaluate@ stages."""
    train, evaluate = stage_params(run, f"train@{variant}"), stage_params(run, f"evaluate@{variant}")
    if train is None or evaluate is None:
        return None
    return {**train, **evaluate}


def setting_key(params: dict[str, Any]) -> str:
    """The params without the training seed, as canonical JSON: equal keys are seeds of one setting."""
    return json.dumps({k: v for k, v in params.items() if k != SEED_KEY}, sort_keys=True)


@functools.cache
def _cache_root(repo: Path) -> Path:
    cache = subprocess.run(["dvc", "cache", "dir"], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()
    return Path(cache) if Path(cache).is_absolute() else repo / cache


def cache_path(repo: Path, md5: str) -> Path:
    """Where DVC 3 keeps a file of this md5 in the repository's cache (asked of ``dvc cache dir`` once per repo)."""
    return _cache_root(repo) / "files" / "md5" / md5[:2] / md5[2:]


def items_path(repo: Path, run: Run, variant: str, results_dir: str) -> Path | None:
    """``results/<variant>/items.csv`` of ``run``: the workspace file, or the cached file the run's lock names."""
    rel = f"{results_dir}/{variant}/items.csv"
    if run.rev is None:
        p = repo / rel
        return p if p.exists() else None
    for out in run.lock.get("stages", {}).get(f"evaluate@{variant}", {}).get("outs", []):
        if out.get("path") == rel:
            p = cache_path(repo, out["md5"])
            return p if p.exists() else None
    return None


@dataclass
class VariantRun:
    """One variant's results in one run: its params, seed and per-item rows."""

    run: str
    variant: str
    params: dict[str, Any]
    seed: int
    rows: list[dict]


def collect(repo: Path, variants: list[str], results_dir: str) -> tuple[list[VariantRun], list[str]]:
    """Every (run, variant) with results, and a line for each one that is missing (named, with why)."""
    found, missing = [], []
    for run in list_runs(repo):
        for v in variants:
            params = variant_params(run, v)
            if params is None:
                missing.append(f"{run.name}: {v} not evaluated (no train@{v}/evaluate@{v} in its dvc.lock)")
                continue
            path = items_path(repo, run, v, results_dir)
            if path is None:
                missing.append(
                    f"{run.name}: {results_dir}/{v}/items.csv is not in the workspace or the DVC cache "
                    "(run `dvc exp pull` / `dvc pull` for it)"
                )
                continue
            found.append(VariantRun(run.name, v, params, int(params.get(SEED_KEY, 0)), read_items(path)))
    for line in missing:
        log.warning("%s", line)
    return found, missing
