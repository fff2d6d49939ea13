"""The command line, ``python -m tavse.download`` (the sub-commands: :mod:`tavse.download`).

Logs and errors are masked (:func:`~tavse.download.secrets.redact`), so the token never reaches the
terminal; SIGTERM stops a download like Ctrl-C, the parts kept for the resume.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import requests

import tavse.download
from tavse.corpus import manifest as mf
from tavse.dotenv import DotenvError
from tavse.download.errors import DownloadError, Interrupted
from tavse.download.fetch import RunOptions
from tavse.download.huggingface import (
    HF_DEFAULT_ENDPOINT,
    HF_DEFAULT_REVISION,
    HF_REPO,
    N_SPEAKERS,
    REVISION_ENV,
    download_speakingfaces,
    parse_speakers,
    resolve_revision,
)
from tavse.download.progress import DEFAULT_PROGRESS_EVERY, STATE_NAME, read_state
from tavse.download.secrets import RedactFilter, env_setting, redact, resolve_hf_token
from tavse.download.status import demand_names, folder_status, format_folder_status, speakingfaces_names
from tavse.download.zenodo import (
    ZENODO_DEFAULT_ENDPOINT,
    ZENODO_ENDPOINT_ENV,
    ZENODO_RECORD,
    download_demand,
    zenodo_urls,
)

log = logging.getLogger("tavse.download")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with the ``speakingfaces``, ``demand``, ``manifest`` and ``verify`` sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m tavse.download", description=(tavse.download.__doc__ or "").split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="corpus", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: archives and manifest.json (point data.speakingfaces_dir / data.demand_dir here)",
    )
    common.add_argument(
        "--status",
        action="store_true",
        help="offline: per-file state (complete/partial/missing), totals and an ETA from the manifest, "
        f"{STATE_NAME} and the files on disk; no network, downloads nothing",
    )
    common.add_argument(
        "--verify",
        action="store_true",
        help="also re-hash files that were already complete against the server's and the manifest's hashes",
    )
    common.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="archives downloaded at once, each on its own connection (default 1)",
    )
    common.add_argument(
        "--progress",
        choices=("auto", "bar", "log"),
        default="auto",
        help="bar: tqdm bars; log: plain progress lines (file, bytes, rate, ETA) every --progress-every "
        "seconds, for SLURM/nohup logs; auto (default): bar on a terminal, else log",
    )
    common.add_argument(
        "--progress-every",
        type=positive_float,
        default=DEFAULT_PROGRESS_EVERY,
        metavar="SECONDS",
        help=f"interval of the progress lines and of the {STATE_NAME} updates (default {DEFAULT_PROGRESS_EVERY:g})",
    )
    common.add_argument(
        "--skip-space-check",
        action="store_true",
        help="start even if the filesystem of --out reports less free space than the bytes still to download",
    )
    common.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help=f"file with HF_TOKEN, {REVISION_ENV}, HF_ENDPOINT, {ZENODO_ENDPOINT_ENV} (each used where the "
        "environment has none)",
    )
    common.add_argument(
        "--retries",
        type=int,
        default=5,
        help="tries per file without progress before giving up",
    )
    common.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="first retry delay in seconds (doubles)",
    )

    sf = sub.add_parser(
        "speakingfaces",
        parents=[common],
        help="SpeakingFaces archives from the HuggingFace Hub",
    )
    sf.add_argument(
        "--speakers",
        default=None,
        help=f"IDs and ranges, e.g. 1-10,121 (download default: all, 1-{N_SPEAKERS}; --status default: "
        "the files of the last run and of the manifest)",
    )
    sf.add_argument(
        "--endpoint",
        default=None,
        help=f"Hub URL (default: $HF_ENDPOINT, or HF_ENDPOINT in --env-file, or {HF_DEFAULT_ENDPOINT}); https://, "
        "or http:// to a loopback host only",
    )
    sf.add_argument("--repo", default=HF_REPO, help="dataset repository")
    sf.add_argument(
        "--revision",
        default=None,
        help=f"branch, tag or commit (default: ${REVISION_ENV}, or {REVISION_ENV} in --env-file, or "
        f"{HF_DEFAULT_REVISION}); resolved once to a commit, which the manifest records",
    )

    dm = sub.add_parser("demand", parents=[common], help="DEMAND noise zips from Zenodo (open access, no account)")
    dm.add_argument(
        "--envs",
        default=None,
        help="comma list of environments or file names (default: every 16k zip + SCAFE_48k)",
    )
    dm.add_argument(
        "--record-url",
        default=None,
        help=f"Zenodo record JSON URL (default: ${ZENODO_ENDPOINT_ENV} or {ZENODO_DEFAULT_ENDPOINT}, "
        f"+ /api/records/{ZENODO_RECORD})",
    )
    dm.add_argument(
        "--base-url",
        default=None,
        help=f"base URL the files are fetched from (default: ${ZENODO_ENDPOINT_ENV} or {ZENODO_DEFAULT_ENDPOINT}, "
        f"+ /records/{ZENODO_RECORD}/files)",
    )

    mk = sub.add_parser(
        "manifest",
        help="write DIR/manifest.json (source: local) for archives obtained elsewhere",
    )
    mk.add_argument("dir", type=Path, help="folder of sub_{id}_ia.zip, or of DEMAND {ENV}_16k.zip / {ENV}/chNN.wav")
    mk.add_argument(
        "--corpus", dest="corpus_kind", choices=mf.CORPORA, default=None, help="default: from the file names"
    )

    vf = sub.add_parser(
        "verify", help="re-hash every archive DIR/manifest.json lists and compare (exit 1 on a mismatch)"
    )
    vf.add_argument("dir", type=Path, help="a corpus folder with a manifest.json")
    return parser


def write_local_manifest(folder: Path, corpus: str | None = None) -> mf.Manifest:
    """Hash the archives of ``folder`` into a manifest of source ``local`` (SHA-256; DEMAND also MD5)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    corpus = corpus or mf.detect_corpus(folder)
    path = mf.manifest_path(folder)
    if path.is_file():
        try:
            old = mf.read_manifest(folder).source.get("type")
        except mf.ManifestError:
            old = "unreadable"
        if old != "local":
            log.warning("%s: replacing a manifest of source %s by one of source local", path, old)
    return mf.make_manifest(folder, corpus, {"type": "local"})


def run(args: argparse.Namespace, token: str | None) -> int:
    """Execute a parsed command; return the exit status."""
    if args.corpus == "manifest":
        m = write_local_manifest(args.dir, args.corpus_kind)
        print(
            f"{mf.manifest_path(args.dir)}: {m.corpus}, {len(m.files)} file(s), "
            f"{sum(f.size for f in m.files) / 1e9:.3f} GB"
        )
        return 0
    if args.corpus == "verify":
        n = mf.verify_folder(args.dir)
        print(f"{mf.manifest_path(args.dir)}: all {n} file(s) match")
        return 0
    if args.status:  # offline: manifest, state file, files on disk
        if args.corpus == "speakingfaces":
            names = speakingfaces_names(parse_speakers(args.speakers)) if args.speakers else None
        else:
            known = [f.get("name", "") for f in (read_state(args.out) or {}).get("files", []) if isinstance(f, dict)]
            envs = [e for e in args.envs.split(",") if e] if args.envs else None
            names = demand_names(envs, known) if envs else None
        print(format_folder_status(folder_status(args.out, args.corpus, names)))
        return 0
    opts = RunOptions(
        jobs=args.jobs,
        progress=args.progress,
        progress_every=args.progress_every,
        retries=args.retries,
        backoff=args.backoff,
        verify_existing=args.verify,
        space_check=not args.skip_space_check,
    )
    if args.corpus == "speakingfaces":
        speakers = parse_speakers(args.speakers or f"1-{N_SPEAKERS}")
        endpoint = args.endpoint or env_setting("HF_ENDPOINT", args.env_file) or HF_DEFAULT_ENDPOINT
        if not token:
            log.warning(
                "no HF token found ($HF_TOKEN or %s): the gated dataset will refuse access",
                args.env_file,
            )
        download_speakingfaces(
            args.out,
            speakers,
            token,
            endpoint=endpoint,
            repo=args.repo,
            revision=resolve_revision(args.revision, args.env_file),
            opts=opts,
        )
    else:
        envs = [e for e in args.envs.split(",") if e] if args.envs else None
        record_url, files_url = zenodo_urls(env_setting(ZENODO_ENDPOINT_ENV, args.env_file))
        download_demand(
            args.out, envs, record_url=args.record_url or record_url, files_url=args.base_url or files_url, opts=opts
        )
    return 0


def _sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a SLURM time limit, ``kill``): stop like Ctrl-C, parts kept for the resume."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: logs and errors are masked so the token never reaches the terminal."""
    from tavse.common.logs import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        token = resolve_hf_token(getattr(args, "env_file", None)) if args.corpus == "speakingfaces" else None
    except DotenvError as exc:  # a line of --env-file that is not KEY=VALUE: named by number, never shown
        print(f"error: {exc}", file=sys.stderr)
        return 1
    redactor = RedactFilter([token] if token else [])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run(args, token)
    except (DownloadError, ValueError, OSError, requests.RequestException) as exc:
        print(f"error: {redact(str(exc), [token])}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(redactor)


if __name__ == "__main__":
    sys.exit(main())
