"""Reader of SpeakingFaces speaker archives (``sub_{id}_ia.zip``), real or synthetic.

Members are matched on their ``trial_{t}/<stream>/<file>`` tail whatever prefix precedes it,
and grouped into utterances keyed by (speaker, trial, position, command). File names are
``{sub}_{trial}_2_{pos}_{cmd}_{frame}_{cam}.png`` for images and
``{sub}_{trial}_2_{pos}_{cmd}_{mic}.wav`` for audio (see ../shared/docs/datasets.md).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from tavse.common.io import is_unsafe_member
from tavse.common.rates import FPS, SPEAKINGFACES_SAMPLE_RATE
from tavse.corpus.errors import BadInput

STREAM_ALIGNED_RGB = "rgb_image_cmd_aligned"
STREAM_THERMAL = "thr_image_cmd"
STREAM_MIC1 = "mic1_audio_cmd_trim"
CAM_THERMAL, CAM_ALIGNED_RGB = 1, 3
# The dataset's own subjects.csv (MIT licence), tracked in git: the data.subjects_csv of the real corpus.
REAL_SUBJECTS_CSV = "data/real/subjects.csv"

_TAIL = re.compile(r"(?:^|/)trial_(\d+)/([^/]+)/([^/]+)$")
_IMAGE = re.compile(r"^(\d+)_(\d+)_2_(\d+)_(\d+)_(\d+)_(\d+)\.png$")
_AUDIO = re.compile(r"^(\d+)_(\d+)_2_(\d+)_(\d+)_(\d+)\.wav$")
_ARCHIVE = re.compile(r"^sub_(\d+)_ia\.zip$")


@dataclass(frozen=True, order=True)
class UtteranceKey:
    """One spoken command of one speaker, seen from one camera position in one trial."""

    speaker: int
    trial: int
    position: int
    command: int

    @property
    def utt_id(self) -> str:
        return f"s{self.speaker:03d}_t{self.trial}_p{self.position}_c{self.command:04d}"


@dataclass
class UtteranceMembers:
    """Archive member names of one utterance; frames keyed by their 1-based index."""

    key: UtteranceKey
    rgb: dict[int, str] = field(default_factory=dict)
    thermal: dict[int, str] = field(default_factory=dict)
    mic1: str | None = None


@dataclass
class Utterance:
    """Decoded content of one utterance (frames as RGB uint8, audio as float32)."""

    key: UtteranceKey
    rgb: list[np.ndarray]
    thermal: list[np.ndarray]
    audio: np.ndarray
    sample_rate: int


def speaker_id_of(archive: Path) -> int:
    """Speaker ID from an archive name ``sub_{id}_ia.zip``."""
    m = _ARCHIVE.match(archive.name)
    if not m:
        raise BadInput("bad_archive_name", str(archive), "expected a name like sub_12_ia.zip")
    return int(m.group(1))


def find_archives(folder: str | Path) -> list[Path]:
    """All ``sub_{id}_ia.zip`` in ``folder``, sorted by speaker ID."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: SpeakingFaces folder not found")
    found = [p for p in folder.iterdir() if _ARCHIVE.match(p.name)]
    return sorted(found, key=speaker_id_of)


def archive_fingerprint(zf: zipfile.ZipFile) -> str:
    """A cheap content fingerprint: CRC, size and name of every member (no decompression)."""
    h = zlib.crc32(b"")
    parts = sorted(f"{i.filename}:{i.CRC:08x}:{i.file_size}" for i in zf.infolist())
    for p in parts:
        h = zlib.crc32(p.encode(), h)
    return f"{h:08x}-{len(parts)}"


def index_archive(zf, archive: str, speaker: int | None) -> tuple[list[UtteranceMembers], dict[str, int]]:
    """Group the members of an open archive (or :class:`FolderArchive`) into utterances of ``speaker``
    (of any speaker when None).

    Returns the utterances sorted by key and counts of ignored members by reason. Unsafe
    (zip-slip) names and names of another speaker are never read.
    """
    utts: dict[UtteranceKey, UtteranceMembers] = {}
    ignored: dict[str, int] = {}

    def ignore(reason: str) -> None:
        ignored[reason] = ignored.get(reason, 0) + 1

    for name in zf.namelist():
        if name.endswith("/"):
            continue
        if is_unsafe_member(name):
            ignore("unsafe_member_name")
            continue
        m = _TAIL.search(name)
        if not m:
            ignore("unrecognised_member")
            continue
        trial, stream, fname = int(m.group(1)), m.group(2), m.group(3)
        if stream in (STREAM_ALIGNED_RGB, STREAM_THERMAL):
            im = _IMAGE.match(fname)
            if not im:
                ignore("unrecognised_member")
                continue
            sub, t, pos, cmd, frame, cam = map(int, im.groups())
            want_cam = CAM_ALIGNED_RGB if stream == STREAM_ALIGNED_RGB else CAM_THERMAL
            if cam != want_cam or t != trial:
                ignore("unrecognised_member")
                continue
        elif stream == STREAM_MIC1:
            am = _AUDIO.match(fname)
            if not am:
                ignore("unrecognised_member")
                continue
            sub, t, pos, cmd, _mic = map(int, am.groups())
            frame = 0
        else:
            continue  # raw RGB, mic2, the authors' lip crops: not used
        if speaker is not None and sub != speaker:
            ignore("other_speaker_member")
            continue
        key = UtteranceKey(sub, trial, pos, cmd)
        u = utts.setdefault(key, UtteranceMembers(key))
        if stream == STREAM_ALIGNED_RGB:
            u.rgb[frame] = name
        elif stream == STREAM_THERMAL:
            u.thermal[frame] = name
        else:
            u.mic1 = name
    return [utts[k] for k in sorted(utts)], ignored


class FolderArchive:
    """An extracted archive (a folder) with the two zip methods the reader uses."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{root}: folder not found")

    def namelist(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


def _read(zf, archive: str, name: str) -> bytes:
    """The bytes of one member; every way a zip read can fail becomes a named BadInput.

    ``unsupported_compression``: a method Python's zipfile cannot inflate (Deflate64, as Windows
    Explorer writes for big archives, PPMd, ...), raised as NotImplementedError;
    ``encrypted_member``: a password-protected member (RuntimeError); ``corrupt_member``:
    anything else (bad CRC, truncated data, zlib errors, I/O errors).
    """
    where = f"{archive}:{name}"
    try:
        return zf.read(name)
    except NotImplementedError as exc:
        raise BadInput(
            "unsupported_compression",
            where,
            f"cannot read member: {exc} (re-pack the archive with plain Deflate or no compression, "
            "e.g. `zip -r` or Python's zipfile)",
        ) from exc
    except RuntimeError as exc:
        if "encrypt" in str(exc) or "password" in str(exc):
            raise BadInput(
                "encrypted_member", where, f"cannot read member: {exc} (the archive must not be encrypted)"
            ) from exc
        raise BadInput("corrupt_member", where, f"cannot read member: {exc}") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise BadInput("corrupt_member", where, f"cannot read member: {exc}") from exc


try:  # libspng: the same pixels as OpenCV's libpng for 8-bit RGB, ~1.3-1.6x faster (optional)
    import pyspng as _spng
except ImportError:  # pragma: no cover - depends on the environment
    _spng = None


def _is_plain_rgb8(data: bytes) -> bool:
    """A non-interlaced 8-bit truecolour PNG (IHDR right after the signature): what both cameras write."""
    return (
        len(data) > 33
        and data[:8] == b"\x89PNG\r\n\x1a\n"
        and data[12:16] == b"IHDR"
        and data[24] == 8
        and data[25] == 2
        and data[28] == 0
    )


def decode_png(data: bytes, where: str) -> np.ndarray:
    """Decode a PNG to an RGB uint8 array; a clear BadInput if it is not a readable image.

    8-bit RGB PNGs go through libspng (``pyspng``) when it is installed, everything else (grey,
    palette, alpha, 16-bit, interlaced) through OpenCV; both give the same pixels (lossless).
    """
    if _spng is not None and _is_plain_rgb8(data):
        try:
            img = _spng.load(data)
        except Exception:  # let OpenCV decide (and name) what is wrong
            img = None
        if img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
            return img
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise BadInput("unreadable_image", where, "not a readable PNG image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_wav(data: bytes, where: str, expected_rate: int = SPEAKINGFACES_SAMPLE_RATE) -> np.ndarray:
    """Decode a mono WAV to float32, rejecting empty, NaN, multi-channel or wrong-rate audio."""
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for garbage input
        raise BadInput("unreadable_audio", where, f"not a readable WAV: {exc}") from exc
    if audio.shape[1] != 1:
        raise BadInput("stereo_audio", where, f"expected mono, found {audio.shape[1]} channels")
    if sr != expected_rate:
        raise BadInput("wrong_sample_rate", where, f"expected {expected_rate} Hz, found {sr} Hz")
    if audio.shape[0] == 0:
        raise BadInput("empty_audio", where, "no samples")
    if not np.all(np.isfinite(audio)):
        raise BadInput("nan_audio", where, "contains NaN or infinite samples")
    return audio[:, 0]


def check_frames(u: UtteranceMembers, archive: str, tolerance: int) -> int:
    """Check frame indices are contiguous and RGB/thermal counts agree; return the usable count."""
    where = f"{archive}:{u.key.utt_id}"
    if u.mic1 is None:
        raise BadInput("missing_audio", where, "no mic1 WAV for this command")
    if not u.rgb or not u.thermal:
        stream = STREAM_ALIGNED_RGB if not u.rgb else STREAM_THERMAL
        raise BadInput("missing_frames", where, f"no {stream} frames")
    for stream, frames in ((STREAM_ALIGNED_RGB, u.rgb), (STREAM_THERMAL, u.thermal)):
        idx = sorted(frames)
        if idx != list(range(1, len(idx) + 1)):
            missing = sorted(set(range(1, idx[-1] + 1)) - set(idx))[:5]
            raise BadInput("missing_frames", where, f"{stream} frame indices not contiguous (missing e.g. {missing})")
    n_rgb, n_thr = len(u.rgb), len(u.thermal)
    if abs(n_rgb - n_thr) > tolerance:
        raise BadInput("frame_count_mismatch", where, f"{n_rgb} aligned RGB frames vs {n_thr} thermal frames")
    return min(n_rgb, n_thr)


def _load_png(zf, archive: str, name: str) -> np.ndarray:
    return decode_png(_read(zf, archive, name), f"{archive}:{name}")


def load_frames(
    zf, archive: str, u: UtteranceMembers, n: int, pool: Executor | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Decode the first ``n`` aligned-RGB and thermal frames of an utterance (RGB uint8 each).

    With ``pool`` (threads), the frames are read and decoded concurrently: ``zipfile`` reads of
    one open archive are thread-safe and ``cv2.imdecode`` releases the GIL. The pixels are the
    same either way; the first bad frame in frame order is the one reported.
    """
    names = [name for f in range(1, n + 1) for name in (u.rgb[f], u.thermal[f])]
    if pool is None:
        decoded = [_load_png(zf, archive, name) for name in names]
    else:
        futures = [pool.submit(_load_png, zf, archive, name) for name in names]
        try:
            decoded = [fut.result() for fut in futures]
        finally:
            for fut in futures:
                fut.cancel()
    rgb, thermal = [], []
    for f in range(1, n + 1):
        rgb.append(decoded[2 * f - 2])
        thermal.append(decoded[2 * f - 1])
        if rgb[-1].shape != thermal[-1].shape:
            raise BadInput(
                "image_size_mismatch",
                f"{archive}:{u.thermal[f]}",
                f"thermal {thermal[-1].shape[1]}x{thermal[-1].shape[0]} vs aligned RGB {rgb[-1].shape[1]}x{rgb[-1].shape[0]}",
            )
    return rgb, thermal


def load_utterance(
    zf: zipfile.ZipFile, archive: str, u: UtteranceMembers, tolerance: int, pool: Executor | None = None
) -> Utterance:
    """Decode one utterance, trimmed to min(int(fps * duration), frames recorded) frames.

    ``pool``: threads to decode the frames with (see :func:`load_frames`).
    """
    n_frames = check_frames(u, archive, tolerance)
    assert u.mic1 is not None  # check_frames raised missing_audio otherwise
    wav_where = f"{archive}:{u.mic1}"
    audio = decode_wav(_read(zf, archive, u.mic1), wav_where)
    n = check_audio_frames(wav_where, n_frames, len(audio), tolerance)
    rgb, thermal = load_frames(zf, archive, u, n, pool)
    n_audio = round(n * SPEAKINGFACES_SAMPLE_RATE / FPS)
    return Utterance(u.key, rgb, thermal, audio[:n_audio], SPEAKINGFACES_SAMPLE_RATE)


# --------------------------------------------------------------------------- read-only helpers (tavse.inspect, ingest)


def member_stream(name: str) -> tuple[int, str, str] | None:
    """(trial, stream folder, file name) of a member named ``.../trial_{t}/<stream>/<file>``, else None.

    Every stream folder matches, also those :func:`index_archive` does not use (raw RGB, mic2, ...).
    """
    m = _TAIL.search(name)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None


def frame_gaps(frames: Mapping[int, str]) -> list[int]:
    """Frame numbers missing between 1 and the highest one present (what :func:`check_frames` rejects)."""
    return sorted(set(range(1, max(frames, default=0) + 1)) - set(frames))


def check_audio_frames(where: str, n_frames: int, n_samples: int, tolerance: int) -> int:
    """The frames an utterance keeps given its audio length (44.1 kHz samples); used by :func:`load_utterance`.

    Raises the same BadInput (``audio_frame_mismatch``, ``empty_audio``) for ``where`` (the WAV).
    """
    audio_frames = int(FPS * n_samples / SPEAKINGFACES_SAMPLE_RATE)
    if audio_frames < n_frames - tolerance:
        raise BadInput(
            "audio_frame_mismatch",
            where,
            f"audio covers {audio_frames} frames ({n_samples / SPEAKINGFACES_SAMPLE_RATE:.2f} s) but {n_frames} were recorded",
        )
    n = min(n_frames, audio_frames)
    if n < 1:
        raise BadInput("empty_audio", where, "shorter than one video frame")
    return n


def speaker_metadata_warning(
    csv_path: str, subjects: Mapping[int, Mapping[str, str]], speakers: Iterable[int]
) -> str | None:
    """The one warning to log when speaker metadata (age, gender, ethnicity) comes out empty; None if none is.

    ``subjects`` is what was read from ``csv_path`` (``data.subjects_csv``); ``speakers`` the IDs
    being ingested. The message counts the speakers without a row and says why (no path, file
    missing, speaker absent) and where the real corpus's table is.
    """
    wanted = sorted(set(speakers))
    missing = [s for s in wanted if s not in subjects]
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
    if not csv_path:
        why = "data.subjects_csv is empty"
    elif not Path(csv_path).is_file():
        why = f"data.subjects_csv {csv_path}: file not found"
    else:
        why = f"data.subjects_csv {csv_path} has no row for them"
    return (
        f"speaker metadata (age, gender, ethnicity) will be empty for {len(missing)} of {len(wanted)} speaker(s) "
        f"({shown}): {why}; for the real SpeakingFaces corpus set data.subjects_csv: {REAL_SUBJECTS_CSV} "
        "(the dataset's own table, in the repository)"
    )


def read_subjects(path: str) -> dict[int, dict[str, str]]:
    """Speaker metadata from a SpeakingFaces ``subjects.csv`` ({} when the path is empty or absent)."""
    if not path or not Path(path).is_file():
        return {}
    with open(path, newline="") as fh:
        return {
            int(r["Sub_ID"]): {
                "age": r.get("Age", ""),
                "gender": r.get("Gender", ""),
                "ethnicity": r.get("Ethnicity", ""),
            }
            for r in csv.DictReader(fh)
        }
