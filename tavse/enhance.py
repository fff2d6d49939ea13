"""Enhance a noisy recording with a trained TAVSE variant: your own video, SpeakingFaces frames, or audio alone.

    # your own recording: an RGB video (with its audio track, or --audio FILE); thermal variants
    # also need the thermal video aligned to it (same pixel grid, FLIR Iron palette)
    python -m tavse.enhance --model models/audio_rgb/best.pt --video me.mp4 [--audio me.wav] --out enhanced.wav
    python -m tavse.enhance --model models/audio_thermal/best.pt --video me.mp4 --thermal-video me.thermal.mp4 \\
        --out enhanced.wav
    # audio_only needs no video
    python -m tavse.enhance --model models/audio_only/best.pt --audio noisy.wav --out enhanced.wav
    # SpeakingFaces frames: a sub_{id}_ia.zip or its extracted folder (audio: --audio, else the utterance's mic1)
    python -m tavse.enhance --model models/audio_thermal/best.pt --audio noisy.wav \\
        --frames sub_121_ia.zip --utterance s121_t1_p1_c0005 --out enhanced.wav
    # a folder of recordings: NAME.mp4 (RGB), NAME.thermal.mp4 (its thermal video), NAME.wav (its audio,
    # or alone an audio-only recording) -> OUT_DIR/NAME.wav; exits 1 if any recording failed
    python -m tavse.enhance --model models/audio_rgb/best.pt --batch recordings/ --out-dir enhanced/

The mouth is found and cropped as ``ingest`` does it, with the ingest settings stored in the
checkpoint (landmark stride, box scale, smoothing, crop size): FaceMesh on the aligned RGB frames,
the same box applied to the thermal frames, whose Iron colours are mapped back to temperatures.
A video of any frame size and frame rate works: its frames are resampled in time to the model's
rate (``ingest.fps``, 28): each model frame takes the video frame nearest in time. Audio of any
sample rate is resampled to 16 kHz; several channels are averaged. Prints the real-time factor:
processing time (reading, face tracking, cropping, the model, writing; not the one-off start-up:
loading the model and FaceMesh) / duration of the audio enhanced.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import sys
import time
import zipfile
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from tavse.common.audio import resample
from tavse.common.config import IngestConfig, load_config, section_from_dict
from tavse.common.io import atomic_path, wav_bytes
from tavse.corpus import speakingfaces as sfc
from tavse.corpus.errors import BadInput
from tavse.evaluation.scoring import enhance, load_model
from tavse.media import (
    AUDIO_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaError,
    NoAudioTrack,
    VideoInfo,
    iter_frames,
    model_frame_sources,
    probe_video,
    read_audio,
)
from tavse.vision import mouth_roi
from tavse.vision.mouth_crops import check_palette, mouth_crops
from tavse.vision.thermal_palette import iron_to_temperature

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
FACEMESH_BLOCK = 32  # frames per FaceMesh instance: bounds the frames held in memory while tracking


class EnhanceError(Exception):
    """A recording that cannot be enhanced; the message names the file and what is wrong."""


FAILURES = (EnhanceError, MediaError, BadInput)


@dataclasses.dataclass
class Recording:
    """The files of one recording; unset ones are absent."""

    name: str
    audio: Path | None = None
    video: Path | None = None  # RGB, aligned with the thermal video
    thermal_video: Path | None = None
    frames: Path | None = None  # SpeakingFaces zip or folder
    utterance: str | None = None
    problem: str | None = None  # set by find_recordings (e.g. two videos of one name)


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; EnhanceError if that CUDA device is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EnhanceError(f"--device {name}: no CUDA device available to PyTorch here; use --device cpu (or auto)")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise EnhanceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def _device_arg(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda or cuda:N")
    return text


def open_frames(path: Path):
    """A zip or a folder of SpeakingFaces frames, as something with ``namelist()`` and ``read()``."""
    if path.is_dir():
        return sfc.FolderArchive(path)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EnhanceError(f"{path}: not a folder or a readable zip archive ({exc})") from None


def select_utterance(utts: list[sfc.UtteranceMembers], wanted: str | None, source: Path) -> sfc.UtteranceMembers:
    ids = [u.key.utt_id for u in utts]
    if not utts:
        raise EnhanceError(f"{source}: no aligned RGB + thermal frames in the SpeakingFaces layout")
    if wanted is None:
        if len(utts) > 1:
            raise EnhanceError(f"{source} holds {len(utts)} utterances; choose one with --utterance (e.g. {ids[0]})")
        return utts[0]
    if wanted not in ids:
        raise EnhanceError(f"{source}: no utterance {wanted!r}; found {ids[:10]}{' ...' if len(ids) > 10 else ''}")
    return utts[ids.index(wanted)]


def find_recordings(folder: Path) -> tuple[list[Recording], list[Path]]:
    """The recordings of a batch folder by file name, and the files ignored (neither video nor audio).

    ``NAME.<video>`` is an RGB video, ``NAME.thermal.<video>`` the thermal video aligned to it,
    ``NAME.<audio>`` its audio (alone: an audio-only recording); two files for one role make
    that recording fail, naming both.
    """
    recs: dict[str, Recording] = {}
    ignored = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix, stem = p.suffix.lower(), p.name[: -len(p.suffix)] if p.suffix else p.name
        if suffix in VIDEO_SUFFIXES and stem.lower().endswith(".thermal"):
            role, name = "thermal_video", stem[: -len(".thermal")]
        elif suffix in VIDEO_SUFFIXES:
            role, name = "video", stem
        elif suffix in AUDIO_SUFFIXES:
            role, name = "audio", stem
        else:
            ignored.append(p)
            continue
        rec = recs.setdefault(name, Recording(name))
        if getattr(rec, role) is not None:
            rec.problem = f"two files for the {role.replace('_', ' ')} of {name!r}: {getattr(rec, role).name}, {p.name}"
        else:
            setattr(rec, role, p)
    return [recs[k] for k in sorted(recs)], ignored


class Enhancer:
    """A loaded model and the ingest settings it was trained with; call it on a :class:`Recording`."""

    def __init__(self, model_path: Path, device: str = "auto"):
        t0 = time.perf_counter()
        self.device = pick_device(device)
        if not Path(model_path).is_file():
            raise EnhanceError(f"{model_path}: model checkpoint not found (models/<variant>/best.pt after `dvc repro`)")
        self.model, ckpt = load_model(model_path, self.device)
        self.model_path = Path(model_path)
        self.variant = ckpt.get("variant", self.model_path.parent.name)
        self.modalities = tuple(self.model.modalities)
        # The keys that shaped the training crops come from best.pt; the rest (the palette threshold;
        # paths, workers, skip ratios unused here) from the params.yaml beside this package, so that
        # enhance runs from any folder.
        crop = {**dataclasses.asdict(load_config(PARAMS).ingest), **ckpt["config"]["ingest"]}
        self.cfg: IngestConfig = section_from_dict(IngestConfig, crop, f"{model_path}: ingest")
        if self.modalities:
            # The first FaceMesh of a process loads its graph (~2 s): a start-up cost like the model's.
            mouth_roi.detect_lips([np.zeros((64, 64, 3), np.uint8)], stride=1, static=True)
        self.load_s = time.perf_counter() - t0

    # ------------------------------------------------------------------ one recording

    def __call__(self, rec: Recording, out: Path) -> dict:
        """Enhance ``rec`` into the 16 kHz WAV ``out``; the figures of the run (durations, RTF, notes)."""
        t0 = time.perf_counter()
        if rec.problem:
            raise EnhanceError(rec.problem)
        cfg = self.cfg
        notes: list[str] = []
        self._check_inputs(rec)
        sf_source = open_frames(rec.frames) if rec.frames else None
        with sf_source if isinstance(sf_source, zipfile.ZipFile) else contextlib.nullcontext():
            utt = None
            if sf_source is not None:
                assert rec.frames is not None  # sf_source was opened from it
                utts, _ = sfc.index_archive(sf_source, str(rec.frames), None)
                utt = select_utterance(utts, rec.utterance, rec.frames)
            rgb_info = probe_video(rec.video) if self.modalities and rec.video else None
            thr_info = probe_video(rec.thermal_video) if "thermal" in self.modalities and rec.thermal_video else None
            noisy = self._audio(rec, sf_source, utt, rgb_info, notes)
            n_audio = int(len(noisy) * cfg.fps / cfg.sample_rate)
            if n_audio < 1:
                raise EnhanceError(
                    f"{rec.audio or rec.video or rec.frames}: audio shorter than one video frame (1/{cfg.fps} s)"
                )
            visual: dict[str, torch.Tensor] = {}
            n: int | None = None
            if self.modalities and utt is not None:
                assert rec.frames is not None  # utt came from its frames
                visual, n = self._frames_crops(rec.frames, sf_source, utt, n_audio)
                notes.append(f"{n} frames of {utt.key.utt_id}")
            elif self.modalities:
                assert rgb_info is not None  # _check_inputs: a visual model without frames has a video
                visual, n = self._video_crops(rgb_info, thr_info, n_audio)
                rate = rgb_info.rate
                resampled = f"resampled to {cfg.fps} fps" if not np.isclose(rate, cfg.fps, rtol=1e-3) else "as recorded"
                notes.append(f"{n} frames, video at {rate:.2f} fps {resampled}, {rgb_info.width}x{rgb_info.height}")
        n_samples = len(noisy) if n is None else round(n * cfg.sample_rate / cfg.fps)
        x = torch.from_numpy(np.ascontiguousarray(noisy[:n_samples])).to(self.device)
        visual = {m: v.to(self.device) for m, v in visual.items()}
        t1 = time.perf_counter()
        enhanced = enhance(self.model, x, visual)  # returns on the CPU: the GPU work is finished
        t2 = time.perf_counter()
        with atomic_path(out) as tmp:
            tmp.write_bytes(wav_bytes(np.clip(enhanced, -1, 1), cfg.sample_rate))
        seconds = n_samples / cfg.sample_rate
        t3 = time.perf_counter()
        return {
            "name": rec.name,
            "out": str(out),
            "variant": self.variant,
            "device": str(self.device),
            "frames": n,
            "seconds": seconds,
            "dropped_s": max(0.0, (len(noisy) - n_samples) / cfg.sample_rate),
            "processing_s": t3 - t0,
            "rtf": (t3 - t0) / seconds,
            "rtf_model": (t2 - t1) / seconds,
            "notes": notes,
        }

    def _check_inputs(self, rec: Recording) -> None:
        needs = " and ".join(self.modalities)
        if rec.frames and (rec.video or rec.thermal_video):
            raise EnhanceError(f"{rec.name}: give either SpeakingFaces frames (--frames) or videos (--video), not both")
        if rec.thermal_video and not rec.video and "thermal" in self.modalities:
            raise EnhanceError(
                f"{rec.thermal_video}: a thermal video needs the RGB video aligned to it (--video; in a "
                "batch folder NAME.mp4 beside NAME.thermal.mp4): the mouth is found by FaceMesh on the "
                "RGB frames and cropped at the same place in the thermal ones"
            )
        if self.modalities and not (rec.video or rec.frames):
            what = rec.audio or rec.name
            raise EnhanceError(
                f"{what}: the model {self.model_path} ({self.variant}) needs the {needs} video of the "
                "speaker's mouth: give --video RGB_VIDEO"
                + (" --thermal-video THERMAL_VIDEO" if "thermal" in self.modalities else "")
                + " (in a batch folder NAME.mp4"
                + (" and NAME.thermal.mp4" if "thermal" in self.modalities else "")
                + ") or --frames SpeakingFaces frames; only an audio_only model enhances audio alone"
            )
        if "thermal" in self.modalities and rec.video and not rec.thermal_video:
            raise EnhanceError(
                f"{rec.video}: the model {self.model_path} ({self.variant}) needs the thermal video too, "
                "aligned to this RGB video: give --thermal-video THERMAL_VIDEO (in a batch folder "
                f"{rec.name}.thermal.mp4)"
            )
        if not (rec.audio or rec.video or rec.frames):
            raise EnhanceError(f"{rec.name}: no audio: give --audio FILE (or a video with an audio track)")

    def _audio(self, rec: Recording, source, utt, rgb_info: VideoInfo | None, notes: list[str]) -> np.ndarray:
        """The recording's audio at 16 kHz: --audio, else the video's own track, else the utterance's mic1."""
        if rec.audio:
            a = read_audio(rec.audio)
        elif rec.video:
            try:
                a = read_audio(rec.video)
            except NoAudioTrack:
                raise EnhanceError(
                    f"{rec.video}: the video has no audio track; give the recording's audio with "
                    f"--audio FILE (in a batch folder {rec.name}.wav)"
                ) from None
            if rgb_info is not None and a.start is not None:
                # The track's first sample and the first frame in the file's common clock.
                lead = round((a.start - rgb_info.start) * a.sample_rate)
                x = np.concatenate([np.zeros(lead, np.float32), a.samples]) if lead > 0 else a.samples[-lead:]
                if lead:
                    notes.append(f"audio track {lead / a.sample_rate * 1000:+.0f} ms from the first frame, aligned")
                a = dataclasses.replace(a, samples=x)
        else:
            if utt.mic1 is None:
                raise EnhanceError(f"{rec.frames}:{utt.key.utt_id}: no mic1 WAV for this utterance; give --audio FILE")
            samples = sfc.decode_wav(source.read(utt.mic1), f"{rec.frames}:{utt.mic1}")
            notes.append(f"audio: {Path(utt.mic1).name}")
            return resample(samples, sfc.SPEAKINGFACES_SAMPLE_RATE, self.cfg.sample_rate)
        if a.channels > 1:
            notes.append(f"{a.channels} audio channels averaged")
        return resample(a.samples, a.sample_rate, self.cfg.sample_rate)

    def _frames_crops(self, path: Path, source, u: sfc.UtteranceMembers, n_audio: int) -> tuple[dict, int]:
        cfg = self.cfg
        n_video = sfc.check_frames(
            sfc.UtteranceMembers(u.key, u.rgb, u.thermal, mic1="(not needed)"), str(path), cfg.frame_tolerance
        )
        n = min(n_video, n_audio)
        rgb_frames, thermal_frames = sfc.load_frames(source, str(path), u, n)
        where = f"{path}:{u.key.utt_id}"
        if "thermal" in self.modalities:
            check_palette(thermal_frames, cfg, where)
        rgb, thr, _ = mouth_crops(rgb_frames, thermal_frames, cfg, where)
        return self._tensors(rgb, thr), n

    def _video_crops(self, rgb: VideoInfo, thr: VideoInfo | None, n_audio: int) -> tuple[dict, int]:
        """Crops of the mouth from the videos, as :func:`tavse.vision.mouth_crops.mouth_crops` makes them from frames."""
        cfg = self.cfg
        if thr is not None and (thr.width, thr.height) != (rgb.width, rgb.height):
            raise EnhanceError(
                f"{thr.path}: thermal frames {thr.width}x{thr.height} but RGB frames {rgb.width}x{rgb.height} "
                f"({rgb.path}): the thermal video must be aligned to the RGB one, pixel for pixel"
            )
        n = min([n_audio, rgb.model_frames(cfg.fps)] + ([thr.model_frames(cfg.fps)] if thr else []))
        src = model_frame_sources(rgb.times, cfg.fps, n)
        if thr is not None:
            src_thr = model_frame_sources(thr.times, cfg.fps, n)
            # ingest's check on the first, middle and last frame (before the costly face tracking)
            check_palette(
                list(iter_frames(thr.path, sorted({src_thr[0], src_thr[n // 2], src_thr[-1]}))), cfg, str(thr.path)
            )
        track = self._track(rgb.path, src, n)
        s = cfg.roi_size
        rgb_crops = thr_crops = None
        if "rgb" in self.modalities:
            with contextlib.closing(iter_frames(rgb.path, src)) as frames:
                rgb_crops = np.stack([mouth_roi.crop(f, b, s) for f, b in zip(frames, track.boxes)])
        if thr is not None:
            with contextlib.closing(iter_frames(thr.path, src_thr)) as frames:
                thr_crops = np.stack(
                    [mouth_roi.crop(iron_to_temperature(f), b, s) for f, b in zip(frames, track.boxes)]
                )
        return self._tensors(rgb_crops, thr_crops), n

    def _track(self, path: Path, src: np.ndarray, n: int) -> mouth_roi.MouthTrack:
        """:func:`mouth_roi.track_mouth` over the model frames ``src`` of a video, without holding them all.

        FaceMesh runs in static mode (each frame detected from scratch), so detecting blocks of
        the frames it runs on gives the landmarks of one call on all frames.
        """
        cfg = self.cfg
        todo = sorted(set(range(0, n, cfg.landmark_stride)) | {n - 1})
        lips = np.full((n, len(mouth_roi.LIP_POINTS), 2), np.nan)
        ran = np.zeros(n, bool)
        with contextlib.closing(iter_frames(path, src[todo])) as frames:
            for i in range(0, len(todo), FACEMESH_BLOCK):
                block = todo[i : i + FACEMESH_BLOCK]
                lips[block], _ = mouth_roi.detect_lips(list(islice(frames, len(block))), stride=1, static=True)
                ran[block] = True
        try:
            track = mouth_roi.track_from_lips(lips, ran, cfg.box_scale, cfg.smooth_frames)
        except ValueError:
            raise BadInput(
                "no_face",
                str(path),
                "FaceMesh found no face in any frame (the speaker's face must be visible in the RGB video)",
            ) from None
        if track.detection_ratio < cfg.min_detection_ratio:
            raise BadInput(
                "no_face",
                str(path),
                f"face found in {track.detection_ratio:.0%} of the frames tracked "
                f"(< ingest.min_detection_ratio {cfg.min_detection_ratio:.0%})",
            )
        return track

    def _tensors(self, rgb: np.ndarray | None, thr: np.ndarray | None) -> dict[str, torch.Tensor]:
        out = {}
        if "rgb" in self.modalities:
            out["rgb"] = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
        if "thermal" in self.modalities:
            out["thermal"] = torch.from_numpy(thr).unsqueeze(1).float() / 255
        return out


# ---------------------------------------------------------------------- command line


def _line(r: dict) -> str:
    notes = f" ({'; '.join(r['notes'])})" if r["notes"] else ""
    return (
        f"{r['out']}: {r['name']}, {r['seconds']:.2f} s enhanced by {r['variant']}{notes}; "
        f"real-time factor {r['rtf']:.3f} ({r['rtf_model']:.3f} the model alone) on {r['device']}"
    )


def _warn_dropped(r: dict) -> None:
    if r["dropped_s"] > 1 / 28:
        print(
            f"warning: {r['name']}: the last {r['dropped_s']:.2f} s of audio have no video frames and were not enhanced",
            file=sys.stderr,
        )


def run_batch(enhancer: Enhancer, folder: Path, out_dir: Path) -> int:
    """Enhance every recording of ``folder`` into ``out_dir``; one line each, a summary; 1 if any failed."""
    if not folder.is_dir():
        raise EnhanceError(f"{folder}: --batch folder not found")
    if out_dir.resolve() == folder.resolve():
        raise EnhanceError(
            f"{out_dir}: --out-dir must differ from the --batch folder (outputs are NAME.wav, like inputs)"
        )
    recs, ignored = find_recordings(folder)
    for p in ignored:
        print(
            f"{p}: ignored (not a video {'/'.join(VIDEO_SUFFIXES)} or audio {'/'.join(AUDIO_SUFFIXES)} file)",
            file=sys.stderr,
        )
    if not recs:
        raise EnhanceError(f"{folder}: no recordings (video or audio files) to enhance")
    failed: list[str] = []
    seconds = processing = 0.0
    for rec in recs:
        try:
            r = enhancer(rec, out_dir / f"{rec.name}.wav")
        except FAILURES as exc:
            failed.append(rec.name)
            print(f"{rec.name}: FAILED: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a bad file must not stop the others; named and counted
            failed.append(rec.name)
            print(f"{rec.name}: FAILED ({type(exc).__name__}): {exc}", file=sys.stderr)
            continue
        seconds, processing = seconds + r["seconds"], processing + r["processing_s"]
        print(_line(r))
        _warn_dropped(r)
    rtf = f"real-time factor {processing / seconds:.3f}" if seconds else "nothing enhanced"
    print(
        f"batch {folder}: {len(recs) - len(failed)} of {len(recs)} recordings enhanced into {out_dir}, "
        f"{len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''}; {seconds:.2f} s of audio in "
        f"{processing:.2f} s, {rtf} (start-up once: {enhancer.load_s:.2f} s, not counted)"
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tavse.enhance", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, required=True, help="models/<variant>/best.pt")
    ap.add_argument(
        "--audio",
        "--noisy",
        type=Path,
        help="noisy audio (WAV/FLAC/..., any rate, or any file with an audio track); default: the video's own track",
    )
    ap.add_argument(
        "--video", type=Path, help="RGB video of the speaker (MP4/AVI/MOV/MKV/..., any size and frame rate)"
    )
    ap.add_argument("--thermal-video", type=Path, help="thermal video (FLIR Iron palette) aligned to --video")
    ap.add_argument("--frames", type=Path, help="zip or folder in the SpeakingFaces layout (instead of videos)")
    ap.add_argument("--utterance", help="utterance id in --frames, e.g. s121_t1_p1_c0005, if it holds several")
    ap.add_argument("--out", type=Path, help="enhanced WAV (16 kHz)")
    ap.add_argument("--batch", type=Path, help="folder of recordings (NAME.mp4, NAME.thermal.mp4, NAME.wav)")
    ap.add_argument("--out-dir", type=Path, help="with --batch: folder for the enhanced NAME.wav")
    ap.add_argument("--device", type=_device_arg, default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    args = ap.parse_args(argv)
    single = [
        f"--{k.replace('_', '-')}"
        for k in ("audio", "video", "thermal_video", "frames", "utterance", "out")
        if getattr(args, k) is not None
    ]
    if args.batch is not None:
        if single or args.out_dir is None:
            ap.error("--batch takes --out-dir and none of " + ", ".join(single or ["--audio/--video/--frames/--out"]))
    elif args.out is None or args.out_dir is not None:
        ap.error("give --out FILE (or --batch FOLDER --out-dir FOLDER)")
    try:
        enhancer = Enhancer(args.model, args.device)
        if args.batch is not None:
            assert args.out_dir is not None  # checked with --batch above
            return run_batch(enhancer, args.batch, args.out_dir)
        inputs = [p for p in (args.audio, args.video, args.thermal_video, args.frames) if p is not None]
        if any(args.out.resolve() == p.resolve() for p in inputs):
            raise EnhanceError(f"{args.out}: --out would overwrite an input")
        rec = Recording(
            (inputs[0].stem if inputs else args.out.stem),
            args.audio,
            args.video,
            args.thermal_video,
            args.frames,
            args.utterance,
        )
        r = enhancer(rec, args.out)
    except FAILURES as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_line(r) + f"; start-up (model, face tracker) {enhancer.load_s:.2f} s, not counted")
    _warn_dropped(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
