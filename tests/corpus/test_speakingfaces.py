"""The SpeakingFaces archive reader: member parsing, pairing, and every bad-input case."""

import zipfile

import numpy as np
import pytest

from tavse.common.io import is_unsafe_member
from tavse.corpus import speakingfaces as sfc
from tavse.corpus.errors import BadInput
from tests.sfzip import blank_utt, png, wav, write_archive


def _open(path, speaker=3):
    zf = zipfile.ZipFile(path)
    utts, ignored = sfc.index_archive(zf, str(path), speaker)
    return zf, utts, ignored


def test_members_grouped_and_sorted_numerically_whatever_the_prefix(tmp_path):
    for prefix in ("sub_3_ia/", "", "some/deeper/root/"):
        path = write_archive(
            tmp_path / "sub_3_ia.zip", 3, [blank_utt(12, command=40), blank_utt(5, trial=2, command=9)], prefix=prefix
        )
        zf, utts, ignored = _open(path)
        assert [u.key for u in utts] == [sfc.UtteranceKey(3, 1, 1, 40), sfc.UtteranceKey(3, 2, 1, 9)]
        assert sorted(utts[0].rgb) == list(range(1, 13))  # 10, 11, 12 after 9, not after 1
        utt = sfc.load_utterance(zf, str(path), utts[0], tolerance=1)
        assert len(utt.rgb) == len(utt.thermal) == 12
        assert utt.rgb[9][0, 0, 0] == 90 + 9  # frame 10 is the tenth frame
        assert len(utt.audio) == 12 * 1575 and ignored == {}


def test_zip_slip_and_foreign_members_are_ignored_and_counted(tmp_path):
    good = blank_utt(4)
    extra = {
        "../../etc/trial_1/rgb_image_cmd_aligned/3_1_2_1_7_5_3.png": png(good.rgb[0]),
        "/abs/trial_1/thr_image_cmd/3_1_2_1_7_5_1.png": png(good.rgb[0]),
        "sub_3_ia/trial_1/rgb_image_cmd_aligned/4_1_2_1_7_1_3.png": png(good.rgb[0]),
        "sub_3_ia/readme.txt": b"hello",
    }
    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [good], extra=extra)
    zf, utts, ignored = _open(path)
    assert ignored == {"unsafe_member_name": 2, "other_speaker_member": 1, "unrecognised_member": 1}
    assert len(utts) == 1 and sorted(utts[0].rgb) == [1, 2, 3, 4]
    assert is_unsafe_member("a/../b") and is_unsafe_member("C:/x") and not is_unsafe_member("a/b..c")


def _load_error(tmp_path, utt, tolerance=1) -> BadInput:
    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [utt])
    zf, utts, _ = _open(path)
    with pytest.raises(BadInput) as err:
        sfc.load_utterance(zf, str(path), utts[0], tolerance)
    assert str(path) in str(err.value)  # the message names the file
    return err.value


def test_missing_audio(tmp_path):
    assert _load_error(tmp_path, blank_utt(4, audio=None)).reason == "missing_audio"


def test_empty_wav(tmp_path):
    e = _load_error(tmp_path, blank_utt(4, audio=wav(np.zeros(0, np.float32))))
    assert e.reason == "empty_audio" and e.path.endswith("_1.wav")


def test_nan_wav(tmp_path):
    x = np.zeros(4 * 1575, np.float32)
    x[100] = np.nan
    assert _load_error(tmp_path, blank_utt(4, audio=wav(x, subtype="FLOAT"))).reason == "nan_audio"


def test_stereo_wav(tmp_path):
    assert _load_error(tmp_path, blank_utt(4, audio=wav(np.zeros((4 * 1575, 2), np.float32)))).reason == "stereo_audio"


def test_wrong_rate_wav(tmp_path):
    e = _load_error(tmp_path, blank_utt(4, audio=wav(np.zeros(4 * 572, np.float32), sr=16000)))
    assert e.reason == "wrong_sample_rate" and "16000" in e.message


def test_garbage_wav(tmp_path):
    assert _load_error(tmp_path, blank_utt(4, audio=b"RIFF....garbage")).reason == "unreadable_audio"


def test_audio_much_shorter_than_video(tmp_path):
    e = _load_error(tmp_path, blank_utt(10, audio=wav(np.zeros(3 * 1575, np.float32))))
    assert e.reason == "audio_frame_mismatch"


def test_rgb_thermal_frame_count_mismatch(tmp_path):
    u = blank_utt(8)
    u.thermal = u.thermal[:5]
    e = _load_error(tmp_path, u)
    assert e.reason == "frame_count_mismatch" and "8 aligned RGB frames vs 5 thermal" in e.message


def test_small_count_difference_within_tolerance_is_trimmed(tmp_path):
    u = blank_utt(8)
    u.thermal = u.thermal[:7]
    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [u])
    zf, utts, _ = _open(path)
    assert len(sfc.load_utterance(zf, str(path), utts[0], tolerance=1).rgb) == 7


def test_gap_in_frame_indices(tmp_path):
    u = blank_utt(6)
    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [u])
    zf, utts, _ = _open(path)
    del utts[0].rgb[3]
    with pytest.raises(BadInput) as err:
        sfc.load_utterance(zf, str(path), utts[0], 1)
    assert err.value.reason == "missing_frames" and "[3]" in err.value.message


def test_unreadable_png(tmp_path):
    u = blank_utt(4, rgb_bytes={2: b"\x89PNG\r\n\x1a\nbroken"})
    e = _load_error(tmp_path, u)
    assert e.reason == "unreadable_image" and e.path.endswith("_2_3.png")


def test_corrupt_member_bytes(tmp_path):
    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [blank_utt(4)])
    data = bytearray(path.read_bytes())
    i = data.find(b"IDAT")  # inside the first stored PNG: its CRC in the zip no longer matches
    data[i + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    zf, utts, _ = _open(path)
    with pytest.raises(BadInput) as err:
        sfc.load_utterance(zf, str(path), utts[0], 1)
    assert err.value.reason == "corrupt_member" and "_1_3.png" in err.value.path


def test_archive_name_and_discovery(tmp_path):
    for sid in (12, 3, 101):
        write_archive(tmp_path / f"sub_{sid}_ia.zip", sid, [blank_utt(2)])
    (tmp_path / "notes.zip").write_bytes(b"")
    assert [p.name for p in sfc.find_archives(tmp_path)] == ["sub_3_ia.zip", "sub_12_ia.zip", "sub_101_ia.zip"]
    with pytest.raises(BadInput):
        sfc.speaker_id_of(tmp_path / "notes.zip")
    with pytest.raises(FileNotFoundError, match="not found"):
        sfc.find_archives(tmp_path / "absent")


def test_fingerprint_changes_with_content(tmp_path):
    a = write_archive(tmp_path / "a.zip", 3, [blank_utt(3)])
    b = write_archive(tmp_path / "b.zip", 3, [blank_utt(3, command=8)])
    fa = sfc.archive_fingerprint(zipfile.ZipFile(a))
    assert fa == sfc.archive_fingerprint(zipfile.ZipFile(a)) != sfc.archive_fingerprint(zipfile.ZipFile(b))


@pytest.mark.parametrize(
    ("method", "encrypted", "reason", "message"),
    [
        (9, False, "unsupported_compression", "That compression method is not supported"),  # Deflate64
        (None, True, "encrypted_member", "is encrypted, password required"),
    ],
)
def test_unreadable_zip_members_are_named_bad_input(tmp_path, method, encrypted, reason, message):
    from concurrent.futures import ThreadPoolExecutor

    from tests.pipeline.test_ingest_failures import member, patch_member

    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [blank_utt(4)])
    name = member(path, "thr_image_cmd")
    patch_member(path, name, method=method, encrypted=encrypted)
    zf, utts, _ = _open(path)
    for pool in (None, ThreadPoolExecutor(2)):  # serial and threaded decoding raise the same
        with pytest.raises(BadInput, match=rf"{name}: cannot read member: .*{message}") as exc:
            sfc.load_utterance(zf, str(path), utts[0], tolerance=1, pool=pool)
        assert exc.value.reason == reason and exc.value.path == f"{path}:{name}"


def test_threaded_decoding_gives_the_same_frames(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = write_archive(tmp_path / "sub_3_ia.zip", 3, [blank_utt(9)])
    zf, utts, _ = _open(path)
    serial = sfc.load_utterance(zf, str(path), utts[0], tolerance=1)
    with ThreadPoolExecutor(3) as pool:
        threaded = sfc.load_utterance(zf, str(path), utts[0], tolerance=1, pool=pool)
    assert all(np.array_equal(a, b) for a, b in zip(serial.rgb + serial.thermal, threaded.rgb + threaded.thermal))
    assert len(threaded.rgb) == 9 and np.array_equal(serial.audio, threaded.audio)


def test_bad_input_survives_pickling():
    import pickle

    exc = pickle.loads(pickle.dumps(BadInput("no_face", "a.zip:s001", "FaceMesh found no face")))
    assert (exc.reason, exc.path, exc.message) == ("no_face", "a.zip:s001", "FaceMesh found no face")
    assert str(exc) == "a.zip:s001: FaceMesh found no face [no_face]"


def test_png_decoders_agree_pixel_for_pixel():
    """The optional libspng path and OpenCV give the same RGB pixels; other PNG kinds go through OpenCV."""
    import cv2

    from tests.shared_fixtures import real_image

    rng = np.random.default_rng(0)
    frames = {"rgb": rng.integers(0, 256, (348, 464, 3), np.uint8), "real": real_image("aligned_session_one.png")}
    for name, img in frames.items():
        data = png(img)
        assert sfc._is_plain_rgb8(data), name
        assert np.array_equal(sfc.decode_png(data, name), img), name
    ok, grey = cv2.imencode(".png", frames["rgb"][..., 0])
    assert not sfc._is_plain_rgb8(grey.tobytes())
    assert np.array_equal(sfc.decode_png(grey.tobytes(), "grey"), np.repeat(frames["rgb"][..., :1], 3, axis=2))
    with pytest.raises(BadInput, match="not a readable PNG image"):
        sfc.decode_png(png(frames["rgb"])[:200], "cut")
