"""The smoke profile: the whole pipeline on the tiny corpus with a few training steps, in a minute or two.

    python -m tavse.smoke [--dir .tavse/smoke] [KEY=VALUE ...]     (make smoke)

Copies the working tree (tracked and untracked files that git does not ignore, i.e. your
uncommitted change too) into ``--dir``, sets :data:`SMOKE_PARAMS` (and any ``KEY=VALUE`` given, in
YAML syntax) in its ``params.yaml`` and runs the real ``dvc repro`` there. Your workspace, its
outputs and its DVC cache are not touched. The numbers it produces say that a change runs end
to end, not how well anything works: a model trained for 4 steps enhances nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

# The tiny corpus (4 speakers, 2 commands each), short noise, a few steps: every stage in seconds.
SMOKE_PARAMS: dict[str, Any] = {
    "synth.preset": "tiny",
    "synth_noise.duration_s": 8.0,
    "synth_noise.channels": 1,
    "validation.segments_per_utterance": 2,
    "train.segment_frames": 14,
    "train.batch_size": 2,
    "train.max_steps": 4,
    "train.warmup_steps": 1,
    "train.eval_every": 2,
    "train.checkpoint_every": 2,
    "train.num_workers": 0,
}
REPO = Path(__file__).resolve().parents[1]


def copy_worktree(src: Path, dest: Path) -> None:
    """Tracked and untracked-not-ignored files of ``src`` into a fresh git repository ``dest`` (one commit)."""
    listed = (
        subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        f = src / name
        if f.is_file() and not f.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / name)
    git = ["git", "-c", "user.name=tavse-smoke", "-c", "user.email=smoke@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "smoke: copy of the working tree"]):
        subprocess.run([*git, *cmd], cwd=dest, check=True)


def set_params(path: Path, changes: dict[str, Any]) -> None:
    """Set dotted keys in a params.yaml; a key that does not exist is an error naming it."""
    params = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise SystemExit(f"tavse.smoke: {path} has no key {key}")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"tavse.smoke: {path} has no key {key}")
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tavse.smoke", description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=REPO / ".tavse" / "smoke", help="where to run (emptied first)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more params to set, e.g. train.max_steps=8")
    args = ap.parse_args(argv)
    changes = dict(SMOKE_PARAMS)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected KEY=VALUE")
        changes[key] = yaml.safe_load(value)
    if args.dir.exists():
        shutil.rmtree(args.dir)
    args.dir.mkdir(parents=True)
    copy_worktree(REPO, args.dir)
    set_params(args.dir / "params.yaml", changes)
    print(
        f"tavse.smoke: dvc repro in {args.dir} (tiny corpus, {changes['train.max_steps']} training steps)", flush=True
    )
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=args.dir).returncode
    took = time.perf_counter() - t0
    if rc:
        print(
            f"tavse.smoke: FAILED after {took:.0f} s (dvc repro exit {rc}); the run is in {args.dir}", file=sys.stderr
        )
        return rc
    print(
        f"tavse.smoke: the whole pipeline ran in {took:.0f} s; results in {args.dir / 'results'} "
        f"(report: {args.dir / 'results' / 'report.html'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
