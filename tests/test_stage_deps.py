"""Every stage's dvc.yaml deps list the code it runs: derived from the imports, checked here.

For each stage (foreach entries expanded by DVC itself) the import closure of its ``python -m``
module is computed from the source with ``ast`` — every ``import`` anywhere in a module, including
those inside functions, plus the ``__init__.py`` of every package on the way — and every file of
that closure (and any data file in those packages that their source names) must lie under one of the stage's
declared deps. A declared code path that holds no module of the closure is reported as well.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from dvc.repo import Repo

from tavse.common.dvc_stage import CODE_ROOTS, code_files, declared_code

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("tavse", "stages")


def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (a package's ``__init__.py``), or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Project module names that ``path`` imports anywhere (absolute and relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # `from tavse.models import tavse` imports a submodule, not a name
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {n for n in found if n.split(".")[0] in PROJECT_PACKAGES and module_file(n)}


def in_subpackage(path: Path, package_dir: Path) -> bool:
    """Whether ``path`` lies in a Python package below ``package_dir`` (a module there is imported on its own)."""
    return any(
        (package_dir / d / "__init__.py").is_file() for d in path.relative_to(package_dir).parents if d != Path(".")
    )


@cache
def closure(module: str) -> frozenset[Path]:
    """Every project source file that running ``python -m module`` may execute."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            parent = ".".join(parts[:i])
            if parent not in seen and module_file(parent):
                seen.add(parent)
                todo.extend(imported_names(module_file(parent), parent) - seen)
    files = {module_file(n) for n in seen}
    # Data shipped beside the modules (stored arrays, templates: in the package folder or a plain
    # sub-folder of it) is read by the module of that package that names it.
    for package_dir in {f.parent for f in files}:
        sources = "".join(f.read_text() for f in files if f.parent == package_dir)
        files.update(
            f
            for f in code_files([package_dir.relative_to(ROOT).as_posix()])
            if f.suffix != ".py"
            and not in_subpackage(f, package_dir)
            and f.relative_to(package_dir).parts[0] in sources
        )
    return frozenset(files)


def stage_module(cmd: str) -> str:
    match = re.fullmatch(r"python -m ([\w.]+)( .*)?", cmd.strip())
    assert match, f"stage command {cmd!r} is not `python -m <module> …`"
    return match.group(1)


def stages() -> list:
    with Repo(str(ROOT)) as repo:
        return [(st.addressing, st.cmd, [d.def_path for d in st.deps]) for st in repo.index.stages]


STAGES = stages()


def covered(path: Path, declared: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in declared)


@pytest.mark.parametrize("name, cmd, deps", STAGES, ids=[s[0] for s in STAGES])
def test_stage_deps_list_every_module_it_runs(name, cmd, deps):
    files = closure(stage_module(cmd))
    missing = sorted(f.relative_to(ROOT).as_posix() for f in files if not covered(f, deps))
    assert not missing, f"stage {name}: dvc.yaml deps lack {missing} (imported by `{cmd}`)"
    code = [d for d in deps if d.startswith(CODE_ROOTS)]
    stale = [d for d in code if not any(covered(f, [d]) for f in files)]
    assert not stale, f"stage {name}: dvc.yaml deps list {stale}, which `{cmd}` never imports"


def test_declared_code_reads_the_same_list_as_dvc():
    """The ingest shard fingerprint hashes exactly the code paths DVC tracks for ingest."""
    dvc_deps = next(deps for name, _, deps in STAGES if name == "ingest")
    assert declared_code("ingest") == [d for d in dvc_deps if d.startswith(CODE_ROOTS)]


def test_the_closure_sees_imports_inside_functions(tmp_path):
    """A check that cannot fail is no check: a function-level import must enter the closure."""
    files = closure("stages.train")
    assert ROOT / "tavse/training/loop.py" in files and ROOT / "tavse/common/__init__.py" in files
    lazy = [
        n
        for n in imported_names(ROOT / "tavse/download/__main__.py", "tavse.download.__main__")
        if n.startswith("tavse.common.logs")
    ]
    assert lazy, "tavse/download/__main__.py imports setup_logging inside main()"


def test_bytecode_does_not_change_dvc_status(tmp_path):
    """On a user's machine Python writes __pycache__ into the code folders that stages list."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = subprocess.run(["dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert before.returncode == 0, before.stderr
    code = (
        "import importlib, pkgutil, tavse, stages\n"
        "for pkg in (tavse, stages):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)
    assert list((ROOT / "tavse" / "training").glob("__pycache__/*.pyc")), (
        "no bytecode was written: the test saw nothing"
    )
    after = subprocess.run(["dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
