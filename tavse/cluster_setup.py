"""Configure DVC for a cluster: cache on scratch, shared hash database, optional S3 remote.

``python -m tavse.cluster_setup`` reads ``.env`` (``KEY=VALUE`` lines, :func:`tavse.dotenv.read_dotenv`;
variables already in the environment win) and writes machine-specific DVC settings with
``dvc config --local`` / ``dvc remote ... --local``, i.e. into ``.dvc/config.local``, which DVC
git-ignores. The committed ``.dvc/config`` is never written (checked before and after). Running it
again converges to the same configuration.

Settings (``$TAVSE_DATA_ROOT`` is required and must be writable):

* ``cache.dir = $TAVSE_DATA_ROOT/dvc-cache`` — the content-addressed cache on scratch;
* ``cache.type = reflink,hardlink,symlink`` where the cache can reflink into the workspace, else
  ``hardlink,symlink`` — workspace outputs are links into the cache, never a second copy (hardlink
  when workspace and cache share a filesystem, symlink across filesystems; links are read-only);
* ``cache.shared = group`` when ``TAVSE_CACHE_SHARED=group`` (group-writable cache files);
* ``core.site_cache_dir = $TAVSE_DATA_ROOT/dvc-site-cache`` — DVC's hash database (state) and
  indexes, so every node that sees the scratch filesystem reuses the hashes instead of re-hashing;
* remote ``storage`` (default) ``s3://$TAVSE_S3_BUCKET/$TAVSE_S3_PREFIX`` when ``TAVSE_S3_BUCKET``
  is set, with ``endpointurl = $TAVSE_S3_ENDPOINT`` if given. Credentials come from the standard
  AWS variables / profile unless ``TAVSE_S3_ACCESS_KEY_ID`` and ``TAVSE_S3_SECRET_ACCESS_KEY`` are
  both given; then they are written to ``.dvc/config.local`` (mode 0600) and never printed.

DVC commands run in this process (``dvc.cli.main``), so secrets never appear in a process list.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tavse.dotenv import DotenvError, read_dotenv

REMOTE_NAME = "storage"
CACHE_TYPE_REFLINK = "reflink,hardlink,symlink"
# Where reflinks fail (ext4, Lustre, GPFS, NFS), DVC 3.67 leaves *copies* of directory outputs after
# `dvc add` / `dvc repro` when reflink is listed first (files are linked only by a later
# `dvc checkout --relink`), so reflink is listed only where it works.
CACHE_TYPE_LINKS = "hardlink,symlink"
SECRET_KEYS = ("TAVSE_S3_ACCESS_KEY_ID", "TAVSE_S3_SECRET_ACCESS_KEY")
KNOWN_KEYS = (
    "TAVSE_DATA_ROOT",
    "TAVSE_CACHE_SHARED",
    "TAVSE_S3_BUCKET",
    "TAVSE_S3_PREFIX",
    "TAVSE_S3_ENDPOINT",
    *SECRET_KEYS,
)


class ClusterSetupError(RuntimeError):
    """A setting is missing or invalid, or DVC refused a command. The message says which."""


@dataclass(frozen=True)
class ClusterSettings:
    """The machine-specific values this module turns into DVC configuration."""

    data_root: Path
    cache_shared: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    @property
    def cache_dir(self) -> Path:
        """The DVC cache on scratch."""
        return self.data_root / "dvc-cache"

    @property
    def site_cache_dir(self) -> Path:
        """DVC's hash database and indexes (``core.site_cache_dir``)."""
        return self.data_root / "dvc-site-cache"

    @property
    def remote_url(self) -> str | None:
        """``s3://bucket/prefix`` or ``None`` when no bucket is configured."""
        if not self.s3_bucket:
            return None
        prefix = self.s3_prefix.strip("/")
        return f"s3://{self.s3_bucket}/{prefix}" if prefix else f"s3://{self.s3_bucket}"


def merged_settings(env_file: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The known variables, environment over ``.env``; empty values count as unset."""
    merged: dict[str, str] = {}
    for key in KNOWN_KEYS:
        value = environ.get(key, env_file.get(key, ""))
        if value.strip():
            merged[key] = value.strip()
    return merged


def settings_from(values: Mapping[str, str], repo: Path) -> ClusterSettings:
    """Validate the merged variables. Relative ``TAVSE_DATA_ROOT`` is taken from ``repo``."""
    root = values.get("TAVSE_DATA_ROOT")
    if not root:
        raise ClusterSetupError("TAVSE_DATA_ROOT is not set: put it in .env (see .env.example)")
    data_root = Path(root).expanduser()
    if not data_root.is_absolute():
        data_root = (repo / data_root).resolve()
    shared = values.get("TAVSE_CACHE_SHARED")
    if shared is not None and shared.lower() not in ("group", "none", "no", "off"):
        raise ClusterSetupError(f"TAVSE_CACHE_SHARED={shared!r}: use 'group' or leave it empty")
    key_id, secret = (values.get(k) for k in SECRET_KEYS)
    if bool(key_id) != bool(secret):
        raise ClusterSetupError("set both TAVSE_S3_ACCESS_KEY_ID and TAVSE_S3_SECRET_ACCESS_KEY, or neither")
    bucket = values.get("TAVSE_S3_BUCKET")
    if bucket and ("/" in bucket or bucket.startswith("s3:")):
        raise ClusterSetupError(f"TAVSE_S3_BUCKET={bucket!r}: a bucket name only; the path goes in TAVSE_S3_PREFIX")
    if not bucket and any(values.get(k) for k in ("TAVSE_S3_ENDPOINT", "TAVSE_S3_PREFIX", *SECRET_KEYS)):
        raise ClusterSetupError("TAVSE_S3_* is set but TAVSE_S3_BUCKET is empty")
    return ClusterSettings(
        data_root=data_root,
        cache_shared="group" if shared and shared.lower() == "group" else None,
        s3_bucket=bucket,
        s3_prefix=values.get("TAVSE_S3_PREFIX", ""),
        s3_endpoint=values.get("TAVSE_S3_ENDPOINT"),
        s3_access_key_id=key_id,
        s3_secret_access_key=secret,
    )


def ensure_writable_dir(path: Path, group_shared: bool) -> None:
    """Create ``path`` (setgid, group-writable when shared) and prove a file can be written there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if group_shared:
            path.chmod(path.stat().st_mode | stat.S_IRWXG | stat.S_ISGID)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tavse-write-test-"):
            pass
    except OSError as exc:
        raise ClusterSetupError(f"TAVSE_DATA_ROOT: cannot write to {path}: {exc.strerror or exc}") from exc


def run_dvc(repo: Path, args: Sequence[str], *, check: bool = True) -> int:
    """Run ``dvc <args>`` in this process (inside ``repo``), its output swallowed.

    Arguments may hold secrets: they are never echoed, and an error names only the subcommand.
    """
    from dvc.cli import main as dvc_main

    out, err = io.StringIO(), io.StringIO()
    old_cwd = Path.cwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = dvc_main(list(args))
    finally:
        os.chdir(old_cwd)
    if check and code != 0:
        raise ClusterSetupError(f"`dvc {' '.join(args[:2])} ...` failed (exit {code})")
    return code


def local_config(repo: Path) -> dict:
    """What ``.dvc/config.local`` holds now, as DVC reads it (empty sections when there is none)."""
    from dvc.config import Config

    return Config(dvc_dir=str(repo / ".dvc"), validate=False).load_one("local")


def local_config_is_ignored(repo: Path) -> bool:
    """True when git ignores ``.dvc/config.local`` (DVC's own ``.dvc/.gitignore`` does)."""
    result = subprocess.run(
        ["git", "check-ignore", "-q", ".dvc/config.local"], cwd=repo, capture_output=True, check=False
    )
    return result.returncode == 0


def reflink_works(cache_dir: Path, workspace: Path) -> bool:
    """True when a file in ``cache_dir`` can be reflinked (copy-on-write cloned) into ``workspace``."""
    from dvc_objects.fs.system import reflink

    with (
        tempfile.TemporaryDirectory(dir=cache_dir, prefix=".tavse-probe-") as src_dir,
        tempfile.TemporaryDirectory(dir=workspace, prefix=".tavse-probe-") as dst_dir,
    ):
        src = Path(src_dir) / "probe"
        src.write_bytes(b"tavse")
        try:
            reflink(str(src), str(Path(dst_dir) / "probe"))
        except OSError:
            return False
    return True


def cache_type(repo: Path, settings: ClusterSettings) -> str:
    """``cache.type`` for this machine: reflink first only where the filesystem supports it."""
    return CACHE_TYPE_REFLINK if reflink_works(settings.cache_dir, repo) else CACHE_TYPE_LINKS


def configure_cache(repo: Path, settings: ClusterSettings, link_types: str) -> None:
    """Cache on scratch, linked workspace, optional group sharing, shared hash database."""
    run_dvc(repo, ["config", "--local", "cache.dir", str(settings.cache_dir)])
    run_dvc(repo, ["config", "--local", "cache.type", link_types])
    if settings.cache_shared:
        run_dvc(repo, ["config", "--local", "cache.shared", settings.cache_shared])
    elif "shared" in local_config(repo).get("cache", {}):
        # Only when set: DVC logs an ERROR line for unsetting what is not there (and exits 251).
        run_dvc(repo, ["config", "--local", "--unset", "cache.shared"])
    run_dvc(repo, ["config", "--local", "core.site_cache_dir", str(settings.site_cache_dir)])


def configure_remote(repo: Path, settings: ClusterSettings) -> None:
    """(Re)create the default remote ``storage`` in ``.dvc/config.local``, or remove it if unset."""
    if settings.remote_url is None:
        if REMOTE_NAME in local_config(repo).get("remote", {}):
            run_dvc(repo, ["remote", "remove", "--local", REMOTE_NAME])
        return
    # --force replaces the whole section, so stale endpoint/credentials never survive a re-run.
    run_dvc(repo, ["remote", "add", "--local", "--force", "-d", REMOTE_NAME, settings.remote_url])
    if settings.s3_endpoint:
        run_dvc(repo, ["remote", "modify", "--local", REMOTE_NAME, "endpointurl", settings.s3_endpoint])
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        if not local_config_is_ignored(repo):
            raise ClusterSetupError(".dvc/config.local is not git-ignored: refusing to write credentials")
        local = repo / ".dvc" / "config.local"
        local.touch(mode=0o600, exist_ok=True)
        local.chmod(0o600)
        run_dvc(repo, ["remote", "modify", "--local", REMOTE_NAME, "access_key_id", settings.s3_access_key_id])
        run_dvc(repo, ["remote", "modify", "--local", REMOTE_NAME, "secret_access_key", settings.s3_secret_access_key])


def summary(settings: ClusterSettings, link_types: str) -> str:
    """What was configured, with credentials reduced to where they live."""
    lines = [
        "DVC configured in .dvc/config.local (git-ignored; .dvc/config untouched):",
        f"  cache.dir           = {settings.cache_dir}",
        f"  cache.type          = {link_types}",
        f"  cache.shared        = {settings.cache_shared or '(unset: private cache)'}",
        f"  core.site_cache_dir = {settings.site_cache_dir}",
    ]
    if settings.remote_url is None:
        lines.append("  remote              = (none: TAVSE_S3_BUCKET is empty)")
        return "\n".join(lines)
    lines += [
        f"  remote {REMOTE_NAME} (default) = {settings.remote_url}",
        f"  endpointurl         = {settings.s3_endpoint or '(AWS default)'}",
    ]
    if settings.s3_access_key_id:
        lines.append("  credentials         = **** (stored in .dvc/config.local, mode 0600)")
    else:
        lines.append("  credentials         = AWS environment / profile (nothing stored)")
    return "\n".join(lines)


def setup_cluster(repo: Path, settings: ClusterSettings) -> str:
    """Apply ``settings`` to the DVC repository at ``repo``; return the printable summary."""
    dvc_dir = repo / ".dvc"
    if not dvc_dir.is_dir():
        raise ClusterSetupError(f"{repo} is not a DVC repository (no .dvc/)")
    committed = dvc_dir / "config"
    before = committed.read_bytes() if committed.exists() else None
    ensure_writable_dir(settings.data_root, group_shared=False)
    for path in (settings.cache_dir, settings.site_cache_dir):
        ensure_writable_dir(path, group_shared=settings.cache_shared == "group")
    link_types = cache_type(repo, settings)
    configure_cache(repo, settings, link_types)
    configure_remote(repo, settings)
    after = committed.read_bytes() if committed.exists() else None
    if before != after:
        raise ClusterSetupError("BUG: .dvc/config changed; restore it with `git checkout .dvc/config`")
    return summary(settings, link_types)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m tavse.cluster_setup [--repo DIR] [--env-file FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m tavse.cluster_setup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="DVC repository root (default: .)")
    parser.add_argument("--env-file", type=Path, default=None, help="default: <repo>/.env")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    env_file = args.env_file or repo / ".env"
    try:
        values = merged_settings(read_dotenv(env_file), os.environ)
        print(setup_cluster(repo, settings_from(values, repo)))
    except (ClusterSetupError, DotenvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
