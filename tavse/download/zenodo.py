"""DEMAND from Zenodo (:func:`download_demand`): the noise zips of record 1227121 (open access, no
account), checked against Zenodo's MD5s.

Zenodo is ``$TAVSE_ZENODO_ENDPOINT`` (default ``https://zenodo.org``), or ``--record-url`` /
``--base-url``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import requests

from tavse.corpus import manifest as mf
from tavse.download.errors import DownloadError
from tavse.download.fetch import ManifestRecorder, RunOptions, open_manifest, run_download
from tavse.download.files import RemoteFile
from tavse.download.http import request_with_retries
from tavse.download.progress import folder_lock

log = logging.getLogger("tavse.download")

ZENODO_ENDPOINT_ENV = "TAVSE_ZENODO_ENDPOINT"
ZENODO_DEFAULT_ENDPOINT = "https://zenodo.org"
ZENODO_RECORD = "1227121"
ZENODO_RECORD_URL = f"{ZENODO_DEFAULT_ENDPOINT}/api/records/{ZENODO_RECORD}"
ZENODO_FILES_URL = f"{ZENODO_DEFAULT_ENDPOINT}/records/{ZENODO_RECORD}/files"


def zenodo_urls(endpoint: str | None = None) -> tuple[str, str]:
    """(record JSON URL, files base URL) of the DEMAND record at ``endpoint``, default ``$TAVSE_ZENODO_ENDPOINT``
    or https://zenodo.org."""
    base = (endpoint or os.environ.get(ZENODO_ENDPOINT_ENV) or ZENODO_DEFAULT_ENDPOINT).rstrip("/")
    return f"{base}/api/records/{ZENODO_RECORD}", f"{base}/records/{ZENODO_RECORD}/files"


def zenodo_record(
    session: requests.Session,
    record_url: str = ZENODO_RECORD_URL,
    *,
    retries: int = 5,
    backoff: float = 1.0,
) -> dict:
    """The record JSON of a Zenodo record."""
    resp = request_with_retries(session, "GET", record_url, "Zenodo record", retries=retries, backoff=backoff)
    try:
        return resp.json()
    except ValueError:
        raise DownloadError(f"Zenodo record {record_url}: the answer is not JSON") from None


def zenodo_source(record: dict, record_url: str) -> dict:
    """The ``source`` of a DEMAND manifest: the record id (and DOI), from the record JSON."""
    record_id = str(record.get("id") or record.get("recid") or record_url.rstrip("/").rsplit("/", 1)[-1])
    source = {"type": "zenodo", "record": record_id, "record_url": record_url}
    if record.get("doi"):
        source["doi"] = record["doi"]
    return source


def zenodo_files(
    session: requests.Session,
    record_url: str = ZENODO_RECORD_URL,
    files_url: str = ZENODO_FILES_URL,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    record: dict | None = None,
) -> list[RemoteFile]:
    """All files of a Zenodo record with sizes and MD5s (``files[].checksum == "md5:<hex>"``)."""
    if record is None:
        record = zenodo_record(session, record_url, retries=retries, backoff=backoff)
    entries = record["files"]
    if isinstance(entries, dict):  # /files endpoint shape: {"entries": [...]}
        entries = entries.get("entries", [])
    files = []
    for entry in entries:
        algorithm, _, digest = str(entry.get("checksum", "")).partition(":")
        name = entry["key"]
        files.append(
            RemoteFile(
                name=name,
                url=f"{files_url.rstrip('/')}/{quote(name)}",
                size=int(entry["size"]),
                md5=digest if algorithm == "md5" else None,
            )
        )
    return files


def demand_env(name: str) -> str:
    """``"SCAFE_48k.zip"`` -> ``"SCAFE"``."""
    return name.rsplit("_", 1)[0]


def select_demand(files: Sequence[RemoteFile], envs: Sequence[str] | None = None) -> list[RemoteFile]:
    """Per environment the 16 kHz zip, or the 48 kHz one where no 16 kHz exists (SCAFE).

    ``envs`` holds environment names (``DKITCHEN``) or exact file names (``DKITCHEN_48k.zip``);
    ``None`` means every environment of the record.
    """
    by_name = {f.name: f for f in files if f.name.endswith(".zip")}
    all_envs = sorted({demand_env(n) for n in by_name})
    chosen = []
    for item in envs if envs is not None else all_envs:
        if item in by_name:
            chosen.append(by_name[item])
            continue
        env = item.upper()
        for rate in ("16k", "48k"):
            if f"{env}_{rate}.zip" in by_name:
                chosen.append(by_name[f"{env}_{rate}.zip"])
                break
        else:
            raise DownloadError(f"DEMAND: no zip for environment {item!r}; known: {', '.join(all_envs)}")
    return chosen


def download_demand(
    out_dir: Path,
    envs: Sequence[str] | None = None,
    *,
    record_url: str | None = None,
    files_url: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    verify_existing: bool = False,
    opts: RunOptions | None = None,
) -> list[Path]:
    """Download (or skip, if complete) the chosen DEMAND zips into ``out_dir``, MD5-verified.

    ``out_dir/manifest.json`` records the Zenodo record and per zip its size, MD5 and SHA-256,
    rewritten after each completed file. URLs default to :func:`zenodo_urls`.
    """
    opts = opts or RunOptions(retries=retries, backoff=backoff, verify_existing=verify_existing)
    default_record, default_files = zenodo_urls()
    record_url, files_url = record_url or default_record, files_url or default_files
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir), requests.Session() as session:
        record = zenodo_record(session, record_url, retries=opts.retries, backoff=opts.backoff)
        remotes = select_demand(zenodo_files(session, record_url, files_url, record=record), envs)
        source = zenodo_source(record, record_url)
        recorder = ManifestRecorder(out_dir, open_manifest(out_dir, "demand", source, ("record",)))
        paths = run_download(out_dir, "demand", source, remotes, recorder, opts, {}, space_hint=" (--envs)")
    log.info(
        "%s: %d zip(s) of Zenodo record %s; point data.demand_dir at this folder",
        mf.manifest_path(out_dir),
        len(recorder),
        recorder.manifest.source["record"],
    )
    return paths
