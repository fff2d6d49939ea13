"""The slurm/ wrappers on a real one-node SLURM cluster (slurm/cluster.sh), on the tiny preset.

Needs root and the Debian SLURM packages (cluster.sh installs them when missing). Timings are
printed (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT
from tests.e2e.test_pipeline import BIN, TINY, clone_repo, dvc, set_params

pytestmark = pytest.mark.e2e  # a real one-node SLURM cluster running the pipeline

CLUSTER = ROOT / "slurm" / "cluster.sh"
VARIANTS = ["audio_only", "audio_rgb", "audio_thermal", "audio_rgb_thermal"]
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm-state")
    env = dict(os.environ, TAVSE_SLURM_STATE=str(state), TAVSE_SLURM_CPUS="8", TAVSE_SLURM_GPUS="4")
    t = time.perf_counter()
    subprocess.run([str(CLUSTER), "start"], env=env, check=True)
    TIMINGS["cluster start"] = time.perf_counter() - t
    env["SLURM_CONF"] = str(state / "slurm.conf")
    yield env
    subprocess.run([str(CLUSTER), "stop"], env=env, check=False)
    print("\nslurm test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, cluster) -> Path:
    """The tiny project with its data stages done once; .env names the venv, scratch and clones."""
    base = tmp_path_factory.mktemp("slurm-project")
    (base / "repo").mkdir()
    repo = clone_repo(base / "repo")
    set_params(repo, **TINY)
    (repo / "dvc.lock").unlink(missing_ok=True)  # lock entries only for what is reproduced here
    (repo / ".env").write_text(
        f"TAVSE_VENV={sys.prefix}\nTAVSE_SCRATCH_DIR={base / 'scratch'}\n"
        f"TAVSE_CLONES_DIR={base / 'clones'}\nTAVSE_LOG_LEVEL=INFO\n"
    )
    (base / "logs").mkdir()
    t = time.perf_counter()
    dvc(repo, "repro", "val_mixtures")
    TIMINGS["data stages (dvc repro val_mixtures)"] = time.perf_counter() - t
    # The baseline of the experiments: a commit whose dvc.lock names only outputs the cache has.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "data stages"], cwd=repo, check=True)
    return repo


def sbatch(cluster, repo: Path, *args: str, wait: bool = True, env: dict | None = None) -> tuple[str, int]:
    """Submit from the repository root; returns (job id, exit code of sbatch)."""
    cmd = ["sbatch", "--parsable", *(["--wait"] if wait else []), *args]
    res = subprocess.run(cmd, cwd=repo, env=dict(cluster, **(env or {})), capture_output=True, text=True, check=False)
    job = res.stdout.strip().split(";")[0].splitlines()[0] if res.stdout.strip() else ""
    if not job:
        raise AssertionError(f"sbatch failed: {res.stdout}\n{res.stderr}")
    return job, res.returncode


def logs(repo: Path) -> Path:
    return repo.parent / "logs"


def jobcomp(cluster) -> list[dict[str, str]]:
    text = (Path(cluster["TAVSE_SLURM_STATE"]) / "log" / "jobcomp.log").read_text()
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip()]


def test_single_stage_via_repro_sbatch(cluster, repo):
    t = time.perf_counter()
    job, rc = sbatch(cluster, repo, f"--output={logs(repo)}/repro-%j.out", "slurm/repro.sbatch", "test_mixtures")
    TIMINGS["repro.sbatch test_mixtures"] = time.perf_counter() - t
    out = (logs(repo) / f"repro-{job}.out").read_text()
    assert rc == 0, out
    assert "tavse: ready" in out and "Running stage 'test_mixtures'" in out, out
    assert (repo / "data" / "mixtures" / "test.csv").is_file()
    assert json.loads(dvc(repo, "status", "test_mixtures", "--json").stdout) == {}


def test_sharded_ingest_prep_array_merge_gives_the_plain_result(cluster, repo):
    """`slurm/ingest.sbatch --shards 2`: prep job, 2 array tasks (one stopped by USR1 and requeued), merge."""
    lock_text = (repo / "dvc.lock").read_text()
    lock = yaml.safe_load(lock_text)
    plain = lock["stages"].pop("ingest")  # from the fixture's plain `dvc repro` of the data stages
    assert plain["outs"][0]["path"] == "data/ingest" and plain["outs"][0]["md5"]
    # Make ingest really run again: no output, no lock entry, no run-cache entry to restore it from.
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(repo / "data" / "ingest")
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)
    scratch = repo.parent / "scratch" / "ingest"
    assert not scratch.exists() or not list(scratch.iterdir())

    t = time.perf_counter()
    env = {k: v for k, v in cluster.items() if not k.startswith("SLURM_JOB")}
    sub = subprocess.run(
        [str(repo / "slurm" / "ingest.sbatch"), "--shards", "2"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert sub.returncode == 0, sub.stdout + sub.stderr
    assert "prep job" in sub.stdout and "dvc repro synth_corpus" in sub.stdout, sub.stdout
    prep, array, merge = re.search(r"tavse: jobs (\d+) (\d+) (\d+)", sub.stdout).groups()
    slurm_logs = repo / ".tavse" / "slurm-logs"
    # Stop task 0 as soon as it runs: it gets SIGTERM, is requeued, and builds its shards on restart.
    task0 = slurm_logs / f"tavse-ingest-shard-{array}_0.out"
    _wait_for(lambda: task0.is_file() and "tavse: ready" in task0.read_text(), 120, "array task 0 to start")
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{array}_0"], env=cluster, check=True)

    def gone(job: str) -> bool:
        res = subprocess.run(["squeue", "-h", "-j", job], env=cluster, capture_output=True, text=True, check=False)
        return not res.stdout.strip() and (res.returncode == 0 or "Invalid job id" in res.stderr)

    _wait_for(lambda: gone(merge), 300, "the merge job")
    TIMINGS["sharded ingest (prep + 2 tasks, one requeued, + merge)"] = time.perf_counter() - t

    done = {
        (r.get("Name"), r.get("ArrayJobId", ""), r.get("ArrayTaskId", "")): r
        for r in jobcomp(cluster)
        if r.get("JobState") == "COMPLETED" and int(r["JobId"]) >= int(prep)
    }
    assert ("tavse-ingest-prep", "", "") in done, done.keys()
    assert {("tavse-ingest-shard", array, "0"), ("tavse-ingest-shard", array, "1")} <= done.keys(), done.keys()
    assert ("tavse-ingest", "", "") in done, done.keys()
    # The merge started after both tasks ended (afterok), task 0 after its requeue included.
    tasks = [done["tavse-ingest-shard", array, i] for i in "01"]
    assert done["tavse-ingest", "", ""]["StartTime"] >= max(r["EndTime"] for r in tasks)

    out0 = task0.read_text()
    assert "got SIGUSR1" in out0 and "requeueing job" in out0 and "restart=1" in out0, out0
    assert "shard 0/2 done: built 2, reused 0" in out0, out0
    out1 = (slurm_logs / f"tavse-ingest-shard-{array}_1.out").read_text()
    assert "shard 1/2 done: built 2, reused 0" in out1, out1
    merged = (slurm_logs / f"tavse-ingest-{merge}.out").read_text()
    assert "Running stage 'ingest'" in merged and "4 archives: 0 shards to build, 4 reused" in merged, merged
    # Merged shards removed, no half-built shard left by the stop; .locks keeps only lock files
    # (never deleted: removing a flock file another process may be opening would break the lock).
    assert [p.name for p in scratch.iterdir()] in ([], [".locks"])
    assert all(f.suffix == ".lock" for f in scratch.glob(".locks/*"))

    assert json.loads(dvc(repo, "status", "ingest", "--json").stdout) == {}
    # The same lock entry as the plain run: same deps and params, same output hashes.
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["ingest"] == plain
    (repo / "dvc.lock").write_text(lock_text)  # the entry back in its place, for the tests after this one
    assert json.loads(dvc(repo, "status", "val_mixtures", "--json").stdout) == {}


def test_array_trains_four_variants_concurrently_and_workspace_sees_them(cluster, repo):
    t = time.perf_counter()
    job, rc = sbatch(
        cluster,
        repo,
        "--array=0-3",
        "--cpus-per-task=1",
        f"--output={logs(repo)}/train-%A_%a.out",
        "slurm/train.sbatch",
    )
    TIMINGS["four-variant array (sbatch --wait)"] = time.perf_counter() - t
    outs = {v: (logs(repo) / f"train-{job}_{i}.out").read_text() for i, v in enumerate(VARIANTS)}
    assert rc == 0, "\n\n".join(outs.values())
    for v, out in outs.items():
        assert f"experiment slurm-{job}-{v} pushed" in out, out

    # The four tasks overlapped: every one started before any one ended (SLURM's job completion log).
    tasks = [r for r in jobcomp(cluster) if r.get("Name") == "tavse-train" and r.get("JobState") == "COMPLETED"]
    tasks = [r for r in tasks if int(r["JobId"]) >= int(job)][-4:]
    assert len(tasks) == 4, tasks
    assert max(r["StartTime"] for r in tasks) < min(r["EndTime"] for r in tasks), tasks

    # The user's workspace lists all four experiments, with their metrics ...
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    names = {r["name"]: r for rev in shown for e in (rev.get("experiments") or []) for r in e.get("revs", [])}
    for v in VARIANTS:
        name = f"slurm-{job}-{v}"
        assert name in names, sorted(names)
        metrics = names[name]["data"]["metrics"]
        assert f"dvclive/{v}/metrics.json" in metrics, metrics
    table = dvc(
        repo,
        "exp",
        "show",
        "--md",
        "--drop",
        ".*",
        "--keep",
        "^(Experiment|State|train.max_steps|dvclive/.*/metrics.json:(si_snri|si_snri_active|step))$",
    )
    print("\n" + table.stdout)
    # ... and gets one's outputs from the shared cache without recomputing.
    # (exp apply then checks out every output of dvc.yaml and complains about the stages never run
    # here — evaluate@ etc. — so its exit status is not the point; the variant's outputs are.)
    applied = dvc(repo, "exp", "apply", f"slurm-{job}-audio_rgb", check=False)
    assert "models/audio_rgb\n" not in applied.stdout + applied.stderr + "\n", applied.stderr
    dvc(repo, "checkout", "train@audio_rgb")
    assert (repo / "models" / "audio_rgb" / "best.pt").is_file()
    status = dvc(repo, "status", "train@audio_rgb", "--json")
    assert json.loads(status.stdout) == {}, status.stdout


def _wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_usr1_requeues_and_resumes_to_the_same_result(cluster, repo):
    """The job trains with 2 data-parallel ranks (gloo on CPU), as a 2-GPU job would with NCCL."""
    steps = 100
    ranks = {"TAVSE_NPROC_PER_NODE": "2"}
    params = (repo / "params.yaml").read_text()
    set_params(
        repo, **{"train.max_steps": steps, "train.eval_every": 20, "train.checkpoint_every": 5, "train.patience": 100}
    )
    try:
        _requeue_and_resume(cluster, repo, steps, ranks)
    finally:  # the tests after this one train the tiny recipe again (4 steps, not 100)
        (repo / "params.yaml").write_text(params)


def _requeue_and_resume(cluster, repo: Path, steps: int, ranks: dict) -> None:
    # The uninterrupted reference, beside the job: a copy of the workspace, its own scratch.
    ref = repo.parent / "reference"
    shutil.copytree(repo, ref, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    reference = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train@audio_only"],
        cwd=ref,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(
            os.environ,
            PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
            TAVSE_SCRATCH_DIR=str(ref / ".scratch"),
            OMP_NUM_THREADS="1",
            **ranks,
        ),
    )  # as in the job

    scratch = repo.parent / "scratch" / "train"
    before = set(scratch.glob("audio_only-*/state.pt"))
    t = time.perf_counter()
    job, _ = sbatch(
        cluster,
        repo,
        "--array=0",
        "--cpus-per-task=1",
        f"--output={logs(repo)}/resume-%A_%a.out",
        "slurm/train.sbatch",
        "audio_only",
        wait=False,
        env={"TAVSE_KEEP_CLONES": "1", **ranks},
    )
    log = logs(repo) / f"resume-{job}_0.out"
    _wait_for(lambda: log.is_file() and "tavse: ready" in log.read_text(), 120, "the ready line")
    _wait_for(lambda: set(scratch.glob("audio_only-*/state.pt")) - before, 240, "the first state.pt")
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], env=cluster, check=True)
    signalled = time.perf_counter() - t

    def gone() -> bool:  # neither running nor pending (requeued) any more
        res = subprocess.run(["squeue", "-h", "-j", job], env=cluster, capture_output=True, text=True, check=False)
        return not res.stdout.strip() and (res.returncode == 0 or "Invalid job id" in res.stderr)

    _wait_for(gone, 360, "the requeued job to finish")
    TIMINGS["interrupted + requeued training"] = time.perf_counter() - t
    out = log.read_text()
    assert "got SIGUSR1" in out and "requeueing job" in out, out
    assert "restart=1" in out and "resuming audio_only" in out, out
    assert f"experiment slurm-{job}-audio_only pushed" in out, out
    # It really was stopped part-way: the requeued run resumed from a step above 0 and below the end.
    step = int(re.search(r"resuming audio_only from \S+ at step (\d+)", out).group(1))
    assert 0 < step < steps, (step, signalled)

    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    clone = repo.parent / "clones" / f"{job}-audio_only"
    got = torch.load(clone / "models" / "audio_only" / "best.pt", weights_only=True)
    want = torch.load(ref / "models" / "audio_only" / "best.pt", weights_only=True)
    got_w, want_w = got["state_dict"], want["state_dict"]
    assert got_w.keys() == want_w.keys()
    for k in want_w:
        assert torch.equal(got_w[k], want_w[k]), k
    assert got["best_step"] == want["best_step"] and got["val"] == want["val"]
    summary = json.loads((clone / "models" / "audio_only" / "summary.json").read_text())
    assert summary["processes"] == 2
    print(
        f"\npreempted at step {step} of {steps}, requeued, resumed; best step {got['best_step']}: "
        + ", ".join(
            f"{k} {got['val'][k]:.4f} (uninterrupted {want['val'][k]:.4f})"
            for k in ("si_snr", "si_snri", "si_snri_snr-5", "si_snri_snr+10")
        )
    )
    assert json.loads((clone / "models" / "audio_only" / "summary.json").read_text()) == json.loads(
        (ref / "models" / "audio_only" / "summary.json").read_text()
    )


def test_study_array_runs_each_ablation_experiment_and_the_table_reads_them(cluster, repo):
    """slurm/study.sbatch submits itself as one task per experiment of ablations.yaml; each pushes its experiment."""
    (repo / "ablations.yaml").write_text(
        yaml.safe_dump(
            {
                "seeds": [1, 2],
                "sets": {
                    "seeds": {"variants": VARIANTS},
                    "modality_dropout": {"variants": ["audio_rgb_thermal"], "vary": {"modality_dropout": [0.5]}},
                },
            }
        )
    )
    env = dict(cluster, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    t = time.perf_counter()
    sub = subprocess.run(["slurm/study.sbatch"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job = re.search(r"Submitted batch job (\d+)", sub.stdout).group(1)
    names = {"seeds-s2", "modality_dropout-0.5-s1", "modality_dropout-0.5-s2"}  # seeds-s1 is the workspace's setting
    log_dir = repo / ".tavse" / "slurm-logs"
    outs = [log_dir / f"tavse-study-{job}_{i}.out" for i in range(len(names))]

    def done() -> bool:
        return all(o.exists() and ("pushed to" in o.read_text() or "Error" in o.read_text()) for o in outs)

    _wait_for(done, 2400, "the study array")
    TIMINGS["study array, 3 experiments"] = time.perf_counter() - t
    pushed = set()
    for o in outs:
        out = o.read_text()
        found = re.findall(r"tavse: experiment (\S+) pushed", out)
        assert len(found) == 1, out
        pushed.add(found[0])
        ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}
        assert not ran & {"synth_corpus", "synth_noise", "ingest", "noise", "val_mixtures"}, (found, sorted(ran))
    assert pushed == names
    table = subprocess.run(
        [str(BIN / "python"), "-m", "tavse.study", "table", "--out", "results/study"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0, table.stdout + table.stderr
    result = json.loads((repo / "results" / "study" / "study.json").read_text())
    rows = {(r["variant"], r["setting"], r["condition"]): r["seeds"] for r in result["rows"]}
    # The workspace trained nothing, so each experiment trained audio_only with its own seed.
    assert rows[("audio_only", "default", "full")] == [1, 2]
    assert rows[("audio_rgb_thermal", "modality_dropout=0.5", "no_thermal")] == [1, 2]
