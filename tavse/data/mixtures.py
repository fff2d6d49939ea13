"""Frozen, ID-keyed mixture lists: which clean segment, which noise slice, at which SNR.

Validation (and later test) mixtures are drawn once from the seed and saved as a CSV that
every variant and experiment reads, so all models are scored on identical inputs. Each
utterance's mixtures come from an RNG seeded by ``(seed, utt_id)`` through SHA-256 (Python's
``hash()`` is salted per process), so adding or removing an utterance never changes the
mixtures of the others.

The list holds only references (utterance, frames, noise file, offset, SNR) and the noise's
environment and kind (stationary, transient or babble, from the noise manifest's ``kind``
column), so results can be reported per kind; the audio is rebuilt by
:class:`tavse.data.dataset.MixtureSet` with :func:`mix_signals`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tavse.common.audio import mix_at_snr
from tavse.common.io import atomic_path
from tavse.common.seeding import stable_seed
from tavse.data.segments import ALIGN_FRAMES, segment_starts, utterance_samples

log = logging.getLogger(__name__)

# Level of the noise when the clean signal is (near) silent, and what counts as silent.
SILENT_NOISE_DBFS = -25.0
SILENCE_DBFS = -90.0


class NoiseFile(NamedTuple):
    """One noise recording: path relative to the noise folder, environment, length in samples."""

    path: str
    env: str
    n_samples: int


def read_noise_manifest(manifest_csv: str | Path, split: str) -> list[NoiseFile]:
    """The noise files of ``split`` in a ``noise`` stage manifest, sorted by path."""
    manifest_csv = Path(manifest_csv)
    with open(manifest_csv, newline="") as fh:
        files = [NoiseFile(r["path"], r["env"], int(r["n_samples"])) for r in csv.DictReader(fh) if r["split"] == split]
    if not files:
        raise ValueError(f"{manifest_csv}: no noise files of split {split!r}")
    return sorted(files)  # manifest order must not matter: the choice of file indexes this list


def read_noise_kinds(manifest_csv: str | Path, split: str | None = None) -> dict[str, str]:
    """Environment -> noise kind (``kind`` column) in a ``noise`` stage manifest, of ``split`` or all splits.

    A manifest without the column (written before noise kinds existed) is refused: rerun ``noise``.
    """
    manifest_csv = Path(manifest_csv)
    kinds: dict[str, str] = {}
    with open(manifest_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if "kind" not in (reader.fieldnames or ()):
            raise ValueError(
                f"{manifest_csv}: no 'kind' column (a noise manifest from before noise kinds); "
                "rerun the noise stage (dvc repro noise)"
            )
        for row in reader:
            if split is not None and row["split"] != split:
                continue
            where = f"{manifest_csv}:{reader.line_num}"
            if not row["kind"]:
                raise ValueError(f"{where}: empty kind for environment {row['env']!r}")
            if kinds.setdefault(row["env"], row["kind"]) != row["kind"]:
                raise ValueError(
                    f"{where}: environment {row['env']!r} has kinds {kinds[row['env']]!r} and {row['kind']!r}"
                )
    return kinds


def read_utterance_manifest(manifest_csv: str | Path) -> list[tuple[str, int]]:
    """``(utt_id, n_frames)`` of every utterance in an ``ingest`` manifest, in file order."""
    with open(manifest_csv, newline="") as fh:
        return [(r["utt_id"], int(r["n_frames"])) for r in csv.DictReader(fh)]


def check_noise_long_enough(noise: Sequence[NoiseFile], n: int, what: str) -> None:
    """ValueError naming the first noise file shorter than the ``n`` samples ``what`` needs."""
    if not noise:
        raise ValueError("no noise files given")
    for f in noise:
        if f.n_samples < n:
            raise ValueError(f"noise file {f.path} has {f.n_samples} samples, shorter than the {n} needed for {what}")


def choose_noise(rng: np.random.Generator, noise: Sequence[NoiseFile], n: int) -> tuple[int, int]:
    """Index of a noise file and an offset into it for an ``n``-sample slice.

    Files are weighted by how many slices they hold, so every slice of every file is equally
    likely (long recordings are not under-sampled). Two draws from ``rng``: file, then offset.
    """
    check_noise_long_enough(noise, n, f"a {n}-sample slice")
    windows = np.array([f.n_samples - n + 1 for f in noise], dtype=np.float64)
    k = int(rng.choice(len(noise), p=windows / windows.sum()))
    return k, int(rng.integers(0, noise[k].n_samples - n + 1))


def mix_signals(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled to ``snr_db``, as float32.

    A silent clean signal has no level to set an SNR against: ``mix_at_snr`` would scale the
    noise by 0 and hand the model a silent input, teaching it nothing about noise-only
    stretches. There the noise is played at a fixed, realistic -25 dBFS instead (the target
    stays silence), whatever ``snr_db`` says.
    """
    pc = float(np.mean(np.square(clean, dtype=np.float64)))
    if pc < 10 ** (SILENCE_DBFS / 10):
        pn = float(np.mean(np.square(noise, dtype=np.float64)))
        if pn <= 0:
            raise ValueError("noise is silent: cannot mix")
        g = 10 ** (SILENT_NOISE_DBFS / 20) / math.sqrt(pn)
        return (clean + g * noise).astype(np.float32)
    return mix_at_snr(clean, noise, snr_db)


@dataclass(frozen=True)
class Mixture:
    """One frozen mixture: frames ``[start_frame, start_frame + n_frames)`` of ``utt_id`` plus a noise slice."""

    mix_id: str  # "{utt_id}_{k}", k counting the utterance's mixtures from 0
    utt_id: str
    start_frame: int  # a multiple of 7 (0 for whole utterances)
    n_frames: int  # segment length, or the whole utterance
    noise_path: str  # relative to the noise folder
    noise_env: str
    noise_kind: str  # stationary | transient | babble (tavse/corpus/noise_kinds.py)
    noise_offset: int  # first noise sample used
    snr_db: float


COLUMNS = tuple(f.name for f in fields(Mixture))


def make_mixture_list(
    utterances: Sequence[tuple[str, int]],
    noise: Sequence[tuple[str, str, int]],
    snrs_db: Sequence[float],
    seed: int,
    per_utterance: int,
    segment_frames: int | None,
    *,
    noise_kinds: Mapping[str, str],
) -> list[Mixture]:
    """``per_utterance`` mixtures of each ``(utt_id, n_frames)``, in input order.

    ``segment_frames`` None mixes whole utterances; otherwise segments start at distinct
    7-frame-aligned frames where the utterance has enough (utterances shorter than a segment
    are left out, with a warning). SNRs cycle through ``snrs_db`` from a random offset per
    utterance, so each utterance (and the list) is balanced across SNRs. Draws per utterance,
    from an RNG of ``(seed, utt_id)``: SNR offset, segment starts, then per mixture the noise
    file and offset (:func:`choose_noise`). ``noise_kinds`` maps every noise environment to its
    kind (:func:`read_noise_kinds`).
    """
    if per_utterance < 1:
        raise ValueError(f"per_utterance must be >= 1, got {per_utterance}")
    if not snrs_db:
        raise ValueError("snrs_db is empty")
    files = [NoiseFile(str(p), str(e), int(n)) for p, e, n in noise]
    if not files:
        raise ValueError("no noise files given")
    unknown = sorted({f.env for f in files} - set(noise_kinds))
    if unknown:
        raise ValueError(f"no noise kind given for environment(s) {', '.join(unknown)}")
    out: list[Mixture] = []
    short: list[str] = []
    for utt_id, n_frames in utterances:
        rng = np.random.default_rng(stable_seed("mixtures", seed, utt_id))
        snr0 = int(rng.integers(len(snrs_db)))
        if segment_frames is None:
            starts, length = [0] * per_utterance, n_frames
        else:
            options = segment_starts(n_frames, segment_frames, ALIGN_FRAMES)
            if not options:
                short.append(utt_id)
                continue
            # Distinct starts where possible: more coverage of the utterance, fewer near-duplicates.
            picks = rng.choice(len(options), size=per_utterance, replace=len(options) < per_utterance)
            starts, length = sorted(options[int(i)] for i in picks), segment_frames
        need = utterance_samples(length)
        check_noise_long_enough(files, need, f"utterance {utt_id}")
        for k, start in enumerate(starts):
            f, offset = choose_noise(rng, files, need)
            out.append(
                Mixture(
                    mix_id=f"{utt_id}_{k}",
                    utt_id=utt_id,
                    start_frame=start,
                    n_frames=length,
                    noise_path=files[f].path,
                    noise_env=files[f].env,
                    noise_kind=noise_kinds[files[f].env],
                    noise_offset=offset,
                    snr_db=float(snrs_db[(snr0 + k) % len(snrs_db)]),
                )
            )
    if short:
        log.warning("%d utterance(s) shorter than %s frames left out: %s", len(short), segment_frames, ", ".join(short))
    return out


def write_mixture_list(path: str | Path, mixtures: Sequence[Mixture]) -> None:
    """Write ``mixtures`` as CSV, atomically; the bytes depend only on the list."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for m in mixtures:
        # repr() of a float round-trips exactly, so reading back gives the same SNR.
        w.writerow([repr(float(v)) if isinstance(v, float) else v for v in astuple(m)])
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue().encode())


def _parse_row(row: list[str], where: str) -> Mixture:
    """One CSV row as a :class:`Mixture`; ValueError prefixed with ``where`` on any bad field."""
    if len(row) != len(COLUMNS):
        raise ValueError(f"{where}: expected {len(COLUMNS)} fields, got {len(row)}")
    v = dict(zip(COLUMNS, row))
    ints = {}
    for name in ("start_frame", "n_frames", "noise_offset"):
        try:
            ints[name] = int(v[name])
        except ValueError:
            raise ValueError(f"{where}: {name} {v[name]!r} is not an integer") from None
    try:
        snr = float(v["snr_db"])
    except ValueError:
        raise ValueError(f"{where}: snr_db {v['snr_db']!r} is not a number") from None
    if not math.isfinite(snr):
        raise ValueError(f"{where}: snr_db {v['snr_db']!r} is not finite")
    if (
        ints["start_frame"] < 0
        or ints["start_frame"] % ALIGN_FRAMES
        or ints["n_frames"] < 1
        or ints["noise_offset"] < 0
    ):
        raise ValueError(
            f"{where}: need start_frame >= 0 and a multiple of {ALIGN_FRAMES}, "
            f"n_frames >= 1, noise_offset >= 0; got {ints}"
        )
    for name in ("mix_id", "utt_id", "noise_path", "noise_env", "noise_kind"):
        if not v[name]:
            raise ValueError(f"{where}: {name} is empty")
    return Mixture(
        v["mix_id"],
        v["utt_id"],
        ints["start_frame"],
        ints["n_frames"],
        v["noise_path"],
        v["noise_env"],
        v["noise_kind"],
        ints["noise_offset"],
        snr,
    )


def read_mixture_list(path: str | Path) -> list[Mixture]:
    """The mixtures of a CSV written by :func:`write_mixture_list`; errors name the file and line."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is not None and tuple(header) == tuple(c for c in COLUMNS if c != "noise_kind"):
            raise ValueError(
                f"{path}:1: no noise_kind column (a mixture list from before noise kinds); "
                "rebuild it (dvc repro val_mixtures test_mixtures)"
            )
        if header is None or tuple(header) != COLUMNS:
            raise ValueError(f"{path}:1: header {header} is not {list(COLUMNS)}")
        out: list[Mixture] = []
        seen: set[str] = set()
        for row in reader:
            where = f"{path}:{reader.line_num}"
            m = _parse_row(row, where)
            if m.mix_id in seen:
                raise ValueError(f"{where}: duplicate mix_id {m.mix_id!r}")
            seen.add(m.mix_id)
            out.append(m)
    return out
