"""Ingest throughput per worker, by phase, against a per-frame static-image FaceMesh baseline.

    python -m bench.ingest [--utterances 12]

Reads the archives of ``data.speakingfaces_dir`` (run ``dvc repro synth_corpus`` first). One
process = one worker. For each utterance it times: decode (zip read + PNG decode + WAV),
landmarks (FaceMesh detection on every ``ingest.landmark_stride``-th frame + box track, as ingest,
one FaceMesh kept open), crop+encode (RGB crop, thermal crop with the Iron inversion of the pixels
it reads, 16 kHz resampling, packing), write (LMDB). The baseline (the same run, the same frames)
makes a FaceMesh per command that detects every frame in static-image mode, inverts the Iron
palette of whole thermal frames before cropping, and decodes serially with OpenCV: the naive
approach, kept as it is.

"ours" is then measured as ingest runs it (:func:`tavse.ingest_shards.ingest_speaker`): the same
utterances again, the next one read and PNG-decoded (libspng when ``pyspng`` is installed, else
OpenCV) by ``tavse.ingest_shards.DECODE_THREADS`` threads while ``tavse.ingest_shards.landmark_threads(1)``
FaceMesh threads (:class:`tavse.vision.mouth_roi.LipDetector`) detect the current one, plus the
Iron-palette check, wall time end to end (its CPU time per frame is reported too: the threads use
a second core). ``serial_*`` are ours without threads (the phases timed one after another in the
first pass).
The mouth-centre error is the distance, in frame pixels, between the centre of the crop box ingest
uses (smoothed, then snapped to whole pixels) and the baseline's smoothed (unsnapped) box centre;
``track_centre_error_px`` is the same before snapping.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import config, save
from tavse import ingest_shards as ingest
from tavse.common.audio import resample
from tavse.corpus import speakingfaces as sfc
from tavse.corpus import store
from tavse.vision import mouth_roi
from tavse.vision.mouth_crops import check_palette
from tavse.vision.thermal_palette import iron_to_temperature


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=12)
    args = ap.parse_args()
    cfg = config()
    ic = cfg.ingest
    archives = sfc.find_archives(cfg.data.speakingfaces_dir)
    t = {
        "decode": 0.0,
        "landmarks": 0.0,
        "crop_encode": 0.0,
        "write": 0.0,
        "baseline_landmarks": 0.0,
        "baseline_crop_encode": 0.0,
    }
    frames, errors, track_errors = 0, [], []
    picked: dict[Path, list] = {}  # archive -> the utterances measured
    base_centres: list[np.ndarray] = []
    mouth_roi.detect_lips([np.zeros((348, 464, 3), np.uint8)], static=True)  # load the models outside the timings
    # The first pass (baseline and the serial breakdown) decodes as ingest did before: OpenCV, serially.
    spng, sfc._spng = sfc._spng, None
    with tempfile.TemporaryDirectory() as tmp, mouth_roi.LipDetector(1) as detector:
        writer = store.GrowingWriter(Path(tmp) / "db")
        done = 0
        for archive in archives:
            with zipfile.ZipFile(archive) as zf:
                utts, _ = sfc.index_archive(zf, str(archive), sfc.speaker_id_of(archive))
                for u in utts:
                    if done == args.utterances:
                        break
                    t0 = time.perf_counter()
                    utt = sfc.load_utterance(zf, str(archive), u, ic.frame_tolerance)
                    t1 = time.perf_counter()
                    track = mouth_roi.track_mouth(utt.rgb, ic.landmark_stride, ic.box_scale, ic.smooth_frames, detector)
                    t2 = time.perf_counter()
                    rgb = np.stack([mouth_roi.crop(f, b, ic.roi_size) for f, b in zip(utt.rgb, track.boxes)])
                    thr = np.stack(
                        [
                            mouth_roi.crop(f, b, ic.roi_size, pixel_map=iron_to_temperature)
                            for f, b in zip(utt.thermal, track.boxes)
                        ]
                    )
                    wav = resample(utt.audio, utt.sample_rate, ic.sample_rate)
                    items = store.utterance_items(u.key.utt_id, {}, rgb, thr, wav)
                    t3 = time.perf_counter()
                    writer.put_batch(items)
                    t4 = time.perf_counter()
                    # The baseline: a new FaceMesh per command detecting every frame, Iron inverted on whole frames.
                    blips, bran = mouth_roi.detect_lips(utt.rgb, stride=1, static=True)
                    base = mouth_roi.track_from_lips(blips, bran, ic.box_scale, ic.smooth_frames)
                    t5 = time.perf_counter()
                    brgb = np.stack([mouth_roi.crop(f, b, ic.roi_size) for f, b in zip(utt.rgb, base.boxes)])
                    bthr = np.stack(
                        [
                            mouth_roi.crop(iron_to_temperature(f), b, ic.roi_size)
                            for f, b in zip(utt.thermal, base.boxes)
                        ]
                    )
                    store.utterance_items(
                        u.key.utt_id, {}, brgb, bthr, resample(utt.audio, utt.sample_rate, ic.sample_rate)
                    )
                    t6 = time.perf_counter()
                    for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                        t[k] += dt
                    picked.setdefault(archive, []).append(u)
                    base_centres.append(base.smoothed[:, :2])
                    track_errors.append(np.hypot(*(track.smoothed[:, :2] - base.smoothed[:, :2]).T))
                    frames += len(utt.rgb)
                    done += 1
            if done == args.utterances:
                break
        writer.close()

        # Ours as ingest runs it: decoding of the next utterance (libspng when installed) overlapped with FaceMesh.
        sfc._spng = spng
        pipe = {"wait_for_decode": 0.0, "palette_check": 0.0, "landmarks_crop_encode": 0.0, "write": 0.0}
        writer = store.GrowingWriter(Path(tmp) / "db_pipelined")
        cpu0, wall0, i = time.process_time(), time.perf_counter(), 0
        for archive, utts in picked.items():
            with (
                zipfile.ZipFile(archive) as zf,
                ThreadPoolExecutor(ingest.DECODE_THREADS) as pool,
                mouth_roi.LipDetector(ingest.landmark_threads(1)) as detector,
            ):

                def load(u, zf=zf, archive=archive, pool=pool):
                    return sfc.load_utterance(zf, str(archive), u, ic.frame_tolerance, pool)

                for u, loading in ingest._prefetched(load, utts):
                    where = f"{archive}:{u.key.utt_id}"
                    t0 = time.perf_counter()
                    utt = loading.result()
                    t1 = time.perf_counter()
                    check_palette(utt.thermal, ic, where)
                    t2 = time.perf_counter()
                    items, _, track = ingest.process_utterance(utt, ic, where, detector)
                    t3 = time.perf_counter()
                    writer.put_batch(items)
                    t4 = time.perf_counter()
                    for k, dt in zip(pipe, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                        pipe[k] += dt
                    errors.append(np.hypot(*(track.boxes[:, :2] - base_centres[i]).T))
                    i += 1
        writer.close()
        ours, ours_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    err, terr = np.concatenate(errors), np.concatenate(track_errors)
    serial = t["decode"] + t["landmarks"] + t["crop_encode"] + t["write"]
    base_total = t["decode"] + t["baseline_landmarks"] + t["baseline_crop_encode"] + t["write"]
    result = {
        "utterances": done,
        "frames": frames,
        "landmark_stride": ic.landmark_stride,
        "roi_size": ic.roi_size,
        "ms_per_frame": {k: round(1000 * v / frames, 3) for k, v in t.items()},
        "pipelined_ms_per_frame": {k: round(1000 * v / frames, 3) for k, v in pipe.items()},
        "decode_threads": ingest.DECODE_THREADS,
        "landmark_threads": ingest.landmark_threads(1),
        "png_decoder": "libspng (pyspng)" if spng is not None else "OpenCV",
        "frames_per_s_per_worker": round(frames / ours, 1),
        "cpu_ms_per_frame": round(1000 * ours_cpu / frames, 3),
        "serial_frames_per_s_per_worker": round(frames / serial, 1),
        "baseline_frames_per_s_per_worker": round(frames / base_total, 1),
        "speedup_end_to_end": round(base_total / ours, 2),
        "speedup_landmarks": round(t["baseline_landmarks"] / t["landmarks"], 2),
        "mouth_centre_error_px": {
            "mean": round(float(err.mean()), 3),
            "p95": round(float(np.percentile(err, 95)), 3),
            "max": round(float(err.max()), 3),
        },
        "track_centre_error_px": {
            "mean": round(float(terr.mean()), 3),
            "p95": round(float(np.percentile(terr, 95)), 3),
            "max": round(float(terr.max()), 3),
        },
    }
    print(f"ingest, one worker, {frames} frames of {done} utterances (stride {ic.landmark_stride}):")
    for k, v in result["ms_per_frame"].items():
        print(f"  {k:20s} {v:8.3f} ms/frame")
    print(
        f"  as ingest runs it (decode of the next utterance with {result['png_decoder']} in {ingest.DECODE_THREADS} "
        f"threads beside FaceMesh in {ingest.landmark_threads(1)}), main thread:"
    )
    for k, v in result["pipelined_ms_per_frame"].items():
        print(f"  {k:20s} {v:8.3f} ms/frame")
    print(
        f"  ours      {result['frames_per_s_per_worker']:7.1f} frames/s ({result['cpu_ms_per_frame']} ms CPU/frame)   "
        f"serial {result['serial_frames_per_s_per_worker']:7.1f} frames/s   "
        f"baseline {result['baseline_frames_per_s_per_worker']:7.1f} frames/s"
    )
    print(f"  speed-up  end to end {result['speedup_end_to_end']}x, landmark stage {result['speedup_landmarks']}x")
    print(
        f"  mouth-centre error vs baseline: mean {result['mouth_centre_error_px']['mean']} px, "
        f"p95 {result['mouth_centre_error_px']['p95']} px, max {result['mouth_centre_error_px']['max']} px "
        f"(before snapping: mean {result['track_centre_error_px']['mean']}, max {result['track_centre_error_px']['max']} px)"
    )
    print(f"  saved {save('ingest', result)}")


if __name__ == "__main__":
    main()
