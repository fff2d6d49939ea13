"""The code a stage runs, as declared in ``dvc.yaml``: one list for DVC and for our own caches.

``dvc.yaml`` lists every project module a stage imports (``tests/test_stage_deps.py`` derives
the import closure from the code and fails on a missing entry). Work that caches results outside
DVC (ingest's resumable shards) keys them by :func:`code_fingerprint` of the same entries, so the
two can never disagree about which code change invalidates what.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("stages/", "tavse/")
# Machine-local files that never change what code does (also in .dvcignore).
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".pyo")


def declared_code(stage: str, dvc_yaml: Path = REPO_ROOT / "dvc.yaml") -> list[str]:
    """The code paths (files or folders under stages/ and tavse/) in ``stage``'s deps."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    if stage not in stages:
        raise KeyError(f"{dvc_yaml}: no stage {stage!r}")
    deps = stages[stage].get("do", stages[stage]).get("deps", [])
    return [d for d in deps if isinstance(d, str) and d.startswith(CODE_ROOTS)]


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
