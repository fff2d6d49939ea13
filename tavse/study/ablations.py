"""The ablation programme of ``ablations.yaml`` as DVC experiments: one ``dvc exp run -S …`` each.

A set varies one per-variant setting (``variants.<name>.<knob>``) of the variants it lists,
and every value is run with every training seed (``train.seed``): the corpus, the mixtures
and the test list keep the data ``seed``, so an experiment re-runs only the training of the
variants whose params it changes, their evaluation and what follows (``compare``, ``report``).
An experiment whose params equal the workspace's (or an earlier experiment's) is not queued again.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tavse.common.config import ConfigError, config_from_dict
from tavse.study.experiments import SEED_KEY

KNOBS = ("fusion", "modality_dropout")  # the per-variant settings a set may vary


@dataclass(frozen=True)
class Experiment:
    name: str  # the DVC experiment name: <set>[-<value>]-s<seed>
    set: str
    overrides: dict[str, Any]  # dotted params.yaml key -> value (dvc exp run -S key=value)

    def set_args(self) -> list[str]:
        """``-S key=value`` arguments for ``dvc exp run`` (values in YAML syntax)."""
        args = []
        for k, v in self.overrides.items():
            args += ["-S", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"]
        return args


def _get(params: dict, key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = node[part]
    return node


def _set(params: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value


def plan(
    ablations_path: Path, params_path: Path, sets: list[str] | None = None, seeds: list[int] | None = None
) -> list[Experiment]:
    """Every experiment of ``sets`` (all sets when None), each checked against the params' config.

    ``seeds`` replaces the file's training seeds (a smaller budget: ``--seeds 1``).

    Raises ConfigError naming the file and the entry for an unknown set, variant or knob, or for a
    value the config rejects (the message of :func:`tavse.common.config.config_from_dict`).
    """
    spec = yaml.safe_load(ablations_path.read_text()) or {}
    where = str(ablations_path)
    unknown = set(spec) - {"seeds", "sets"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (expected seeds, sets)")
    seeds = spec.get("seeds") if seeds is None else seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    all_sets = spec.get("sets") or {}
    chosen = list(all_sets) if sets is None else sets
    params = yaml.safe_load(params_path.read_text())
    out = []
    for name in chosen:
        if name not in all_sets:
            raise ConfigError(f"{where}: no set {name!r} (sets: {', '.join(all_sets)})")
        body = all_sets[name] or {}
        extra = set(body) - {"variants", "vary"}
        if extra:
            raise ConfigError(f"{where}: sets.{name}: unknown key(s) {sorted(extra)} (expected variants, vary)")
        variants, vary = body.get("variants") or [], body.get("vary") or {}
        for v in variants:
            if v not in params["variants"]:
                raise ConfigError(f"{where}: sets.{name}.variants: {v!r} is not a variant of {params_path}")
        if len(vary) > 1 or any(k not in KNOBS for k in vary):
            raise ConfigError(f"{where}: sets.{name}.vary: one of {KNOBS} with a list of values, got {vary!r}")
        values: list[Any] = [None]
        knob = next(iter(vary), None)
        if knob is not None:
            values = vary[knob]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: sets.{name}.vary.{knob}: a non-empty list of values, got {values!r}")
        for value in values:
            for seed in seeds:
                overrides: dict[str, Any] = {SEED_KEY: seed}
                if knob is not None:
                    overrides.update({f"variants.{v}.{knob}": value for v in variants})
                label = "" if knob is None else f"-{value}"
                out.append(Experiment(f"{name}{label}-s{seed}", name, overrides))
    for exp in out:
        trial = copy.deepcopy(params)
        for k, v in exp.overrides.items():
            try:
                _get(params, k)
            except (KeyError, TypeError):
                raise ConfigError(
                    f"{where}: experiment {exp.name}: {params_path} has no key {k} to set "
                    "(`dvc exp run -S` changes existing keys: add it there first)"
                ) from None
            _set(trial, k, v)
        try:
            config_from_dict(trial)
        except (ConfigError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: experiment {exp.name} ({' '.join(exp.set_args())}): {exc}") from None
    return out


def split_runs(exps: list[Experiment], params: dict) -> tuple[list[Experiment], list[tuple[Experiment, str]]]:
    """(the experiments to run, [(experiment, what it equals)]) in plan order.

    An experiment whose resulting params equal the workspace's ("the workspace") or an earlier
    experiment's (its name) is not run again: ``fusion-film-s2`` is ``seeds-s2`` where film is the
    default fusion. The table groups results by params, so it finds them there.
    """

    def resulting(exp: Experiment) -> str:
        trial = copy.deepcopy(params)
        for k, v in exp.overrides.items():
            _set(trial, k, v)
        return json.dumps(trial, sort_keys=True)

    seen = {json.dumps(params, sort_keys=True): "the workspace"}
    to_run, same = [], []
    for exp in exps:
        key = resulting(exp)
        if key in seen:
            same.append((exp, seen[key]))
        else:
            seen[key] = exp.name
            to_run.append(exp)
    return to_run, same
