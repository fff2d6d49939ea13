"""``python -m tavse.cluster_setup`` + real ``dvc push`` / ``dvc pull`` against a local S3 (moto).

A throw-away git+DVC repository tracks a small directory (an LMDB-like ``data.mdb`` and a few
files); the cache lives on a fake scratch root, the remote on moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tavse import cluster_setup as cs
from tavse.dotenv import read_dotenv

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "TAVSEKEYID0123456789"
SECRET = "tavse-secret-should-never-leak-9f3c"
BUCKET = "tavse-test"


@pytest.fixture()
def s3_endpoint(monkeypatch):
    """moto's S3 server on a free local port, with fake AWS credentials in the environment."""
    import boto3
    import moto.server as server_mod

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAVSE_", "DVC_"))}
    env.update(
        DVC_NO_ANALYTICS="1",
        PYTHONPATH=str(ROOT),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    return env


def _run(args: list[str], cwd: Path, outputs: list[str]) -> str:
    """Run a command, keep its combined output for the no-secret check, fail with it on error."""
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    text = done.stdout + done.stderr
    outputs.append(text)
    assert done.returncode == 0, f"{args} failed:\n{text}"
    return text


def _dvc(args: list[str], cwd: Path, outputs: list[str]) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, outputs)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cache_path(cache_dir: Path, data: bytes) -> Path:
    digest = hashlib.md5(data).hexdigest()
    return cache_dir / "files" / "md5" / digest[:2] / digest[2:]


@pytest.mark.e2e
def test_push_pull_roundtrip_through_s3(tmp_path, s3_endpoint):
    repo, scratch, outputs = tmp_path / "repo", tmp_path / "scratch", []
    repo.mkdir()
    _run(["git", "init", "-q"], repo, outputs)
    _dvc(["init", "-q"], repo, outputs)
    committed = (repo / ".dvc" / "config").read_bytes()

    data = repo / "data" / "ingest"
    (data / "lmdb" / "train").mkdir(parents=True)
    (data / "lmdb" / "train" / "data.mdb").write_bytes(os.urandom(256 * 1024) + bytes(4096))
    (data / "manifests").mkdir()
    (data / "manifests" / "train.csv").write_text("id,frames\na,10\nb,12\n")
    (repo / "data" / "blob.bin").write_bytes(bytes(range(256)) * 64)
    (repo / ".env").write_text(
        "# test\n"
        f"TAVSE_DATA_ROOT={scratch}\n"
        "TAVSE_CACHE_SHARED=group\n"
        f"TAVSE_S3_BUCKET={BUCKET}\n"
        "TAVSE_S3_PREFIX=projects/tavse\n"
        f"TAVSE_S3_ENDPOINT={s3_endpoint}\n"
        f"TAVSE_S3_ACCESS_KEY_ID={KEY_ID}\n"
        f"export TAVSE_S3_SECRET_ACCESS_KEY='{SECRET}'\n"
    )
    setup = [sys.executable, "-m", "tavse.cluster_setup"]
    first = _run(setup, repo, outputs)
    assert _run(setup, repo, outputs) == first  # idempotent
    cache_dir = scratch / "dvc-cache"
    assert f"cache.dir           = {cache_dir}" in first

    _dvc(["add", "-q", "data/ingest", "data/blob.bin"], repo, outputs)
    original = _snapshot(repo / "data")
    _dvc(["push"], repo, outputs)

    # Every workspace file is a link into the cache, which lives under TAVSE_DATA_ROOT.
    tracked = {rel: content for rel, content in original.items() if rel.startswith("ingest/") or rel == "blob.bin"}
    assert len(tracked) == 3
    for rel, content in tracked.items():
        path, cached = repo / "data" / rel, _cache_path(cache_dir, content)
        assert cached.is_file(), rel
        assert path.is_symlink() or os.path.samefile(path, cached), f"{rel} is a copy, not a link"
        assert path.resolve() == cached.resolve() or path.stat().st_ino == cached.stat().st_ino
    assert any((scratch / "dvc-site-cache").rglob("*")), "hash database not on scratch"

    shutil.rmtree(cache_dir)
    shutil.rmtree(data)
    (repo / "data" / "blob.bin").unlink()
    _dvc(["pull"], repo, outputs)
    assert _snapshot(repo / "data") == original
    assert os.path.samefile(repo / "data" / "blob.bin", _cache_path(cache_dir, original["blob.bin"]))

    # Nothing machine-specific or secret reached the committed config, git, or any output.
    assert (repo / ".dvc" / "config").read_bytes() == committed
    _run(["git", "check-ignore", "-q", ".dvc/config.local"], repo, outputs)
    status = _run(["git", "status", "--porcelain", "--untracked-files=all"], repo, [])
    assert "config.local" not in status
    local = repo / ".dvc" / "config.local"
    assert SECRET in local.read_text() and local.stat().st_mode & 0o077 == 0
    for text in [*outputs, committed.decode()]:
        assert SECRET not in text and KEY_ID not in text


def test_env_file_parsing_and_precedence(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# c\n\nexport TAVSE_DATA_ROOT=\"/a b\"\nTAVSE_S3_BUCKET=\nTAVSE_S3_PREFIX='p'\n")
    parsed = read_dotenv(env)
    assert parsed == {"TAVSE_DATA_ROOT": "/a b", "TAVSE_S3_BUCKET": "", "TAVSE_S3_PREFIX": "p"}
    merged = cs.merged_settings(parsed, {"TAVSE_DATA_ROOT": "/override"})
    assert merged == {"TAVSE_DATA_ROOT": "/override", "TAVSE_S3_PREFIX": "p"}
    with pytest.raises(cs.ClusterSetupError, match="TAVSE_S3_BUCKET is empty"):
        cs.settings_from(merged, tmp_path)
    settings = cs.settings_from(
        {"TAVSE_DATA_ROOT": "rel", "TAVSE_S3_BUCKET": "b", "TAVSE_S3_PREFIX": "/x/y/"}, tmp_path
    )
    assert settings.data_root == tmp_path / "rel" and settings.remote_url == "s3://b/x/y"


def test_env_file_comments_and_a_bad_line(tmp_path, capsys):
    """The .env reader the download shares: an unquoted value ends at " #" (as bash, which the SLURM
    scripts source it with, reads it); a line that is not KEY=VALUE is refused by number, never shown."""
    env = tmp_path / ".env"
    env.write_text("TAVSE_DATA_ROOT=/scratch/x  # on scratch\nTAVSE_S3_PREFIX='a #b'\n")
    assert read_dotenv(env) == {"TAVSE_DATA_ROOT": "/scratch/x", "TAVSE_S3_PREFIX": "a #b"}
    env.write_text(f"TAVSE_DATA_ROOT={tmp_path}\nTAVSE_S3_SECRET_ACCESS_KEY {SECRET}\n")
    assert cs.main(["--repo", str(tmp_path), "--env-file", str(env)]) == 2
    err = capsys.readouterr().err
    assert f"error: {env}:2: expected KEY=VALUE" in err and SECRET not in err


def test_missing_or_unwritable_data_root(tmp_path, monkeypatch, capsys):
    (tmp_path / ".dvc").mkdir()
    monkeypatch.delenv("TAVSE_DATA_ROOT", raising=False)
    assert cs.main(["--repo", str(tmp_path)]) == 2
    assert "TAVSE_DATA_ROOT is not set" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TAVSE_DATA_ROOT", str(blocker / "sub"))
    assert cs.main(["--repo", str(tmp_path)]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_successful_setup_prints_no_error_and_undoes_what_is_no_longer_set(tmp_path):
    """Without a bucket or group sharing (the plain case), then with both, then without again:
    exit 0 each time and no "ERROR" line (DVC logs one for unsetting an option that is not set)."""
    repo, outputs = tmp_path / "repo", []
    repo.mkdir()
    _run(["git", "init", "-q"], repo, outputs)
    _dvc(["init", "-q"], repo, outputs)
    setup = [sys.executable, "-m", "tavse.cluster_setup"]
    plain = f"TAVSE_DATA_ROOT={tmp_path / 'scratch'}\n"
    for env in (plain, plain, plain + "TAVSE_CACHE_SHARED=group\nTAVSE_S3_BUCKET=b\n", plain):
        (repo / ".env").write_text(env)
        text = _run(setup, repo, outputs)
        assert "ERROR" not in text and "error" not in text.lower(), text
    local = cs.local_config(repo)
    assert "shared" not in local["cache"] and not local["remote"] and "remote" not in local["core"]
    assert local["cache"]["dir"] == str(tmp_path / "scratch" / "dvc-cache")
