"""What ``dvc.yaml`` declares a stage reads: its code and its params. One list for DVC and for us.

``dvc.yaml`` lists every project module a stage imports (``tests/test_stage_deps.py`` derives
the import closure from the code and fails on a missing entry). Work that caches results outside
DVC (ingest's resumable shards) keys them by :func:`code_fingerprint` of the same entries, so the
two can never disagree about which code change invalidates what. A stage's config only lets it
read the params of :func:`declared_params` (see ``tavse.common.config.load_config``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("stages/", "tavse/")
# Machine-local files that never change what code does (also in .dvcignore).
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".pyo")


INTERPOLATION = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def stage_definition(stage: str, dvc_yaml: Path = REPO_ROOT / "dvc.yaml") -> dict[str, Any]:
    """The body of ``stage`` ("name" or "name@key" of a foreach), with ``${key}``/``${item}`` filled in."""
    name, _, key = stage.partition("@")
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    if name not in stages or bool(key) != ("foreach" in stages[name]):
        raise KeyError(f"{dvc_yaml}: no stage {stage!r}")
    body = stages[name].get("do", stages[name])

    def fill(x: Any) -> Any:
        if isinstance(x, str):
            return INTERPOLATION.sub(lambda m: key if m.group(1) in ("key", "item") else m.group(0), x)
        if isinstance(x, list):
            return [fill(v) for v in x]
        if isinstance(x, dict):
            return {fill(k): fill(v) for k, v in x.items()}
        return x

    return fill(body)


def declared_code(stage: str, dvc_yaml: Path = REPO_ROOT / "dvc.yaml") -> list[str]:
    """The code paths (files or folders under stages/ and tavse/) in ``stage``'s deps."""
    deps = stage_definition(stage, dvc_yaml).get("deps", [])
    return [d for d in deps if isinstance(d, str) and d.startswith(CODE_ROOTS)]


def declared_params(stage: str, dvc_yaml: Path = REPO_ROOT / "dvc.yaml") -> set[str]:
    """Dotted params.yaml keys ``stage`` may read: its ``params`` list, and every key that is
    interpolated into its command or paths (a change there changes what DVC sees)."""
    body = stage_definition(stage, dvc_yaml)
    keys = {p for p in body.get("params", []) if isinstance(p, str)}
    keys.update(INTERPOLATION.findall(yaml.safe_dump({k: v for k, v in body.items() if k != "params"})))
    return keys


def code_files(paths: list[str], root: Path = REPO_ROOT) -> list[Path]:
    """The files under ``paths`` (relative to ``root``), sorted, without bytecode."""
    out: set[Path] = set()
    for rel in paths:
        p = root / rel
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file() and f.suffix not in IGNORED_SUFFIXES and not set(IGNORED_PARTS) & set(f.parts):
                out.add(f)
    return sorted(out)


def code_fingerprint(stage: str, root: Path = REPO_ROOT) -> str:
    """A short hash of the names and bytes of every file ``stage`` declares as code."""
    h = hashlib.sha256()
    for f in code_files(declared_code(stage, root / "dvc.yaml"), root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
