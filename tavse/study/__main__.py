"""The ablation programme of ``ablations.yaml``: list it, queue it as DVC experiments, tabulate the results.

    python -m tavse.study list [SET ...] [--seeds 1,2]   # the experiments, with their -S overrides
    python -m tavse.study queue [SET ...] [--seeds S,...] [--start -j N] [--wait]
    python -m tavse.study count [SET ...]                # how many to run (SLURM array size)
    python -m tavse.study task --index I [SET ...]       # (SLURM array) name and -S args of experiment I
    python -m tavse.study table [--out results/study]    # the study table over every experiment of HEAD

Sets default to all of ``ablations.yaml``. ``queue`` adds one ``dvc exp run --queue`` per
experiment (one equal to the workspace, or to an earlier experiment, is left out: its results are there;
so is one that is already an experiment of HEAD, so that a second ``queue`` runs only what is missing);
``--start`` then runs ``dvc queue start -j N`` and ``--wait`` follows the queue to its end.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tavse.common.config import ConfigError, load_config
from tavse.common.io import atomic_path, write_json
from tavse.common.logs import setup_logging
from tavse.evaluation.page import ReportError, write_report_page
from tavse.study import ablations, experiments, table

log = logging.getLogger("tavse.study")
ABLATIONS = Path("ablations.yaml")
PARAMS = Path("params.yaml")


def _plan(args) -> tuple[list[ablations.Experiment], list[tuple[ablations.Experiment, str]]]:
    """(experiments to run, [(experiment, the run it equals)]) of ``args.sets`` (all when empty) and ``args.seeds``."""
    exps = ablations.plan(ABLATIONS, PARAMS, args.sets or None, args.seeds)
    return ablations.split_runs(exps, yaml.safe_load(PARAMS.read_text()))


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}") from None


def _add_seeds(p: argparse.ArgumentParser) -> None:
    """``--seeds``, the same on every subcommand that picks experiments."""
    p.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        metavar="S[,S...]",
        help="these training seeds instead of ablations.yaml's (a smaller budget)",
    )


def cmd_list(args) -> int:
    to_run, same = _plan(args)
    for i, exp in enumerate(to_run):
        print(f"{i:3d}  {exp.name:36s} {' '.join(exp.set_args())}")
    for exp, other in same:
        print(f"  -  {exp.name:36s} {' '.join(exp.set_args())}   (= {other}: its results, not run)")
    return 0


def cmd_count(args) -> int:
    print(len(_plan(args)[0]))
    return 0


def cmd_task(args) -> int:
    exps = _plan(args)[0]
    if not 0 <= args.index < len(exps):
        print(
            f"tavse.study: task {args.index} out of range: {len(exps)} experiment(s) in {args.sets or 'all sets'}",
            file=sys.stderr,
        )
        return 2
    exp = exps[args.index]
    print("\n".join([exp.name, *exp.set_args()]))
    return 0


def _dvc(*args: str) -> str:
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tavse.study: `dvc {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout


def _queue_counts() -> dict[str, int]:
    """Experiments of the DVC queue by status (Queued, Running, Success, Failed), and its active ``workers``."""
    counts: dict[str, int] = {"workers": 0}
    for line in _dvc("queue", "status").splitlines()[1:]:
        parts = line.split()
        if line.startswith("Worker status:"):  # "Worker status: 1 active, 0 idle"
            counts["workers"] = int(parts[2])
            continue
        for status in ("Queued", "Running", "Success", "Failed"):
            if status in parts:
                counts[status] = counts.get(status, 0) + 1
    return counts


def _start_queue(jobs: int) -> None:
    # Not through pipes: the queue worker that `dvc queue start` leaves running inherits its
    # stdout and stderr, and reading a pipe to its end would wait for the whole queue.
    with tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)], stdout=subprocess.DEVNULL, stderr=err
        ).returncode
        if code:
            err.seek(0)
            raise SystemExit(f"tavse.study: `dvc queue start -j {jobs}` failed ({code}):\n{err.read().strip()}")


def cmd_queue(args) -> int:
    exps = _plan(args)[0]
    done = {run.name for run in experiments.list_runs(Path.cwd())}
    for exp in [e for e in exps if e.name in done]:
        log.info(
            "%s is already an experiment of HEAD: not queued again (`dvc exp remove %s` to run it anew)",
            exp.name,
            exp.name,
        )
    exps = [e for e in exps if e.name not in done]
    for exp in exps:
        _dvc("exp", "run", "--queue", "-n", exp.name, *exp.set_args())
        log.info("queued %s (%s)", exp.name, " ".join(exp.set_args()))
    log.info("%d experiment(s) queued", len(exps))
    if args.start:
        _start_queue(args.jobs)
        log.info("dvc queue start -j %d: follow it with `dvc queue status` / `dvc queue logs NAME`", args.jobs)
    if args.wait:
        t0 = time.monotonic()
        while True:
            counts = _queue_counts()
            log.info(
                "queue after %.0f s: %s",
                time.monotonic() - t0,
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "workers") or "empty",
            )
            if not counts.get("Queued") and not counts.get("Running"):
                break
            if counts.get("Queued") and not counts.get("Running") and not counts["workers"]:
                # A worker can end while experiments are still queued (seen after `dvc queue remove`):
                # waiting on would never end.
                if not args.start:
                    log.error(
                        "%d experiment(s) queued and no queue worker: start one with `dvc queue start -j N`",
                        counts["Queued"],
                    )
                    return 1
                log.warning(
                    "%d experiment(s) queued and no queue worker: starting %d again", counts["Queued"], args.jobs
                )
                _start_queue(args.jobs)
            time.sleep(args.poll_s)
        if counts.get("Failed"):
            log.error("%d experiment(s) failed: see `dvc queue status` and `dvc queue logs NAME`", counts["Failed"])
            return 1
    return 0


def cmd_table(args) -> int:
    cfg = load_config(PARAMS)
    repo = Path.cwd()
    found, missing = experiments.collect(repo, list(cfg.variants), cfg.evaluation.out_dir)
    if not found:
        print("tavse.study: no evaluated run found (dvc repro, or run the experiments first)", file=sys.stderr)
        return 1
    workspace = experiments.list_runs(repo)[0]
    # The default setting of a variant: what the workspace ran it with, or (not run there) params.yaml.
    current = experiments.flatten(yaml.safe_load(PARAMS.read_text()))
    default = {v: experiments.variant_params(workspace, v) or current for v in cfg.variants}
    result = table.study(found, default, list(cfg.evaluation.snrs_db), cfg.seed, cfg.evaluation.bootstrap)
    result["missing"] = missing
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", result)
    md = table.markdown(result, list(cfg.evaluation.snrs_db))
    with atomic_path(out / "study.md") as tmp:
        tmp.write_text(md)
    chart = out / "si_snri_by_snr.png"
    table.plot_by_snr(result, list(cfg.evaluation.snrs_db), chart)
    print(md)
    log.info(
        "study table of %d run(s) x variant(s) in %s (study.md, study.json, si_snri_by_snr.png)%s",
        len(found),
        out,
        f"; {len(missing)} missing (see above)" if missing else "",
    )
    # The report page with the study after its answer, when the workspace has the pipeline's results.
    section = (
        "study",
        "Seeds and ablations",
        table.html_section(result, list(cfg.evaluation.snrs_db), chart.read_bytes()),
    )
    try:
        page = write_report_page(cfg, [section], out / "report.html")
    except (FileNotFoundError, ReportError) as exc:
        log.warning(
            "no report page with the study: the workspace lacks the pipeline's results (%s); "
            "`dvc repro` (or `dvc exp apply` an experiment), then run this again",
            exc,
        )
    else:
        log.info("the report page with the study: %s", page)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tavse.study", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the experiments of the sets")
    p.add_argument("sets", nargs="*")
    _add_seeds(p)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("queue", help="queue the experiments of the sets as DVC experiments")
    p.add_argument("sets", nargs="*")
    _add_seeds(p)
    p.add_argument("--start", action="store_true", help="then `dvc queue start`")
    p.add_argument("-j", "--jobs", type=int, default=1, help="queue workers for --start (each trains on its own)")
    p.add_argument("--wait", action="store_true", help="follow the queue until nothing is queued or running")
    p.add_argument("--poll-s", type=float, default=30.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_queue)
    p = sub.add_parser("count", help="how many experiments of the sets are to run (the SLURM array size)")
    p.add_argument("sets", nargs="*")
    _add_seeds(p)
    p.set_defaults(func=cmd_count)
    p = sub.add_parser("task", help="name and -S arguments of experiment INDEX (one per line), for SLURM arrays")
    p.add_argument("--index", type=int, required=True, help="the array task's index")
    p.add_argument("sets", nargs="*")
    _add_seeds(p)
    p.set_defaults(func=cmd_task)
    p = sub.add_parser("table", help="collect the experiments of HEAD into the study table")
    p.add_argument("--out", default="results/study")
    p.set_defaults(func=cmd_table)
    args = ap.parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"tavse.study: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
