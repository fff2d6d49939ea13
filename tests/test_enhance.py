"""``python -m tavse.enhance`` on a user's own recording: videos written from the embedded corpus and
from the real fixture frame, audio alone, a batch folder, and the errors a user meets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import zipfile
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from tavse.common.audio import resample
from tavse.common.config import ModelConfig, VariantConfig, section_from_dict
from tavse.corpus import speakingfaces as sfc
from tavse.enhance import Enhancer, Recording, find_recordings, main
from tavse.media import model_frame_sources, probe_video, read_audio
from tavse.models.tavse import TAVSE
from tavse.vision.mouth_crops import mouth_crops
from tests.conftest import ROOT, TRAINED_VARIANT
from tests.sfreal import real_panels, write_real_layout_archive
from tests.sfzip import wav

FPS = 28


# --------------------------------------------------------------------------- writing recordings


def write_mp4v(path: Path, frames: list[np.ndarray], fps: float, size: tuple[int, int] | None = None) -> Path:
    """An MPEG-4 video without audio, as OpenCV writes it (``mp4v``), frames resized to ``size`` (w, h)."""
    h, w = frames[0].shape[:2]
    size = size or (w, h)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert vw.isOpened()
    for f in frames:
        vw.write(
            cv2.cvtColor(
                cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) if size != (w, h) else f, cv2.COLOR_RGB2BGR
            )
        )
    vw.release()
    return path


def write_av(
    path: Path,
    frames: list[np.ndarray],
    fps: int,
    codec: str = "ffv1",
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
) -> Path:
    """A video through FFmpeg (PyAV): ``ffv1`` is lossless RGB (in .mkv); ``audio`` (mono float) adds an AAC track."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "bgr0" if codec == "ffv1" else "yuv420p"
        a = c.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None else None
        for f in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(v.encode())
        if a is not None:
            for s in range(0, len(audio), 1024):
                fr = av.AudioFrame.from_ndarray(
                    audio[None, s : s + 1024].astype(np.float32), format="flt", layout="mono"
                )
                fr.sample_rate, fr.pts = sample_rate, s
                c.mux(a.encode(fr))
            c.mux(a.encode())
    return path


def write_wav(path: Path, samples: np.ndarray, sr: int = 44100) -> Path:
    path.write_bytes(wav(samples, sr))
    return path


def corpus_utterance(cfg) -> sfc.Utterance:
    """The first utterance of the tiny embedded corpus's test speaker, decoded (frames at 28 fps, 44.1 kHz audio)."""
    archive = Path(cfg.data.speakingfaces_dir) / "sub_121_ia.zip"
    with zipfile.ZipFile(archive) as zf:
        utts, _ = sfc.index_archive(zf, str(archive), 121)
        return sfc.load_utterance(zf, str(archive), utts[0], cfg.ingest.frame_tolerance)


def variant_checkpoint(trained: Path, modalities: list[str], out: Path) -> Path:
    """A checkpoint of another variant in the trained one's format and recipe, with fresh (untrained) weights."""
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    variant = VariantConfig(list(modalities), (ckpt["config"]["variant"]["fusion"] or "film") if modalities else None)
    model = TAVSE(section_from_dict(ModelConfig, ckpt["config"]["model"], "model"), variant, ckpt["roi_size"])
    name = "audio_" + ("_".join(modalities) or "only")
    ckpt.update(
        state_dict=model.state_dict(),
        modalities=list(modalities),
        variant=name,
        config={**ckpt["config"], "variant": dataclasses.asdict(variant)},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="module")
def models(tiny_trained, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("variants")
    trained = tiny_trained / "models" / TRAINED_VARIANT / "best.pt"
    return {
        TRAINED_VARIANT: trained,
        "audio_rgb": variant_checkpoint(trained, ["rgb"], d / "audio_rgb" / "best.pt"),
        "audio_only": variant_checkpoint(trained, [], d / "audio_only" / "best.pt"),
    }


@pytest.fixture(scope="module")
def utt(tiny_data) -> sfc.Utterance:
    return corpus_utterance(tiny_data)


def enhance_cli(capsys, *args: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def expected_samples(n_video_frames: int, n_audio: int, sr_in: int) -> int:
    """Samples enhanced: the model frames both the video and the (16 kHz) audio cover."""
    n16 = len(resample(np.zeros(n_audio, np.float32), sr_in, 16000))
    return round(min(n_video_frames, int(n16 * FPS / 16000)) * 16000 / FPS)


# --------------------------------------------------------------------------- frame timing


def test_model_frame_sources_resample_in_time_to_the_model_rate() -> None:
    t28 = np.arange(10) / 28
    assert model_frame_sources(t28, 28, 10).tolist() == list(range(10))
    # 56 fps: every second frame; 14 fps: each frame twice; 30 fps: the nearest in time
    assert model_frame_sources(np.arange(20) / 56, 28, 10).tolist() == list(range(0, 20, 2))
    assert model_frame_sources(np.arange(5) / 14, 28, 10).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    t30 = np.arange(30) / 30
    src = model_frame_sources(t30, 28, 28)
    assert np.abs(t30[src] - np.arange(28) / 28).max() <= 0.5 / 30 + 1e-12
    # variable frame rate (jittered timestamps): still the nearest frame
    rng = np.random.default_rng(0)
    tv = np.cumsum(rng.uniform(0.02, 0.05, 60)) - 0.02
    tv -= tv[0]
    src = model_frame_sources(tv, 28, 40)
    assert all(np.abs(tv[s] - f / 28) == np.abs(tv - f / 28).min() for f, s in enumerate(src))


def test_probe_reads_frame_times_size_and_rate(tmp_path, utt) -> None:
    info = probe_video(write_mp4v(tmp_path / "v.mp4", utt.rgb[:20], 30, (640, 480)))
    assert (info.width, info.height) == (640, 480) and len(info.times) == 20
    assert info.rate == pytest.approx(30, rel=1e-3) and info.model_frames(28) == round(20 / 30 * 28)


# --------------------------------------------------------------------------- the video path is ingest's crop path


def test_video_crops_equal_ingest_crops_and_enhance_like_the_frames(tmp_path, tiny_data, models, utt) -> None:
    """Lossless videos of the corpus frames give the crops tavse.vision.mouth_crops.mouth_crops makes from the PNG
    frames, byte for byte (28 fps), and the same enhanced WAV as the SpeakingFaces frames (56 fps,
    each frame twice: resampled in time to 28 fps)."""
    enh = Enhancer(models[TRAINED_VARIANT], "cpu")
    n = 40  # of the utterance's frames (and its audio: the frames path then reads these frames only)
    rgb_frames, thr_frames = utt.rgb[:n], utt.thermal[:n]
    rgb_ref, thr_ref, _ = mouth_crops(rgb_frames, thr_frames, enh.cfg, "frames")
    rgb = write_av(tmp_path / "rgb28.mkv", rgb_frames, 28)
    thr = write_av(tmp_path / "thr28.mkv", thr_frames, 28)
    visual, m = enh._video_crops(probe_video(rgb), probe_video(thr), n)
    assert m == n
    assert torch.equal(visual["rgb"], torch.from_numpy(rgb_ref).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(visual["thermal"], torch.from_numpy(thr_ref).unsqueeze(1).float() / 255)

    noisy = write_wav(tmp_path / "noisy.wav", utt.audio[: n * 44100 // 28])
    archive = Path(tiny_data.data.speakingfaces_dir) / "sub_121_ia.zip"
    by_frames = enh(Recording("f", noisy, frames=archive, utterance=utt.key.utt_id), tmp_path / "frames.wav")
    rgb = write_av(tmp_path / "rgb56.mkv", [f for f in rgb_frames for _ in range(2)], 56)
    thr = write_av(tmp_path / "thr56.mkv", [f for f in thr_frames for _ in range(2)], 56)
    r = enh(Recording("v", noisy, rgb, thr), tmp_path / "video.wav")
    assert r["frames"] == by_frames["frames"] == n
    assert any("fps resampled to 28 fps" in note for note in r["notes"])  # 55.99: Matroska times in whole ms
    assert (tmp_path / "video.wav").read_bytes() == (tmp_path / "frames.wav").read_bytes()


# --------------------------------------------------------------------------- a user's MP4 + WAV, the real CLI


def test_mp4_rgb_and_thermal_with_a_wav_through_the_command_line(tmp_path, models, utt) -> None:
    """MPEG-4 videos as OpenCV writes them, at 30 fps and 640x480 (not the corpus's 28 fps, 464x348)."""
    rgb = write_mp4v(tmp_path / "me.mp4", utt.rgb, 30, (640, 480))
    thr = write_mp4v(tmp_path / "me_thermal.mp4", utt.thermal, 30, (640, 480))
    noisy = write_wav(tmp_path / "me.wav", utt.audio)
    out = tmp_path / "enhanced.wav"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "tavse.enhance",
            "--model",
            str(models[TRAINED_VARIANT]),
            "--video",
            str(rgb),
            "--thermal-video",
            str(thr),
            "--audio",
            str(noisy),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "real-time factor" in res.stdout and "video at 30.00 fps resampled to 28 fps, 640x480" in res.stdout
    x, sr = sf.read(out)
    n_video = int(np.floor(len(utt.rgb) / 30 * 28 + 0.5))
    assert sr == 16000 and len(x) == expected_samples(n_video, len(utt.audio), 44100) and np.isfinite(x).all()
    assert np.abs(x).max() > 1e-3


def test_mp4_rgb_with_a_wav_for_audio_rgb(tmp_path, models, utt, capsys) -> None:
    rgb = write_mp4v(tmp_path / "me.mp4", utt.rgb, 28)
    noisy = write_wav(tmp_path / "me.wav", utt.audio, 44100)
    rc, out, err = enhance_cli(
        capsys, "--model", models["audio_rgb"], "--video", rgb, "--audio", noisy, "--out", tmp_path / "e.wav"
    )
    assert rc == 0, err
    assert "by audio_rgb" in out and "as recorded" in out and "real-time factor" in out
    assert sf.info(tmp_path / "e.wav").frames == expected_samples(len(utt.rgb), len(utt.audio), 44100)


def test_audio_from_the_videos_own_track_and_a_video_without_one(tmp_path, models, utt, capsys) -> None:
    rgb = write_av(tmp_path / "talk.mp4", utt.rgb, 28, codec="libx264", audio=utt.audio, sample_rate=44100)
    thr = write_mp4v(tmp_path / "talk_thermal.mp4", utt.thermal, 28)
    assert read_audio(rgb).sample_rate == 44100
    rc, out, err = enhance_cli(
        capsys, "--model", models[TRAINED_VARIANT], "--video", rgb, "--thermal-video", thr, "--out", tmp_path / "e.wav"
    )
    assert rc == 0, err
    assert sf.info(tmp_path / "e.wav").frames == expected_samples(len(utt.rgb), len(utt.audio), 44100)
    silent = write_mp4v(tmp_path / "silent.mp4", utt.rgb, 28)
    rc, out, err = enhance_cli(capsys, "--model", models["audio_rgb"], "--video", silent, "--out", tmp_path / "x.wav")
    assert rc == 1 and f"{silent}: the video has no audio track; give the recording's audio with --audio" in err
    assert not (tmp_path / "x.wav").exists()


# --------------------------------------------------------------------------- audio alone


def test_audio_only_needs_no_frames(tmp_path, models, utt, capsys) -> None:
    """A stereo 48 kHz WAV: resampled to 16 kHz, channels averaged, no video anywhere."""
    x44 = sf.read(write_wav(tmp_path / "a.wav", utt.audio))[0]
    stereo = np.stack([x44, 0.5 * x44], axis=1)
    noisy = tmp_path / "noisy48k.wav"
    sf.write(noisy, np.stack([resample(stereo[:, c], 44100, 48000) for c in range(2)], axis=1), 48000)
    n_in = sf.info(noisy).frames
    rc, out, err = enhance_cli(capsys, "--model", models["audio_only"], "--audio", noisy, "--out", tmp_path / "e.wav")
    assert rc == 0, err
    assert "by audio_only" in out and "2 audio channels averaged" in out and "real-time factor" in out
    x, sr = sf.read(tmp_path / "e.wav")
    assert sr == 16000 and len(x) == n_in // 3 and np.isfinite(x).all()  # the whole audio: no frame grid to fit


# --------------------------------------------------------------------------- the real SpeakingFaces fixture frame


def test_real_fixture_frames_as_an_archive_and_as_videos(tmp_path, models, capsys) -> None:
    archive = write_real_layout_archive(tmp_path / "sub_7_ia.zip", frames=12, utterances=((1, 1, 40, None),))
    rc, out, err = enhance_cli(
        capsys, "--model", models[TRAINED_VARIANT], "--frames", archive, "--out", tmp_path / "e_frames.wav"
    )
    assert rc == 0, err
    assert "12 frames of s007_t1_p1_c0040" in out and "audio: 7_1_2_1_40_1.wav" in out
    assert sf.info(tmp_path / "e_frames.wav").frames == round(12 * 16000 / 28)
    rgb, thr = real_panels()
    moving_rgb = [np.roll(rgb, f, axis=1) for f in range(28)]
    moving_thr = [np.roll(thr, f, axis=1) for f in range(28)]
    v = write_mp4v(tmp_path / "real.mp4", moving_rgb, 25)
    t = write_mp4v(tmp_path / "real.thermal.mp4", moving_thr, 25)
    a = write_wav(tmp_path / "real.wav", 0.1 * np.sin(2 * np.pi * 220 * np.arange(44100) / 44100), 44100)
    rc, out, err = enhance_cli(
        capsys,
        "--model",
        models[TRAINED_VARIANT],
        "--video",
        v,
        "--thermal-video",
        t,
        "--audio",
        a,
        "--out",
        tmp_path / "e_video.wav",
    )
    assert rc == 0, err
    assert "video at 25.00 fps resampled to 28 fps, 464x348" in out
    assert sf.info(tmp_path / "e_video.wav").frames == expected_samples(31, 44100, 44100)


# --------------------------------------------------------------------------- a folder of recordings


def test_batch_folder_goes_on_past_a_bad_file_and_exits_non_zero(tmp_path, models, utt, capsys) -> None:
    rec = tmp_path / "recordings"
    rec.mkdir()
    write_mp4v(rec / "alice.mp4", utt.rgb, 28)
    write_mp4v(rec / "alice.thermal.mp4", utt.thermal, 28)
    write_wav(rec / "alice.wav", utt.audio)
    write_av(rec / "bob.mp4", utt.rgb, 30, codec="libx264", audio=utt.audio)
    write_mp4v(rec / "bob.thermal.mp4", utt.thermal, 30)
    (rec / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    write_mp4v(rec / "broken.thermal.mp4", utt.thermal, 28)
    write_wav(rec / "speech_only.wav", utt.audio)
    (rec / "notes.txt").write_text("not a recording")
    found, ignored = find_recordings(rec)
    assert [r.name for r in found] == ["alice", "bob", "broken", "speech_only"] and ignored == [rec / "notes.txt"]
    assert found[0].thermal_video == rec / "alice.thermal.mp4" and found[0].audio == rec / "alice.wav"
    out = tmp_path / "enhanced"
    rc, stdout, err = enhance_cli(capsys, "--model", models[TRAINED_VARIANT], "--batch", rec, "--out-dir", out)
    assert rc == 1
    lines = stdout.strip().splitlines()
    assert lines[0].startswith(f"{out / 'alice.wav'}: alice,") and "real-time factor" in lines[0]
    assert lines[1].startswith(f"{out / 'bob.wav'}: bob,") and "video at 30.00 fps resampled" in lines[1]
    assert "2 of 4 recordings enhanced" in lines[-1] and "2 failed (broken, speech_only)" in lines[-1]
    assert "real-time factor" in lines[-1]
    assert f"broken: FAILED: {rec / 'broken.mp4'}: not a readable video or audio file" in err
    assert "speech_only: FAILED:" in err and "needs the rgb and thermal video" in err
    assert f"{rec / 'notes.txt'}: ignored" in err
    assert sorted(p.name for p in out.iterdir()) == ["alice.wav", "bob.wav"]
    # audio_only enhances the audio-only recording and the videos' audio (alice: its WAV; bob: its own track)
    rc, stdout, err = enhance_cli(capsys, "--model", models["audio_only"], "--batch", rec, "--out-dir", tmp_path / "ao")
    assert rc == 1 and "3 of 4 recordings enhanced" in stdout and "1 failed (broken)" in stdout


# --------------------------------------------------------------------------- clear errors


def test_a_visual_variant_without_video_says_what_it_needs(tmp_path, models, utt, capsys) -> None:
    noisy = write_wav(tmp_path / "n.wav", utt.audio)
    rc, _, err = enhance_cli(capsys, "--model", models[TRAINED_VARIANT], "--audio", noisy, "--out", tmp_path / "e.wav")
    assert rc == 1 and f"{noisy}: the model" in err and "needs the rgb and thermal video" in err
    assert "only an audio_only model enhances audio alone" in err
    rgb = write_mp4v(tmp_path / "v.mp4", utt.rgb, 28)
    rc, _, err = enhance_cli(
        capsys, "--model", models[TRAINED_VARIANT], "--video", rgb, "--audio", noisy, "--out", tmp_path / "e.wav"
    )
    assert rc == 1 and f"{rgb}: the model" in err and "needs the thermal video too" in err


def test_no_face_wrong_palette_and_unreadable_video_fail_naming_the_file(tmp_path, models, utt, capsys) -> None:
    noisy = write_wav(tmp_path / "n.wav", utt.audio)
    rng = np.random.default_rng(0)
    blank = write_mp4v(tmp_path / "wall.mp4", [rng.integers(0, 255, utt.rgb[0].shape, np.uint8)] * 20, 28)
    rc, _, err = enhance_cli(
        capsys, "--model", models["audio_rgb"], "--video", blank, "--audio", noisy, "--out", tmp_path / "e.wav"
    )
    assert rc == 1 and f"{blank}: FaceMesh found no face in any frame" in err and "[no_face]" in err
    grey = [np.repeat(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2) for f in utt.thermal]
    rgb = write_mp4v(tmp_path / "v.mp4", utt.rgb, 28)
    thr = write_mp4v(tmp_path / "grey.thermal.mp4", grey, 28)
    rc, _, err = enhance_cli(
        capsys,
        "--model",
        models[TRAINED_VARIANT],
        "--video",
        rgb,
        "--thermal-video",
        thr,
        "--audio",
        noisy,
        "--out",
        tmp_path / "e.wav",
    )
    assert rc == 1 and f"{thr}: thermal frames are not FLIR Iron pseudo-colour" in err
    small = write_mp4v(tmp_path / "small.thermal.mp4", utt.thermal, 28, (320, 240))
    rc, _, err = enhance_cli(
        capsys,
        "--model",
        models[TRAINED_VARIANT],
        "--video",
        rgb,
        "--thermal-video",
        small,
        "--audio",
        noisy,
        "--out",
        tmp_path / "e.wav",
    )
    assert rc == 1 and f"{small}: thermal frames 320x240 but RGB frames 464x348" in err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    rc, _, err = enhance_cli(
        capsys, "--model", models["audio_rgb"], "--video", junk, "--audio", noisy, "--out", tmp_path / "e.wav"
    )
    assert rc == 1 and f"{junk}: not a readable video or audio file" in err
    rc, _, err = enhance_cli(
        capsys, "--model", models["audio_only"], "--audio", tmp_path / "absent.wav", "--out", tmp_path / "e.wav"
    )
    assert rc == 1 and f"{tmp_path / 'absent.wav'}: file not found" in err
    assert not (tmp_path / "e.wav").exists()


def test_device_choice(tmp_path, models, utt, capsys) -> None:
    noisy = write_wav(tmp_path / "n.wav", utt.audio)
    rc, out, err = enhance_cli(
        capsys, "--model", models["audio_only"], "--audio", noisy, "--out", tmp_path / "a.wav", "--device", "auto"
    )
    assert rc == 0, err
    assert f"on {'cuda' if torch.cuda.is_available() else 'cpu'}" in out
    rc, out, err = enhance_cli(
        capsys, "--model", models["audio_only"], "--audio", noisy, "--out", tmp_path / "c.wav", "--device", "cuda"
    )
    if torch.cuda.is_available():
        assert rc == 0 and "on cuda" in out
        a, c = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "c.wav")[0]
        assert np.abs(a - c).max() < 1e-3
    else:
        assert rc == 1 and "--device cuda: no CUDA device available" in err
    with pytest.raises(SystemExit):
        main(["--model", str(models["audio_only"]), "--audio", str(noisy), "--out", "x.wav", "--device", "gpu"])
    assert "expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err
