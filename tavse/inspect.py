"""Look inside one SpeakingFaces archive and say whether ``ingest`` will accept it, and what to change if not.

Run it on the first archive a download brings (and on any archive that looks odd)::

    python -m tavse.inspect /scratch/$USER/tavse-corpora/speakingfaces/sub_1_ia.zip [--params params.yaml]
        [--samples 3] [--faces 3] [--full] [--utterances]

It reads the archive with the ingest stage's own reader (:mod:`tavse.corpus.speakingfaces`) and
reports, in plain text:

* the member layout: the prefix before ``trial_{t}/``, every stream folder found per trial
  (``rgb_image_cmd_aligned``, ``thr_image_cmd``, ``mic1_audio_cmd_trim``, and those ingest does not
  use) with file counts, and members the reader ignores;
* utterances (commands) per trial and camera position, frames per utterance, frame-number gaps,
  RGB/thermal count differences;
* every mic1 WAV: sample rates, channels, durations, and whether it covers the frames;
* a few decoded frames (``--samples``): sizes, the FLIR Iron palette residual of the thermal
  frames (:func:`tavse.vision.thermal_palette.iron_residual`: about 1.4 RGB units for a real
  frame, tens for greyscale or natural colour) and whether FaceMesh finds a face in the aligned
  RGB frames (``--faces``, the detector ingest uses);
* the params that decide (``data.speaker_split``, ``ingest.frame_tolerance``, ``ingest.on_error``,
  ``data.subjects_csv``) and, per utterance, whether ingest's reader will load it: by default from
  the member lists and the decoded WAVs (quick: no frame is decoded beyond the samples); with
  ``--full`` by decoding every utterance exactly as ingest does (:func:`load_utterance`).

It ends with a verdict: ``ACCEPTED`` (with what will be skipped and why) or ``REJECTED`` with
each reason and the param to change, or why no param can fix it. Exit status 0 accepted,
1 rejected, 2 the archive or the params could not be read.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from tavse.common.config import Config, ConfigError, load_config
from tavse.corpus import speakingfaces as sfc
from tavse.corpus.errors import BadInput

log = logging.getLogger("tavse.inspect")

# A thermal frame is Iron pseudo-colour when the median distance of its pixels to the palette is
# below this (a real SpeakingFaces frame: 1.4; its greyscale rendering: 25; the aligned RGB: 105).
IRON_MAX_MEDIAN_RESIDUAL = 6.0
# Share of pixels with R == G == B above which a frame counts as greyscale.
GREY_SHARE = 0.99
EXPECTED_SIZE = (464, 348)  # aligned RGB and thermal frames of the real corpus (width, height)
USED_STREAMS = (sfc.STREAM_ALIGNED_RGB, sfc.STREAM_THERMAL, sfc.STREAM_MIC1)
# What no param can fix, per reason code of the reader.
NO_PARAM = {
    "missing_frames": "frames are absent or their numbers have gaps",
    "missing_audio": f"the command has no {sfc.STREAM_MIC1} WAV",
    "wrong_sample_rate": f"the reader expects {sfc.SPEAKINGFACES_SAMPLE_RATE} Hz WAVs",
    "stereo_audio": "the reader expects mono WAVs",
    "unreadable_audio": "the WAV cannot be decoded",
    "empty_audio": "the WAV is empty or shorter than a frame",
    "nan_audio": "the WAV holds NaN samples",
    "unreadable_image": "a PNG cannot be decoded",
    "corrupt_member": "a member cannot be read from the zip",
    "image_size_mismatch": "aligned RGB and thermal frames differ in size",
}


def _repo_params() -> Path:
    return Path(__file__).resolve().parents[1] / "params.yaml"


@dataclass
class Inspection:
    """The report's lines and the verdict."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each one makes the verdict REJECTED
    notes: list[str] = field(default_factory=list)  # what will be skipped or missing, and the param to change

    @property
    def accepted(self) -> bool:
        return not self.problems

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _read(zf: zipfile.ZipFile, archive: str, name: str) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BadInput("corrupt_member", f"{archive}:{name}", f"cannot read member: {exc}") from exc


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _spread(items: list, k: int) -> list:
    """``k`` items spread evenly over ``items`` (all when there are fewer), in order."""
    if k <= 0 or not items:
        return []
    if len(items) <= k:
        return list(items)
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)] if k > 1 else [items[0]]


def _range(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if lo == hi:
        return fmt.format(lo)
    return f"{fmt.format(lo)}..{fmt.format(hi)} (median {fmt.format(statistics.median(values))})"


def _layout(rep: Inspection, names: list[str]) -> dict[tuple[int, str], int]:
    """The stream folders per trial, the prefixes, the members outside the layout; returns the counts."""
    streams: dict[tuple[int, str], int] = Counter()
    prefixes: Counter = Counter()
    outside = []
    for name in names:
        if name.endswith("/"):
            continue
        found = sfc.member_stream(name)
        if found is None:
            outside.append(name)
            continue
        trial, stream, _ = found
        streams[(trial, stream)] += 1
        prefixes[name[: name.index(f"trial_{trial}/")]] += 1
    shown = ", ".join(repr(p) if p else "'' (none)" for p, _ in prefixes.most_common(3)) or "-"
    rep.add(f"prefix before trial_{{t}}/: {shown}" + (f" (+{len(prefixes) - 3} more)" if len(prefixes) > 3 else ""))
    rep.add("stream folders (trial_{t}/<folder>/: files):")
    for trial in sorted({t for t, _ in streams}):
        parts = [f"{s} {streams[(t, s)]}" for t, s in sorted(streams) if t == trial]
        rep.add(f"  trial {trial}: " + ", ".join(parts))
    if not streams:
        rep.add("  none")
    present = {s for _, s in streams}
    missing = [s for s in USED_STREAMS if s not in present]
    rep.add("  used by ingest: " + ", ".join(f"{s} ({'found' if s in present else 'MISSING'})" for s in USED_STREAMS))
    other = sorted(present - set(USED_STREAMS))
    if other:
        rep.add(f"  not used by ingest: {', '.join(other)}")
    if outside:
        rep.add(
            f"  {_plural(len(outside), 'member')} outside trial_{{t}}/<folder>/ (ignored), e.g. {', '.join(outside[:3])}"
        )
    for s in missing:
        if s == sfc.STREAM_ALIGNED_RGB:
            why = (
                "ingest finds the mouth on the aligned RGB frames (RGB warped into the thermal camera's geometry) "
                "and crops both streams with that box"
            )
        elif s == sfc.STREAM_THERMAL:
            why = "the thermal stream is half of what TAVSE studies"
        else:
            why = "the clean speech comes from mic1"
        if s == sfc.STREAM_MIC1 and any(st.startswith("mic") for st in present):
            why += f"; the archive has {', '.join(sorted(st for st in present if st.startswith('mic')))} instead"
        rep.problems.append(
            f"no {s} folder: nothing can be ingested ({why}); every command would be skipped. No param changes "
            f"this: the reader looks for trial_{{t}}/{s}/ (tavse/corpus/speakingfaces.py); use an archive that has it"
        )
    return streams


def _utterances(rep: Inspection, utts: list[sfc.UtteranceMembers], tolerance: int) -> None:
    """Counts per trial/position, frames per utterance, gaps, RGB/thermal differences."""
    rep.add(f"utterances (commands x positions x trials): {len(utts)}")
    by_trial: dict[int, Counter] = defaultdict(Counter)
    for u in utts:
        by_trial[u.key.trial][u.key.position] += 1
    for trial in sorted(by_trial):
        cmds = {u.key.command for u in utts if u.key.trial == trial}
        per_pos = ", ".join(f"p{p} {n}" for p, n in sorted(by_trial[trial].items()))
        rep.add(
            f"  trial {trial}: {_plural(len(cmds), 'command')} over {_plural(len(by_trial[trial]), 'position')} "
            f"({per_pos})"
        )
    n_rgb = [len(u.rgb) for u in utts]
    n_thr = [len(u.thermal) for u in utts]
    rep.add(f"  frames per utterance: aligned RGB {_range(n_rgb)}, thermal {_range(n_thr)}")
    diffs = [abs(len(u.rgb) - len(u.thermal)) for u in utts if u.rgb and u.thermal]
    over = sum(d > tolerance for d in diffs)
    rep.add(
        f"  |RGB - thermal| frame counts: max {max(diffs, default=0)}; {over} over ingest.frame_tolerance {tolerance}"
    )
    gaps = []
    for u in utts:
        for stream, frames in ((sfc.STREAM_ALIGNED_RGB, u.rgb), (sfc.STREAM_THERMAL, u.thermal)):
            missing = sfc.frame_gaps(frames)
            if missing:
                gaps.append((u.key.utt_id, stream, missing))
    if gaps:
        shown = "; ".join(
            f"{uid} {stream} missing {', '.join(map(str, m[:5]))}{', ...' if len(m) > 5 else ''}"
            for uid, stream, m in gaps[:3]
        )
        rep.add(
            f"  frame-number gaps: {_plural(len({g[0] for g in gaps}), 'utterance')} "
            f"({sum(len(g[2]) for g in gaps)} frame(s) missing): {shown}" + (" ..." if len(gaps) > 3 else "")
        )
    else:
        rep.add("  frame-number gaps: none (every stream numbered 1..n)")


def _audio(rep: Inspection, zf: zipfile.ZipFile, archive: str, utts: list[sfc.UtteranceMembers]) -> dict[str, int]:
    """Header facts of every mic1 WAV; returns the number of samples per member (for the frame check)."""
    rates: Counter = Counter()
    channels: Counter = Counter()
    durations = []
    samples: dict[str, int] = {}
    unreadable = 0
    for u in utts:
        if u.mic1 is None:
            continue
        try:
            info = sf.info(io.BytesIO(_read(zf, archive, u.mic1)))
        except (BadInput, RuntimeError, sf.LibsndfileError):
            unreadable += 1
            continue
        rates[info.samplerate] += 1
        channels[info.channels] += 1
        durations.append(info.frames / info.samplerate)
        samples[u.mic1] = info.frames
    n = sum(u.mic1 is not None for u in utts)
    rate_text = ", ".join(f"{r} Hz x{k}" for r, k in sorted(rates.items())) or "-"
    chan_text = ", ".join(f"{c} x{k}" for c, k in sorted(channels.items())) or "-"
    rep.add(
        f"audio ({sfc.STREAM_MIC1}): {_plural(n, 'WAV')} for {_plural(len(utts), 'utterance')}; "
        f"sample rate {rate_text}; channels {chan_text}; duration {_range(durations, '{:.2f}')} s"
        + (f"; {unreadable} unreadable" if unreadable else "")
    )
    return samples


def _frames(
    rep: Inspection, zf: zipfile.ZipFile, archive: str, utts: list[sfc.UtteranceMembers], k: int, faces: int
) -> None:
    """Decode the first frame of ``k`` utterances: sizes, Iron residual, greyscale share, FaceMesh."""
    from tavse.vision.thermal_palette import iron_residual

    picked = _spread([u for u in utts if 1 in u.rgb or 1 in u.thermal], k)
    rgb_frames, residuals, grey = [], [], []
    sizes_rgb: Counter[str] = Counter()
    sizes_thr: Counter[str] = Counter()
    for u in picked:
        if 1 in u.rgb:
            try:
                img = sfc.decode_png(_read(zf, archive, u.rgb[1]), f"{archive}:{u.rgb[1]}")
                rgb_frames.append(img)
                sizes_rgb[f"{img.shape[1]}x{img.shape[0]}"] += 1
            except BadInput as exc:
                rep.add(f"  {exc}")
        if 1 in u.thermal:
            try:
                img = sfc.decode_png(_read(zf, archive, u.thermal[1]), f"{archive}:{u.thermal[1]}")
            except BadInput as exc:
                rep.add(f"  {exc}")
                continue
            sizes_thr[f"{img.shape[1]}x{img.shape[0]}"] += 1
            residuals.append(float(np.median(iron_residual(np.ascontiguousarray(img)))))
            grey.append(float(np.mean((img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2]))))
    fmt = lambda c: ", ".join(f"{s} x{n}" for s, n in sorted(c.items())) or "-"
    rep.add(
        f"sampled frames (frame 1 of {_plural(len(picked), 'utterance')}): aligned RGB {fmt(sizes_rgb)}; "
        f"thermal {fmt(sizes_thr)} (the real corpus: {EXPECTED_SIZE[0]}x{EXPECTED_SIZE[1]})"
    )
    if residuals:
        is_grey = statistics.median(grey) >= GREY_SHARE
        iron = statistics.median(residuals) <= IRON_MAX_MEDIAN_RESIDUAL and not is_grey
        kind = (
            "FLIR Iron pseudo-colour"
            if iron
            else "GREYSCALE (R = G = B), not Iron"
            if is_grey
            else "NOT the Iron palette"
        )
        rep.add(
            f"  thermal Iron residual (median per frame, RGB units): {', '.join(f'{r:.1f}' for r in residuals)} "
            f"(Iron: at most {IRON_MAX_MEDIAN_RESIDUAL:g}); greyscale pixels {statistics.median(grey):.0%} -> {kind}"
        )
        if not iron:
            what = (
                "single-channel (greyscale) thermal images"
                if is_grey
                else "colours far from the Iron palette (another palette, or not thermal at all)"
            )
            rep.problems.append(
                f"thermal frames are not FLIR Iron pseudo-colour: {what}. ingest maps each Iron colour back to its "
                "temperature (iron_to_temperature), so these would become meaningless thermal crops. No param "
                "changes this: use the dataset's own thr_image_cmd frames (3-channel Iron)"
            )
    if sizes_rgb and sizes_thr and set(sizes_rgb) != set(sizes_thr):
        rep.notes.append(
            "aligned RGB and thermal frame sizes differ: those commands are skipped as image_size_mismatch"
        )
    if faces and rgb_frames:
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings only
        from tavse.vision import mouth_roi

        shown = rgb_frames[:faces]
        lips, _ = mouth_roi.detect_lips(shown, stride=1, static=True)
        found = int(np.isfinite(lips[:, 0, 0]).sum())
        rep.add(
            f"  FaceMesh (ingest's face detector) on the sampled aligned RGB frames: a face in {found} of {len(shown)}"
        )
        if found == 0:
            rep.problems.append(
                "FaceMesh finds no face in any sampled aligned RGB frame: ingest would skip the commands as no_face "
                "(ingest.min_detection_ratio cannot help when nothing is detected); check that "
                f"{sfc.STREAM_ALIGNED_RGB} holds the camera's face frames"
            )


def _check(
    rep: Inspection,
    zf: zipfile.ZipFile,
    archive: str,
    utts: list[sfc.UtteranceMembers],
    samples: dict[str, int],
    tolerance: int,
    full: bool,
    table: bool,
) -> Counter:
    """Per utterance: will the reader load it? Returns the skip counts by reason (``table``: one line each)."""
    skipped: Counter = Counter()
    need_tol = 0
    rows = []
    for u in utts:
        n_audio = samples.get(u.mic1 or "", 0)
        row = (
            f"  {u.key.utt_id}  rgb {len(u.rgb):>4}  thermal {len(u.thermal):>4}  "
            f"audio {n_audio / sfc.SPEAKINGFACES_SAMPLE_RATE:6.2f} s  "
        )
        try:
            if full:
                n = len(sfc.load_utterance(zf, archive, u, tolerance).rgb)
            else:
                n = sfc.check_frames(u, archive, tolerance)
                assert u.mic1 is not None  # check_frames raised missing_audio otherwise
                wav = f"{archive}:{u.mic1}"
                sfc.decode_wav(_read(zf, archive, u.mic1), wav)
                n = sfc.check_audio_frames(wav, n, n_audio, tolerance)
            rows.append(row + f"ok, {n} frames")
        except BadInput as exc:
            rows.append(row + f"skip: {exc.reason} ({exc.message})")
            skipped[exc.reason] += 1
            if exc.reason in ("frame_count_mismatch", "audio_frame_mismatch"):
                n_rgb, n_thr = len(u.rgb), len(u.thermal)
                n_audio = int(sfc.FPS * samples.get(u.mic1 or "", 0) / sfc.SPEAKINGFACES_SAMPLE_RATE)
                need_tol = max(need_tol, abs(n_rgb - n_thr), min(n_rgb, n_thr) - n_audio)
    how = "every utterance decoded as ingest does" if full else "member lists and WAVs; --full decodes every frame"
    detail = ", ".join(f"{r} {n}" for r, n in sorted(skipped.items()))
    rep.add(
        f"reader check ({how}): {len(utts) - sum(skipped.values())} of {len(utts)} utterance(s) load"
        + (f"; would be skipped: {detail}" if skipped else "")
    )
    if table:
        rep.lines.extend(rows)
    if need_tol:
        rep.notes.append(
            f"{skipped['frame_count_mismatch'] + skipped['audio_frame_mismatch']} utterance(s) disagree "
            f"in frame counts (RGB/thermal/audio) by up to {need_tol}: ingest.frame_tolerance: {need_tol} "
            f"would keep them (now {tolerance})"
        )
    for reason, n in sorted(skipped.items()):
        if reason in NO_PARAM:
            rep.notes.append(
                f"{_plural(n, 'utterance')} skipped as {reason}: {NO_PARAM[reason]} (no param changes this)"
            )
    return skipped


def inspect_archive(
    path: Path,
    cfg: Config,
    params_path: Path,
    *,
    samples: int = 3,
    faces: int = 3,
    full: bool = False,
    table: bool = False,
) -> Inspection:
    """Inspect one archive against the params ``cfg`` (read from ``params_path``)."""
    rep = Inspection()
    archive = str(path)
    tolerance = cfg.ingest.frame_tolerance
    try:
        speaker = sfc.speaker_id_of(path)
    except BadInput:
        speaker = None
    rep.add(f"archive: {archive}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        rep.problems.append(
            f"not a readable zip archive ({exc}): a download that did not finish? "
            "`python -m tavse.download ... --verify` re-checks it"
        )
        return _verdict(rep, speaker, None, cfg, Counter(), 0)
    with zf:
        names = zf.namelist()
        rep.add(f"members: {len(names)}; speaker from the name: {speaker if speaker is not None else 'NONE'}")
        if speaker is None:
            rep.problems.append(
                f"{path.name}: not named sub_{{id}}_ia.zip: the manifest and ingest only take archives "
                "named like sub_12_ia.zip (rename it; the ID is the speaker)"
            )
        _layout(rep, names)
        utts, ignored = sfc.index_archive(zf, archive, speaker)
        if ignored:
            rep.add("ignored by the reader: " + ", ".join(f"{r} {n}" for r, n in sorted(ignored.items())))
        _utterances(rep, utts, tolerance)
        wav_samples = _audio(rep, zf, archive, utts)
        _frames(rep, zf, archive, utts, samples, faces)
        skipped = _check(rep, zf, archive, utts, wav_samples, tolerance, full, table)
    return _verdict(rep, speaker, params_path, cfg, skipped, len(utts))


def _verdict(
    rep: Inspection, speaker: int | None, params_path: Path | None, cfg: Config, skipped: Counter, n_utts: int
) -> Inspection:
    data, ing = cfg.data, cfg.ingest
    split = data.split_of(speaker) if speaker is not None else None
    rep.add(
        f"params ({params_path}): data.speaker_split {data.speaker_split} -> speaker {speaker} in "
        f"{split or 'NO split'}; ingest.frame_tolerance {ing.frame_tolerance}; ingest.on_error {ing.on_error}"
    )
    if speaker is not None and split is None:
        ranges = ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in data.speaker_splits[data.speaker_split].items())
        rep.problems.append(
            f"speaker {speaker} is outside every split of data.speaker_split {data.speaker_split} "
            f"({ranges}): ingest leaves the archive out; change data.speaker_split or its ranges in "
            "data.speaker_splits"
        )
    if speaker is not None:
        csv_path = data.subjects_csv  # relative paths: from the folder of params.yaml (where dvc runs)
        if csv_path and not Path(csv_path).is_absolute() and params_path is not None:
            csv_path = str(params_path.parent / csv_path)
        from tavse.corpus.speakingfaces import read_subjects

        subjects = read_subjects(csv_path)
        row = subjects.get(speaker)
        if row:
            rep.add(
                f"speaker metadata (data.subjects_csv {csv_path}): age {row['age']}, {row['gender']}, "
                f"{row['ethnicity']}"
            )
        else:
            rep.add(f"speaker metadata (data.subjects_csv {csv_path or '(empty)'}): none for speaker {speaker}")
            rep.notes.append(sfc.speaker_metadata_warning(csv_path, subjects, [speaker]) or "")
    kept = n_utts - sum(skipped.values())
    if n_utts and not kept and not any("nothing can be ingested" in p for p in rep.problems):
        rep.problems.append(
            f"none of the {n_utts} utterance(s) would load ("
            + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items()))
            + ")"
        )
    if not n_utts and not rep.problems:
        rep.problems.append(
            "no utterances in the SpeakingFaces layout (trial_{t}/<stream>/{sub}_{trial}_2_{pos}_{cmd}_...)"
        )
    if skipped and ing.on_error == "fail":
        rep.problems.append(
            f"ingest.on_error is fail and {sum(skipped.values())} utterance(s) would be skipped: the "
            "whole ingest would stop at the first; set ingest.on_error: skip (they are then counted)"
        )
    if rep.accepted:
        rep.add(
            f"verdict: ACCEPTED - ingest will take {kept} of {n_utts} utterance(s) of speaker {speaker} "
            f"(split {split})" + (f"; {sum(skipped.values())} skipped" if skipped else "")
        )
    else:
        rep.add("verdict: REJECTED - ingest will not use this archive as it is:")
        for p in rep.problems:
            rep.add(f"  - {p}")
    notes = [n for n in rep.notes if n]
    if notes:
        rep.add("notes:")
        for n in notes:
            rep.add(f"  - {n}")
    return rep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tavse.inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path, help="a sub_{id}_ia.zip")
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params.yaml to judge against (default: ./params.yaml, else the repository's)",
    )
    parser.add_argument("--samples", type=int, default=3, help="utterances whose first frame is decoded (default 3)")
    parser.add_argument("--faces", type=int, default=3, help="sampled aligned RGB frames FaceMesh runs on (0: skip)")
    parser.add_argument("--full", action="store_true", help="decode every utterance exactly as ingest does (slower)")
    parser.add_argument(
        "--utterances",
        action="store_true",
        help="one line per utterance: frames, audio length, whether the reader loads it",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    params = args.params or (Path("params.yaml") if Path("params.yaml").is_file() else _repo_params())
    try:
        cfg = load_config(params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.archive.is_file():
        print(f"error: {args.archive}: file not found", file=sys.stderr)
        return 2
    rep = inspect_archive(
        args.archive, cfg, params, samples=args.samples, faces=args.faces, full=args.full, table=args.utterances
    )
    sys.stdout.write(rep.text())
    return 0 if rep.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
