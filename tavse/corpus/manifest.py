"""Corpus manifests: which archives a corpus folder holds, where they came from, their sizes and hashes.

Every corpus folder the pipeline reads (``data.speakingfaces_dir``, ``data.demand_dir``) holds a
``manifest.json`` beside its archives, written by whatever produced them:

* ``python -m tavse.download speakingfaces|demand --out DIR`` (source ``huggingface`` with the
  resolved commit, or ``zenodo`` with the record id), rewritten atomically after each file;
* the synthetic stages ``synth_corpus`` / ``synth_noise`` (source ``synthetic``);
* ``python -m tavse.download manifest DIR`` for archives obtained elsewhere (source ``local``).

Format (JSON, keys sorted, files sorted by path, no timestamps: the same folder content always
gives the same bytes, so DVC can depend on the manifest instead of the whole folder)::

    {
      "format": 1,
      "corpus": "speakingfaces",
      "source": {"type": "huggingface", "repo": "issai/Speaking_Faces",
                 "endpoint": "https://huggingface.co", "revision": "main", "commit": "<40 hex>"},
      "files": [
        {"path": "sub_1_ia.zip", "size": 6412345678, "sha256": "<64 hex>",
         "remote_path": "image_audio/sub_1_ia.zip"}
      ]
    }

The stages read the archive list from the manifest (:func:`checked_files`), never by globbing:
each listed file must exist with the listed size; files the manifest does not list (``*.part``
of a running download, notes, ...) are ignored and counted. Hashes are checked on request
(:func:`verify_folder`, ``python -m tavse.download verify DIR``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tavse.common.io import atomic_path

__all__ = [
    "ALGORITHMS",
    "CORPORA",
    "MANIFEST_NAME",
    "ChecksumMismatch",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "ManifestMissing",
    "checked_files",
    "corpus_files",
    "detect_corpus",
    "entry_for",
    "hash_file",
    "is_recording",
    "make_manifest",
    "manifest_path",
    "read_manifest",
    "unlisted_files",
    "verify_folder",
    "write_manifest",
    "write_synthetic_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20
CORPORA = ("speakingfaces", "demand")

# Files that belong to a corpus (paths relative to the corpus folder, POSIX): its recordings, and
# other files listed when present (SpeakingFaces' speaker metadata).
_RECORDINGS = {
    "speakingfaces": re.compile(r"^sub_\d+_ia\.zip$"),
    "demand": re.compile(r"^[A-Za-z0-9]+_(?:16|48)k\.zip$|^[A-Za-z0-9]+/ch\d{2}\.wav$"),
}
# Hashes recorded by default: SHA-256; for DEMAND also MD5, the hash Zenodo publishes.
ALGORITHMS = {"speakingfaces": ("sha256",), "demand": ("sha256", "md5")}
_EXTRAS = {"speakingfaces": re.compile(r"^subjects\.csv$"), "demand": re.compile(r"(?!)")}
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}
_PARAM = {"speakingfaces": "data.speakingfaces_dir", "demand": "data.demand_dir"}
_SYNTH_STAGE = {"speakingfaces": "synth_corpus", "demand": "synth_noise"}


class ManifestError(ValueError):
    """A corpus folder and its manifest disagree, or the manifest is unreadable."""


class ManifestMissing(ManifestError, FileNotFoundError):
    """A corpus folder has no ``manifest.json``."""


class ChecksumMismatch(ManifestError):
    """A listed file's content does not match the hash the manifest records."""


@dataclass(frozen=True)
class FileEntry:
    """One listed file: path relative to the manifest's folder, size in bytes, hashes (hex)."""

    path: str
    size: int
    sha256: str | None = None
    md5: str | None = None
    remote_path: str | None = None  # path on the server where it differs from ``path``

    def to_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class Manifest:
    """The content of a ``manifest.json``."""

    corpus: str
    source: dict
    files: list[FileEntry] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "corpus": self.corpus,
            "source": self.source,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
        }

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    def put(self, entry: FileEntry) -> None:
        """Add ``entry``, replacing any entry of the same path."""
        self.files = [f for f in self.files if f.path != entry.path] + [entry]


def manifest_path(folder: str | os.PathLike) -> Path:
    """``folder/manifest.json``."""
    return Path(folder) / MANIFEST_NAME


# --------------------------------------------------------------------------- hashing


def hash_file(path: str | os.PathLike, algorithms: Sequence[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of one file for each of ``algorithms``, in a single read."""
    digests = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for d in digests.values():
                d.update(block)
    return {a: d.hexdigest() for a, d in digests.items()}


def entry_for(
    folder: Path, rel: str, algorithms: Sequence[str] = ("sha256",), remote_path: str | None = None
) -> FileEntry:
    """A :class:`FileEntry` of ``folder/rel`` with its size and the given hashes."""
    path = folder / rel
    digests = hash_file(path, algorithms)
    return FileEntry(rel, path.stat().st_size, digests.get("sha256"), digests.get("md5"), remote_path)


# --------------------------------------------------------------------------- reading and writing


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically (temporary sibling, fsync, rename); return its path."""
    path = manifest_path(folder)
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def _how_to_make(corpus: str | None, folder: Path) -> str:
    name = corpus if corpus in CORPORA else "speakingfaces|demand"
    stage = _SYNTH_STAGE.get(corpus or "", "synth_corpus synth_noise")
    return (
        f"make one by downloading into this folder (`python -m tavse.download {name} --out {folder}`), "
        f"with `python -m tavse.download manifest {folder}` for archives obtained elsewhere, or, for the "
        f"synthetic default, with `dvc repro {stage}`"
    )


def read_manifest(folder: str | os.PathLike, corpus: str | None = None) -> Manifest:
    """Parse ``folder/manifest.json``; with ``corpus`` also check that it describes that corpus.

    Raises :class:`ManifestMissing` (saying how to make one) or :class:`ManifestError` naming
    the file and what is wrong with it.
    """
    folder = Path(folder)
    path = manifest_path(folder)
    where = f" ({_PARAM[corpus]})" if corpus in _PARAM else ""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: corpus folder not found{where}")
    if not path.is_file():
        raise ManifestMissing(
            f"{path}: no manifest in the corpus folder{where}: the stages read the list of "
            f"archives from it; {_how_to_make(corpus, folder)}"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); {_how_to_make(corpus, folder)}") from None
    try:
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
        if raw["corpus"] not in CORPORA:
            raise ValueError(f"corpus {raw['corpus']!r}, expected one of {', '.join(CORPORA)}")
        if not isinstance(raw["source"], dict) or "type" not in raw["source"]:
            raise ValueError("source must be an object with a 'type'")
        files = []
        for item in raw["files"]:
            entry = FileEntry(
                str(item["path"]), int(item["size"]), item.get("sha256"), item.get("md5"), item.get("remote_path")
            )
            _check_entry(entry)
            files.append(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(
            f"{path}: malformed manifest ({type(exc).__name__}: {exc}); {_how_to_make(corpus, folder)}"
        ) from None
    if len({f.path for f in files}) != len(files):
        raise ManifestError(f"{path}: a path is listed twice")
    manifest = Manifest(raw["corpus"], raw["source"], files)
    if corpus is not None and manifest.corpus != corpus:
        raise ManifestError(
            f"{path}: describes a {manifest.corpus} corpus, expected {corpus}: does {_PARAM[corpus]} "
            "point at the right folder?"
        )
    return manifest


def _check_entry(entry: FileEntry) -> None:
    parts = entry.path.split("/")
    if not entry.path or entry.path.startswith("/") or "\\" in entry.path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path {entry.path!r} is not a plain relative path inside the folder")
    if entry.size < 0:
        raise ValueError(f"{entry.path}: negative size")
    for algorithm in ("sha256", "md5"):
        value = getattr(entry, algorithm)
        if value is not None and not _HEX[algorithm].fullmatch(value):
            raise ValueError(f"{entry.path}: {algorithm} {value!r} is not a lowercase hex digest")


# --------------------------------------------------------------------------- what a folder holds


def _all_files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` (relative POSIX paths) except the manifest itself."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames):
            rel = (base / name).relative_to(folder).as_posix()
            if rel != MANIFEST_NAME and (base / name).is_file():
                out.append(rel)
    return out


def is_recording(corpus: str, rel: str) -> bool:
    """Whether ``rel`` (a path relative to the corpus folder) names a recording archive of ``corpus``."""
    return bool(_RECORDINGS[corpus].match(rel))


def corpus_files(folder: str | os.PathLike, corpus: str) -> list[str]:
    """Files of ``folder`` that belong to ``corpus`` by name (relative paths, sorted)."""
    return [rel for rel in _all_files(Path(folder)) if _RECORDINGS[corpus].match(rel) or _EXTRAS[corpus].match(rel)]


def detect_corpus(folder: str | os.PathLike) -> str:
    """``speakingfaces`` or ``demand`` from the archive names in ``folder``; ManifestError if neither or both."""
    folder = Path(folder)
    files = _all_files(folder)
    has = [c for c in CORPORA if any(_RECORDINGS[c].match(r) for r in files)]
    if len(has) == 1:
        return has[0]
    if not has:
        raise ManifestError(
            f"{folder}: no corpus archives found (expected sub_{{id}}_ia.zip for SpeakingFaces, or "
            "{ENV}_16k.zip / {ENV}_48k.zip / {ENV}/chNN.wav for DEMAND)"
        )
    raise ManifestError(f"{folder}: holds both SpeakingFaces and DEMAND archives; name the corpus (--corpus)")


def unlisted_files(folder: str | os.PathLike, manifest: Manifest) -> list[str]:
    """Files in ``folder`` that ``manifest`` does not list (relative paths, sorted)."""
    listed = manifest.by_path()
    return [rel for rel in _all_files(Path(folder)) if rel not in listed]


def make_manifest(
    folder: str | os.PathLike,
    corpus: str,
    source: dict,
    files: Iterable[str] | None = None,
    algorithms: Sequence[str] | None = None,
) -> Manifest:
    """Hash ``files`` (default: :func:`corpus_files`) of ``folder`` and write its manifest; return it.

    ``algorithms`` default: :data:`ALGORITHMS` of the corpus.
    """
    folder = Path(folder)
    if corpus not in CORPORA:
        raise ValueError(f"corpus {corpus!r}, expected one of {', '.join(CORPORA)}")
    rels = sorted(corpus_files(folder, corpus) if files is None else files)
    if not any(_RECORDINGS[corpus].match(r) for r in rels):
        raise ManifestError(f"{folder}: no {corpus} archives to list")
    algorithms = ALGORITHMS[corpus] if algorithms is None else algorithms
    manifest = Manifest(corpus, source, [entry_for(folder, rel, algorithms) for rel in rels])
    write_manifest(folder, manifest)
    log.info("%s: manifest of %d file(s), source %s", manifest_path(folder), len(rels), source.get("type"))
    return manifest


def write_synthetic_manifest(folder: str | os.PathLike, corpus: str, generator: str, params: dict) -> Manifest:
    """Manifest of a synthetic corpus just written by ``generator`` (a stage) with ``params``."""
    return make_manifest(folder, corpus, {"type": "synthetic", "generator": generator, "params": params})


# --------------------------------------------------------------------------- checking


def checked_files(folder: str | os.PathLike, corpus: str, *, verify: bool = False) -> list[Path]:
    """The files ``folder/manifest.json`` lists, each checked to exist with its listed size.

    Files in the folder that the manifest does not list are ignored and counted in a log line.
    With ``verify`` the listed hashes are checked too (:func:`verify_folder`). Raises
    :class:`ManifestMissing`, or :class:`ManifestError` naming the file, the expected and the
    actual size and what to do.
    """
    folder = Path(folder)
    manifest = read_manifest(folder, corpus)
    path = manifest_path(folder)
    fix = (
        "run the download again to complete or replace it, or, if the folder's content is "
        "intended, rewrite the manifest with `python -m tavse.download manifest "
        f"{folder}`"
    )
    problems = []
    for entry in manifest.files:
        p = folder / entry.path
        if not p.is_file():
            problems.append(f"{p}: listed in {path} but missing")
        elif (size := p.stat().st_size) != entry.size:
            problems.append(f"{p}: size {size} bytes, but {path} lists {entry.size} bytes")
    if problems:
        raise ManifestError("; ".join(problems) + f" ({fix})")
    unlisted = unlisted_files(folder, manifest)
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (", ..." if len(unlisted) > 5 else "")
        log.info("%s: %d file(s) not listed in %s ignored (%s)", folder, len(unlisted), MANIFEST_NAME, shown)
    if verify:
        verify_folder(folder, manifest)
    return [folder / f.path for f in sorted(manifest.files, key=lambda f: f.path)]


def verify_folder(folder: str | os.PathLike, manifest: Manifest | None = None) -> int:
    """Re-hash every listed file of ``folder`` and compare with the manifest; return the count checked.

    Each file is read once for all hashes the manifest records (SHA-256, MD5). Raises
    :class:`ChecksumMismatch` naming every file whose content differs, or :class:`ManifestError`
    for a missing file, a wrong size or a file with no recorded hash.
    """
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    path = manifest_path(folder)
    bad = []
    for entry in sorted(manifest.files, key=lambda f: f.path):
        p = folder / entry.path
        if not p.is_file():
            raise ManifestError(f"{p}: listed in {path} but missing")
        if (size := p.stat().st_size) != entry.size:
            raise ManifestError(f"{p}: size {size} bytes, but {path} lists {entry.size} bytes")
        expected = {a: getattr(entry, a) for a in ("sha256", "md5") if getattr(entry, a)}
        if not expected:
            raise ManifestError(
                f"{p}: {path} records no hash for it; rewrite the manifest "
                f"(`python -m tavse.download manifest {folder}`)"
            )
        actual = hash_file(p, tuple(expected))
        for algorithm, want in expected.items():
            if actual[algorithm] != want:
                bad.append(f"{p}: {algorithm.upper()} {actual[algorithm]}, but {path} lists {want}")
                break
        else:
            log.debug("%s: %s ok", p, "+".join(a.upper() for a in expected))
    if bad:
        raise ChecksumMismatch(
            "; ".join(bad) + " (the content changed since the manifest was written: download the file again "
            "(delete it, then rerun the download), or, if the new content is intended, rewrite the manifest "
            f"with `python -m tavse.download manifest {folder}`)"
        )
    log.info("%s: %d file(s) match %s", folder, len(manifest.files), MANIFEST_NAME)
    return len(manifest.files)
