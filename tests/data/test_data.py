"""Segments, frozen mixture lists and the training/evaluation Datasets, on a tiny store built here."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from tavse.common.config import config_from_dict
from tavse.corpus.store import utterance_items, write_store
from tavse.data.dataset import MixtureSet, NoiseBank, TrainingSet, collate
from tavse.data.mixtures import (
    COLUMNS,
    Mixture,
    make_mixture_list,
    mix_signals,
    read_mixture_list,
    read_noise_kinds,
    write_mixture_list,
)
from tavse.data.segments import aligned_hop, frames_to_samples, segment_starts, span_samples
from tavse.pipeline import val_mixtures
from tavse.pipeline.noise import MANIFEST_COLUMNS
from tests.conftest import tiny_params

ROI = 8
# Utterance lengths in frames: several segments, two, exactly one, and one too short.
UTTS = {"s001_t1_p1_c0001": 161, "s001_t1_p1_c0002": 112, "s002_t1_p1_c0003": 70, "s002_t1_p1_c0004": 60}
NOISE = {"train": {"AAA": 60000, "BBB": 90000}, "val": {"CCC": 50000}}
KIND = {"AAA": "stationary", "BBB": "babble", "CCC": "transient"}
SNRS = [-5.0, 0.0, 5.0, 10.0, 15.0]


def _utterance(utt_id: str, n_frames: int):
    rng = np.random.default_rng(int(hashlib.sha256(utt_id.encode()).hexdigest()[:8], 16))
    n = int(round(n_frames * 16000 / 28))
    wav = (0.1 * rng.standard_normal(n)).astype(np.float32)
    return utterance_items(
        utt_id,
        {"fps": 28, "sample_rate": 16000},
        rng.integers(0, 256, (n_frames, ROI, ROI, 3), dtype=np.uint8),
        rng.integers(0, 256, (n_frames, ROI, ROI), dtype=np.uint8),
        wav,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``ingest/`` (one LMDB + manifest, reused as train and val) and ``noise/`` (WAVs + manifest)."""
    root = tmp_path_factory.mktemp("data")
    for split in ("train", "val"):
        write_store(root / "ingest" / "lmdb" / split, [_utterance(u, n) for u, n in UTTS.items()])
        man = root / "ingest" / "manifests" / f"{split}.csv"
        man.parent.mkdir(parents=True, exist_ok=True)
        with open(man, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["utt_id", "speaker", "n_frames", "n_samples"])
            for u, n in UTTS.items():
                w.writerow([u, u[1:4], n, round(n * 16000 / 28)])
    rows = []
    rng = np.random.default_rng(0)
    for split, envs in NOISE.items():
        (root / "noise" / split).mkdir(parents=True)
        for env, n in envs.items():
            rel = f"{split}/{env}_ch01.wav"
            sf.write(root / "noise" / rel, 0.2 * rng.uniform(-1, 1, n), 16000, subtype="PCM_16")
            rows.append(
                {
                    "split": split,
                    "env": env,
                    "kind": KIND[env],
                    "channel": 1,
                    "path": rel,
                    "n_samples": n,
                    "duration_s": n / 16000,
                    "rms_dbfs": -20,
                    "source": "test",
                }
            )
    with open(root / "noise" / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return root


def _noise_list(split: str = "train") -> list[tuple[str, str, int]]:
    return [(f"{split}/{env}_ch01.wav", env, n) for env, n in NOISE[split].items()]


def _training_set(corpus: Path, modalities=("rgb", "thermal"), seed: int = 7) -> TrainingSet:
    return TrainingSet(
        corpus / "ingest" / "lmdb" / "train",
        corpus / "ingest" / "manifests" / "train.csv",
        corpus / "noise",
        "train",
        segment_frames=70,
        snrs_db=SNRS,
        seed=seed,
        modalities=modalities,
    )


def _snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    c, e = clean.astype(np.float64), noisy.astype(np.float64) - clean
    return float(10 * np.log10(np.sum(c**2) / np.sum(e**2)))


# ---------------------------------------------------------------- segments


def test_segment_starts_edges():
    assert segment_starts(70, 70) == [0]
    assert segment_starts(69, 70) == []
    assert segment_starts(0, 70) == []
    assert segment_starts(77, 70) == [0, 7]
    assert segment_starts(161, 70, hop=35) == [0, 35, 70]
    assert all(s % 7 == 0 and s + 70 <= 200 for s in segment_starts(200, 70, hop=14))
    for bad_hop in (0, 5, 36):
        with pytest.raises(ValueError, match="multiple of 7"):
            segment_starts(100, 70, hop=bad_hop)
    with pytest.raises(ValueError):
        segment_starts(100, 0)
    assert aligned_hop(70) == 35 and aligned_hop(84) == 42 and aligned_hop(14) == 7 and aligned_hop(7) == 7


def test_frames_to_samples_is_exact_or_fails():
    assert frames_to_samples(70) == 40000
    assert frames_to_samples(7) == 4000
    assert frames_to_samples(0) == 0
    assert frames_to_samples(3, sample_rate=28000, fps=28) == 3000
    with pytest.raises(ValueError, match="not a whole number"):
        frames_to_samples(1)
    with pytest.raises(ValueError):
        frames_to_samples(75)
    assert span_samples(35, 70) == (20000, 60000)
    assert span_samples(0, 75) == (0, 42857)  # whole utterance: rounded like ingest


# ---------------------------------------------------------------- mixture lists


def _list_bytes(tmp_path: Path, mixtures: list[Mixture], name: str = "m.csv") -> bytes:
    write_mixture_list(tmp_path / name, mixtures)
    return (tmp_path / name).read_bytes()


def test_mixture_list_is_deterministic_and_seeded(tmp_path):
    utts = list(UTTS.items())
    a = make_mixture_list(utts, _noise_list(), SNRS, seed=1, per_utterance=4, segment_frames=70, noise_kinds=KIND)
    b = make_mixture_list(utts, _noise_list(), SNRS, seed=1, per_utterance=4, segment_frames=70, noise_kinds=KIND)
    c = make_mixture_list(utts, _noise_list(), SNRS, seed=2, per_utterance=4, segment_frames=70, noise_kinds=KIND)
    assert _list_bytes(tmp_path, a, "a.csv") == _list_bytes(tmp_path, b, "b.csv")
    assert _list_bytes(tmp_path, a, "a.csv") != _list_bytes(tmp_path, c, "c.csv")
    # The 60-frame utterance is too short for a 70-frame segment and left out.
    assert {m.utt_id for m in a} == set(list(UTTS)[:3])
    assert len({m.mix_id for m in a}) == len(a) == 12


def test_adding_an_utterance_keeps_the_others(tmp_path):
    utts = list(UTTS.items())[:3]
    before = make_mixture_list(utts, _noise_list(), SNRS, 1, 4, 70, noise_kinds=KIND)
    after = make_mixture_list([("s000_t1_p1_c0009", 120), *utts], _noise_list(), SNRS, 1, 4, 70, noise_kinds=KIND)
    assert [m for m in after if m.utt_id != "s000_t1_p1_c0009"] == before


def test_snrs_balanced_and_offsets_in_range():
    utts = [(f"s{i:03d}_t1_p1_c0001", 140) for i in range(20)]
    snrs = [-5.0, 0.0, 5.0, 10.0]
    mixtures = make_mixture_list(utts, _noise_list(), snrs, 3, 4, 70, noise_kinds=KIND)
    for u, _ in utts:
        assert sorted(m.snr_db for m in mixtures if m.utt_id == u) == snrs  # every SNR once per utterance
    assert set(Counter(m.snr_db for m in mixtures).values()) == {20}
    lengths = {p: n for p, _, n in _noise_list()}
    for m in mixtures:
        assert 0 <= m.noise_offset <= lengths[m.noise_path] - 40000
        assert m.start_frame % 7 == 0 and m.start_frame + m.n_frames <= 140
    # The SNR cycle starts at a seeded offset, not always at the first SNR.
    assert len({next(m.snr_db for m in mixtures if m.utt_id == u) for u, _ in utts}) > 1
    assert {m.noise_env for m in mixtures} == {"AAA", "BBB"}


def test_whole_utterance_mode():
    mixtures = make_mixture_list([("u1", 75), ("u2", 91)], _noise_list(), SNRS, 5, 2, None, noise_kinds=KIND)
    assert [(m.mix_id, m.start_frame, m.n_frames) for m in mixtures] == [
        ("u1_0", 0, 75),
        ("u1_1", 0, 75),
        ("u2_0", 0, 91),
        ("u2_1", 0, 91),
    ]
    for m in mixtures:
        assert m.noise_offset + span_samples(0, m.n_frames)[1] <= {p: n for p, _, n in _noise_list()}[m.noise_path]


def test_too_short_noise_names_the_file():
    noise = [*_noise_list(), ("train/TINY_ch01.wav", "TINY", 39999)]
    with pytest.raises(ValueError, match="TINY_ch01.wav"):
        make_mixture_list([("u1", 70)], noise, SNRS, 1, 1, 70, noise_kinds={**KIND, "TINY": "stationary"})
    with pytest.raises(ValueError, match=r"AAA_ch01\.wav.*u1"):
        make_mixture_list([("u1", 140)], _noise_list(), SNRS, 1, 1, None, noise_kinds=KIND)  # 80,000 samples > 60,000


def test_read_write_round_trip(tmp_path):
    mixtures = make_mixture_list(list(UTTS.items()), _noise_list(), [-2.5, 1 / 3], 1, 3, 70, noise_kinds=KIND)
    write_mixture_list(tmp_path / "sub" / "m.csv", mixtures)
    assert read_mixture_list(tmp_path / "sub" / "m.csv") == mixtures
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name != "m.csv"]  # no temp files left


def test_mixtures_carry_the_noise_kind(tmp_path):
    assert COLUMNS[COLUMNS.index("noise_env") + 1] == "noise_kind"
    mixtures = make_mixture_list(list(UTTS.items()), _noise_list(), SNRS, 1, 3, 70, noise_kinds=KIND)
    assert {(m.noise_env, m.noise_kind) for m in mixtures} == {("AAA", "stationary"), ("BBB", "babble")}
    write_mixture_list(tmp_path / "m.csv", mixtures)
    header, first = (tmp_path / "m.csv").read_text().splitlines()[:2]
    assert header.split(",")[5:7] == ["noise_env", "noise_kind"] and first.split(",")[6] == mixtures[0].noise_kind
    with pytest.raises(ValueError, match="no noise kind given for environment.*BBB"):
        make_mixture_list(list(UTTS.items()), _noise_list(), SNRS, 1, 3, 70, noise_kinds={"AAA": "stationary"})


def test_list_without_noise_kind_is_refused(tmp_path):
    old = [c for c in COLUMNS if c != "noise_kind"]
    path = tmp_path / "old.csv"
    path.write_text(",".join(old) + "\nu0_0,u0,0,70,a.wav,A,0,0.0\n")
    with pytest.raises(ValueError, match=r"old\.csv:1: no noise_kind column.*rebuild"):
        read_mixture_list(path)


def test_read_noise_kinds(corpus, tmp_path):
    manifest = corpus / "noise" / "manifest.csv"
    assert read_noise_kinds(manifest) == KIND
    assert read_noise_kinds(manifest, "val") == {"CCC": "transient"}
    rows = manifest.read_text().splitlines()
    old = tmp_path / "old.csv"  # a manifest from before noise kinds
    old.write_text("\n".join(",".join(f for i, f in enumerate(r.split(",")) if i != 2) for r in rows) + "\n")
    with pytest.raises(ValueError, match=r"old\.csv: no 'kind' column.*noise stage"):
        read_noise_kinds(old)
    two = tmp_path / "two.csv"  # one environment, two kinds
    two.write_text("\n".join([*rows, rows[1].replace("stationary", "babble").replace("AAA_ch01", "AAA_ch02")]) + "\n")
    with pytest.raises(ValueError, match="'AAA' has kinds 'stationary' and 'babble'"):
        read_noise_kinds(two)


@pytest.mark.parametrize(
    "row, message",
    [
        ("u1_0,u1,0,70,a.wav,A,babble,12,notanumber", "snr_db"),
        ("u1_0,u1,0,70,a.wav,A,babble,12", "expected 9 fields"),
        ("u1_0,u1,3,70,a.wav,A,babble,12,5.0", "multiple of 7"),
        ("u1_0,u1,0,70,a.wav,A,babble,x,5.0", "noise_offset"),
        ("u1_0,u1,0,70,a.wav,A,,12,5.0", "noise_kind is empty"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLUMNS) + "\nu0_0,u0,0,70,a.wav,A,babble,0,0.0\n" + row + "\n")
    with pytest.raises(ValueError, match=rf"bad\.csv:3: .*{message}"):
        read_mixture_list(path)
    path.write_text("mix_id,utt\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: header"):
        read_mixture_list(path)


def test_build_validation_list(corpus, tmp_path):
    p = tiny_params(tmp_path)
    p["ingest"]["out_dir"] = str(corpus / "ingest")
    p["noise"]["out_dir"] = str(corpus / "noise")
    p["validation"].update(out=str(tmp_path / "mixtures" / "val.csv"), segments_per_utterance=4)
    p["train"]["segment_frames"] = 70
    cfg = config_from_dict(p)
    out = val_mixtures.run(cfg)
    mixtures = read_mixture_list(out)
    assert out == Path(cfg.validation.out)
    assert {m.noise_env for m in mixtures} == {"CCC"}  # val noise only
    assert {m.noise_kind for m in mixtures} == {"transient"}  # the kind, from the noise manifest
    assert len(mixtures) == 3 * 4  # the 60-frame utterance has no 70-frame segment
    assert {m.n_frames for m in mixtures} == {cfg.train.segment_frames}
    first = out.read_bytes()
    val_mixtures.run(dataclasses.replace(cfg, validation=cfg.validation))
    assert out.read_bytes() == first


# ---------------------------------------------------------------- datasets


def test_noise_bank_reads_slices(corpus):
    bank = NoiseBank.from_manifest(corpus / "noise", "train")
    full, _ = sf.read(corpus / "noise" / "train" / "BBB_ch01.wav", dtype="float32")
    np.testing.assert_array_equal(bank.read("train/BBB_ch01.wav", 1234, 500), full[1234:1734])
    x, path, offset = bank.draw(np.random.default_rng(0), 40000)
    assert x.dtype == np.float32 and x.shape == (40000,)
    np.testing.assert_array_equal(x, bank.read(path, offset, 40000))
    with pytest.raises(ValueError, match="outside"):
        bank.read("train/AAA_ch01.wav", 59000, 2000)


def test_training_items_shapes_and_ranges(corpus):
    ds = _training_set(corpus)
    # 161 frames: starts 0, 35, 70; 112: 0, 35; 70: 0; 60: none.
    assert ds.items == [
        ("s001_t1_p1_c0001", 0),
        ("s001_t1_p1_c0001", 35),
        ("s001_t1_p1_c0001", 70),
        ("s001_t1_p1_c0002", 0),
        ("s001_t1_p1_c0002", 35),
        ("s002_t1_p1_c0003", 0),
    ]
    x = ds[1]
    assert set(x) == {"noisy", "clean", "snr_db", "rgb", "thermal"}
    assert x["noisy"].shape == x["clean"].shape == (40000,)
    assert x["rgb"].shape == (70, 3, ROI, ROI) and x["thermal"].shape == (70, 1, ROI, ROI)
    for k in ("rgb", "thermal"):
        assert x[k].dtype == torch.float32 and 0.0 <= x[k].min() and x[k].max() <= 1.0
    # Channels first, scaled from the stored uint8 crops of frames 35..104.
    rgb = ds.data.store.frames("s001_t1_p1_c0001", "rgb", 35, 105)
    np.testing.assert_array_equal(x["rgb"].numpy(), rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    np.testing.assert_array_equal(x["clean"].numpy(), ds.data.store.audio("s001_t1_p1_c0001", 20000, 60000))


@pytest.mark.parametrize("modalities", [(), ("rgb",), ("thermal",)])
def test_only_requested_modalities(corpus, modalities, monkeypatch):
    ds = _training_set(corpus, modalities)
    read = []
    orig = ds.data.store.frames
    monkeypatch.setattr(ds.data.store, "frames", lambda u, s, *a: read.append(s) or orig(u, s, *a))
    x = ds[0]
    assert set(x) == {"noisy", "clean", "snr_db", *modalities}
    assert read == [{"rgb": "rgb", "thermal": "thr"}[m] for m in modalities]
    with pytest.raises(ValueError, match="modalities"):
        _training_set(corpus, ("depth",))


def test_mixture_at_drawn_snr(corpus):
    ds = _training_set(corpus, ())
    seen = set()
    for i in range(len(ds)):
        x = ds[i]
        assert abs(_snr(x["clean"].numpy(), x["noisy"].numpy()) - float(x["snr_db"])) < 0.01
        seen.add(float(x["snr_db"]))
    assert seen <= set(SNRS) and len(seen) > 1


def test_same_seed_epoch_index_same_sample(corpus):
    a, b = _training_set(corpus), _training_set(corpus)
    for k in ("noisy", "clean", "rgb", "thermal", "snr_db"):
        assert torch.equal(a[2][k], b[2][k])
    before = a[2]["noisy"]
    a.set_epoch(1)
    assert not torch.equal(a[2]["noisy"], before)  # a new epoch, a new mixture of the same segment
    assert torch.equal(a[2]["clean"], b[2]["clean"])
    assert not torch.equal(_training_set(corpus, seed=8)[2]["noisy"], before)
    assert torch.equal(a[-1]["noisy"], a[len(a) - 1]["noisy"])


def _epoch(ds: TrainingSet, epoch: int, workers: int) -> list[dict]:
    ds.set_epoch(epoch)
    loader = DataLoader(
        ds,
        batch_size=2,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(7 + epoch),
    )
    return list(loader)


def test_loader_identical_with_and_without_workers(corpus):
    ds = _training_set(corpus, ("thermal",))
    ds[0]  # open the store in the parent first: forked workers must reopen it
    single, multi = _epoch(ds, 3, 0), _epoch(ds, 3, 2)
    assert len(single) == len(multi) == 3
    for x, y in zip(single, multi):
        assert set(x) == set(y) == {"noisy", "clean", "snr_db", "thermal"}
        for k in x:
            assert torch.equal(x[k], y[k]), k
    # Each sample is the dataset's own item (found by its clean audio), shuffled.
    ds.set_epoch(3)
    items = [ds[i] for i in range(len(ds))]
    order = []
    for batch in single:
        for clean, noisy in zip(batch["clean"], batch["noisy"]):
            j = next(j for j, it in enumerate(items) if torch.equal(it["clean"], clean))
            assert torch.equal(items[j]["noisy"], noisy)
            order.append(j)
    assert sorted(order) == list(range(len(ds))) and order != sorted(order)


def test_mixture_set_rebuilds_a_row_by_hand(corpus, tmp_path):
    mixtures = make_mixture_list(list(UTTS.items()), _noise_list("val"), SNRS, 11, 2, 70, noise_kinds=KIND)
    write_mixture_list(tmp_path / "val.csv", mixtures)
    frozen = read_mixture_list(tmp_path / "val.csv")
    ds = MixtureSet(corpus / "ingest" / "lmdb" / "val", corpus / "noise", frozen, ["rgb"])
    i = 3
    m = frozen[i]
    x = ds[i]
    a0 = m.start_frame * 16000 // 28
    clean = ds.data.store.audio(m.utt_id, a0, a0 + 40000).astype(np.float64)
    noise_full, sr = sf.read(corpus / "noise" / m.noise_path, dtype="float32")
    noise = noise_full[m.noise_offset : m.noise_offset + 40000].astype(np.float64)
    g = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (m.snr_db / 10)))
    np.testing.assert_allclose(x["noisy"].numpy(), clean + g * noise, atol=1e-6)
    assert x["mix_id"] == m.mix_id and int(x["index"]) == i and float(x["snr_db"]) == m.snr_db
    assert set(x) == {"noisy", "clean", "snr_db", "mix_id", "index", "rgb"}
    assert torch.equal(ds[i]["noisy"], x["noisy"])
    batch = collate([ds[0], ds[1]])
    assert batch["mix_id"] == [frozen[0].mix_id, frozen[1].mix_id] and batch["noisy"].shape == (2, 40000)


def test_whole_utterance_mixture_set(corpus):
    mixtures = make_mixture_list([("s002_t1_p1_c0004", 60)], _noise_list("val"), SNRS, 1, 1, None, noise_kinds=KIND)
    x = MixtureSet(corpus / "ingest" / "lmdb" / "val", corpus / "noise", mixtures, ["thermal"])[0]
    assert x["noisy"].shape == (round(60 * 16000 / 28),) and x["thermal"].shape == (60, 1, ROI, ROI)


def test_silent_clean_gets_noise_at_fixed_level():
    noise = np.random.default_rng(0).uniform(-1, 1, 4000).astype(np.float32)
    out = mix_signals(np.zeros(4000, np.float32), noise, 5.0)
    assert abs(10 * np.log10(np.mean(out.astype(np.float64) ** 2)) + 25.0) < 1e-3
