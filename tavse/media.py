"""A user's own video and audio files for ``tavse.enhance``, decoded with PyAV.

PyAV's wheel bundles FFmpeg's libraries, so every container and codec FFmpeg reads works (MP4,
AVI, MOV, MKV, WebM; H.264, MPEG-4, MJPEG, ...) with no system FFmpeg and also the audio
track of a video, which OpenCV cannot read.

A video is read twice or three times instead of held in memory (a minute of 1080p RGB is ~10 GB):
:func:`probe_video` decodes it once for the frame timestamps, :func:`iter_frames` decodes it
again and yields only the frames asked for. The model's frame grid (``fps``, 28 for
SpeakingFaces: frame f covers [f/fps, (f+1)/fps) s) is filled by :func:`model_frame_sources`,
the source frame nearest in time to each model frame, so any frame rate, constant or variable,
becomes the rate the model was trained at.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus")


class MediaError(Exception):
    """A file that cannot be used as a recording; the message names it and says what is wrong."""


class NoAudioTrack(MediaError):
    """A file without an audio stream."""


def _open(path: Path):
    import av  # imported here: only enhance needs it

    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable video or audio file ({exc})") from None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found: frame times and size of a file's first video stream."""

    path: Path
    times: np.ndarray  # (N,) presentation time of each frame in s, the first at 0, increasing
    width: int
    height: int
    start: float  # presentation time of the first frame in the file's clock (s), for the audio offset

    @property
    def rate(self) -> float:
        """Mean frames per second (NaN for a single frame)."""
        return 1 / self.frame_interval

    @property
    def frame_interval(self) -> float:
        # The mean, not the median: Matroska stores times in whole ms (a 28 fps median would read 36 ms).
        return float(self.times[-1] / (len(self.times) - 1)) if len(self.times) > 1 else float("nan")

    @property
    def duration(self) -> float:
        """From the first frame's start to the last one's end (one mean interval after it)."""
        step = self.frame_interval if len(self.times) > 1 else 0.0
        return float(self.times[-1] + step)

    def model_frames(self, fps: int) -> int:
        """Model frames (of 1/fps s) the video covers at least half of; at least 1 when it has a frame.

        Half, not whole: containers round timestamps (Matroska to whole ms), which may shorten
        the last frame of a 28 fps video by a hair.
        """
        return max(1, int(np.floor(self.duration * fps + 0.5)))


def probe_video(path: Path) -> VideoInfo:
    """Decode the first video stream of ``path`` once for its frame times and size.

    Frames without a timestamp (raw streams) are timed by the stream's average rate.
    Raises MediaError naming the file when it has no video stream, no decodable frame, or a
    frame fails to decode.
    """
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream (an audio file? give it with --audio)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        times: list[float] = []
        size = None
        try:
            for i, frame in enumerate(container.decode(stream)):
                if frame.time is not None:
                    times.append(float(frame.time))
                elif rate:
                    times.append(i / rate)
                else:
                    raise MediaError(f"{path}: frame {i} has no timestamp and the stream no frame rate")
                size = size or (frame.width, frame.height)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: video frame {len(times)} does not decode ({exc})") from None
    if not times:
        raise MediaError(f"{path}: the video stream holds no decodable frame")
    assert size is not None  # set with the first frame
    t = np.asarray(times, np.float64)
    if (np.diff(t) <= 0).any():  # decoders return presentation order; iter_frames counts frames in it
        i = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
        raise MediaError(
            f"{path}: frame {i} is not later than frame {i - 1} ({t[i]:.4f} s after {t[i - 1]:.4f} s; "
            "a broken or edited file: re-encode it, e.g. `ffmpeg -i IN -fps_mode cfr OUT.mp4`)"
        )
    return VideoInfo(path, t - t[0], size[0], size[1], float(t[0]))


def model_frame_sources(times: np.ndarray, fps: int, n: int) -> np.ndarray:
    """(n,) index of the source frame nearest in time to each model frame f (at f/fps s).

    A video at ``fps`` maps frame to frame; a faster one drops frames, a slower one repeats
    them; ties go to the earlier frame.
    """
    if len(times) == 1:
        return np.zeros(n, np.int64)
    t = np.arange(n) / fps
    right = np.clip(np.searchsorted(times, t), 1, len(times) - 1)
    left = right - 1
    # 1e-9 s: a tie written as float sums (5/28 between 2/14 and 3/14) still goes to the earlier frame
    return np.where(t - times[left] <= times[right] - t + 1e-9, left, right).astype(np.int64)


def iter_frames(path: Path, indices: Iterable[int]) -> Generator[np.ndarray, None, None]:
    """Decode ``path`` again and yield its frames ``indices`` (non-decreasing) as RGB uint8 (H, W, 3).

    Frames are counted in presentation order, as in :func:`probe_video`; a frame asked for
    twice is yielded twice (decoded once), frames not asked for are not converted.
    """
    import av

    want = iter(indices)
    nxt = next(want, None)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if nxt is None:
                    return
                if i < nxt:
                    continue
                img = frame.to_ndarray(format="rgb24")
                while nxt == i:
                    yield img
                    nxt = next(want, None)
                if nxt is not None and nxt < i:
                    raise ValueError(f"iter_frames: indices must not decrease ({nxt} after {i})")
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: video frame does not decode ({exc})") from None
    if nxt is not None:
        raise MediaError(f"{path}: frame {nxt} missing on the second read (was the file changed meanwhile?)")


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples of a file, with where they came from."""

    samples: np.ndarray
    sample_rate: int
    channels: int  # of the source (averaged to mono when more than one)
    start: float | None  # the first sample's time in the file's clock (s); None for sound files


def read_audio(path: Path) -> Audio:
    """The audio of ``path``: a sound file (WAV, FLAC, OGG through libsndfile), else the first audio
    stream of anything FFmpeg reads (a video's own track, M4A, MP3). Several channels are averaged.

    Raises NoAudioTrack when the file is a video without audio, MediaError (naming the file) when
    it is unreadable, empty or holds non-finite samples.
    """
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        start = None
    except sf.LibsndfileError:
        x, sr, start = _decode_audio_track(path)
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc})") from None
    if x.shape[0] == 0:
        raise MediaError(f"{path}: the audio holds no samples")
    if not np.isfinite(x).all():
        raise MediaError(f"{path}: the audio holds NaN or infinite samples")
    mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    return Audio(np.ascontiguousarray(mono, np.float32), int(sr), int(x.shape[1]), start)


def _decode_audio_track(path: Path) -> tuple[np.ndarray, int, float | None]:
    import av

    with _open(path) as container:
        if not container.streams.audio:
            raise NoAudioTrack(f"{path}: no audio track")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # planar float; keeps the layout and rate
        chunks, start, sr = [], None, None
        try:
            for frame in container.decode(stream):
                if start is None and frame.time is not None:
                    start = float(frame.time)
                sr = frame.sample_rate
                chunks += [f.to_ndarray() for f in to_float.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: the audio track does not decode ({exc})") from None
    if not chunks:
        raise MediaError(f"{path}: the audio track holds no samples")
    assert sr is not None  # samples come from decoded frames, each of which set it
    return np.concatenate(chunks, axis=1).T, int(sr), start
