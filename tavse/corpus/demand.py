"""Reader for DEMAND-layout noise corpora (the ``noise`` stage, :mod:`tavse.pipeline.noise`, uses it).

Works on the real DEMAND download and on the synthetic corpus alike. A source folder may
hold zips (``{ENV}_16k.zip`` / ``{ENV}_48k.zip``, members ``{ENV}/chNN.wav``) and/or extracted
folders (``{ENV}/chNN.wav``): :func:`discover_demand` finds them, :func:`read_channel` reads one
channel of one environment.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tavse.common.io import is_unsafe_member

__all__ = [
    "DEMAND_RATES",
    "DemandSource",
    "discover_demand",
    "read_channel",
]

log = logging.getLogger(__name__)

DEMAND_RATES = (16000, 48000)

_ZIP_RE = re.compile(r"^(?P<env>[A-Za-z0-9]+)_(?P<khz>16|48)k\.zip$")
_ENV_RE = re.compile(r"^[A-Za-z0-9]+$")
_CHANNEL_RE = re.compile(r"^ch(?P<ch>\d{2})\.wav$")


@dataclass(frozen=True)
class DemandSource:
    """Where one environment's recordings live: a zip (rate from its name) or an extracted folder."""

    env: str
    path: Path
    kind: str  # "zip" | "folder"
    rate: int | None  # rate the zip name promises; None for folders (read from the WAV header)

    @property
    def name(self) -> str:
        return self.path.name

    def member(self, channel: int) -> str:
        return f"{self.env}/ch{channel:02d}.wav"


def discover_demand(
    source_dir: str | os.PathLike, listed: Collection[str] | None = None
) -> dict[str, list[DemandSource]]:
    """All DEMAND recordings in ``source_dir``: env name -> candidate sources, best first.

    With ``listed`` (paths relative to ``source_dir``, as its ``manifest.json`` lists them) only
    those files count: a zip if listed, a folder if one of its channels is listed.
    Preference: 16 kHz before 48 kHz (no resampling), then zip before folder (the zip is
    the canonical download; an extracted copy of it holds the same audio).
    """
    root = Path(source_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"DEMAND source folder {root} does not exist or is not a folder")
    found: dict[str, list[DemandSource]] = {}
    entries = (
        sorted(root.iterdir()) if listed is None else [root / n for n in sorted({r.split("/")[0] for r in listed})]
    )
    for entry in entries:
        if entry.is_file() and (m := _ZIP_RE.match(entry.name)) and (listed is None or entry.name in listed):
            src = DemandSource(m["env"], entry, "zip", int(m["khz"]) * 1000)
        elif (
            entry.is_dir()
            and _ENV_RE.match(entry.name)
            and any(
                _CHANNEL_RE.match(p.name) and (listed is None or f"{entry.name}/{p.name}" in listed)
                for p in entry.iterdir()
            )
        ):
            src = DemandSource(entry.name, entry, "folder", None)
        else:
            continue
        found.setdefault(src.env, []).append(src)
    for _env, sources in found.items():
        sources.sort(key=lambda s: (_source_rate(s) != 16000, s.kind != "zip", s.name))
    return found


def _source_rate(src: DemandSource) -> int | None:
    """The rate a source holds: from the zip name, or the header of a folder's first channel."""
    if src.rate is not None:
        return src.rate
    first = min(p for p in src.path.iterdir() if _CHANNEL_RE.match(p.name))
    try:
        return int(sf.info(str(first)).samplerate)
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None  # unreadable: ranked last; the read reports the real error


def _check_member_names(zip_path: Path, names: list[str]) -> None:
    """Refuse archives with absolute or parent-escaping member names (zip-slip)."""
    for name in names:
        if is_unsafe_member(name):
            raise ValueError(f"{zip_path}: unsafe member name {name!r} (absolute path or '..')")


def _decode_wav(data: bytes | Path, label: str, expected_rates: tuple[int, ...], why: str) -> tuple[np.ndarray, int]:
    """Decode and validate one mono DEMAND channel; errors name ``label`` and the problem."""
    try:
        audio, rate = sf.read(
            io.BytesIO(data) if isinstance(data, bytes) else str(data), dtype="float64", always_2d=True
        )
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"{label}: not a readable WAV file ({exc})") from exc
    if audio.shape[0] == 0:
        raise ValueError(f"{label}: empty WAV (0 samples)")
    if audio.shape[1] != 1:
        raise ValueError(f"{label}: {audio.shape[1]} channels, expected mono (DEMAND stores one file per channel)")
    if rate not in expected_rates:
        want = " or ".join(str(r) for r in expected_rates)
        raise ValueError(f"{label}: sample rate {rate} Hz, expected {want} Hz ({why})")
    x = audio[:, 0]
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{label}: contains NaN or infinite samples")
    if not np.any(x):
        raise ValueError(f"{label}: all samples are zero (silent)")
    return x, int(rate)


def read_channel(src: DemandSource, channel: int) -> tuple[np.ndarray, int, str]:
    """One channel of ``src`` as float64 samples, its rate, and a source label for the manifest."""
    member = src.member(channel)
    if src.kind == "folder":
        path = src.path / f"ch{channel:02d}.wav"
        label = f"{src.env}/{path.name}"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: channel {channel} of {src.env} is missing")
        x, rate = _decode_wav(path, str(path), DEMAND_RATES, "the DEMAND rates")
        return x, rate, label
    try:
        with zipfile.ZipFile(src.path) as archive:
            names = archive.namelist()
            _check_member_names(src.path, names)
            if member not in names:
                raise FileNotFoundError(f"{src.path}: no member {member!r} (channel {channel} of {src.env})")
            data = archive.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ValueError(f"{src.path}: corrupt or not a zip archive ({exc})") from exc
    label = f"{src.name}:{member}"
    assert src.rate is not None
    x, rate = _decode_wav(data, f"{src.path}:{member}", (src.rate,), f"as the name {src.name} says")
    return x, rate, label
