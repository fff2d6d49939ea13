"""Babble augmentation and the run-long (epoch, index) sampling, on the tiny store of test_data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tavse.common.config import BabbleConfig
from tavse.data.babble import BabbleMaker, room_response, utterance_speakers
from tavse.data.dataset import TrainingSet, collate
from tavse.training.loop import RunSampler
from tests.data.test_data import SNRS, UTTS, corpus  # noqa: F401  (corpus is a fixture)

SPEC = BabbleConfig(prob=1.0, talkers=[2, 4], gain_db=[-8.0, 0.0], rt60_s=[0.25, 0.9])
# Four speakers, two utterances each: (utt_id, n_samples).
UTTERANCES = [(f"s{s:03d}_t1_p1_c{c:04d}", 8000 + 1000 * c) for s in (1, 2, 3, 4) for c in (1, 2)]
SPEAKERS = {u: int(u[1:4]) for u, _ in UTTERANCES}


def _maker(log: list[str]) -> BabbleMaker:
    def read(utt_id: str, start: int, stop: int) -> np.ndarray:
        log.append(utt_id)
        n = dict(UTTERANCES)[utt_id]
        assert 0 <= start < stop <= n, (utt_id, start, stop)
        return np.random.default_rng(SPEAKERS[utt_id]).standard_normal(n)[start:stop].astype(np.float32)

    return BabbleMaker(SPEC, UTTERANCES, SPEAKERS, read)


def test_babble_never_holds_the_target_speaker_and_is_seeded():
    for target in (1, 2, 3, 4):
        for seed in range(20):
            log: list[str] = []
            out = _maker(log).draw(np.random.default_rng(seed), target, 12000)
            speakers = [SPEAKERS[u] for u in log]
            assert target not in speakers
            assert len(set(speakers)) == len(speakers) and 2 <= len(speakers) <= 3  # distinct, clamped to 3 others
            assert out.shape == (12000,) and out.dtype == np.float32 and np.all(np.isfinite(out))
            again = _maker([]).draw(np.random.default_rng(seed), target, 12000)
            assert np.array_equal(out, again)
    alone = BabbleMaker(SPEC, UTTERANCES[:2], SPEAKERS, lambda *a: np.zeros(1, np.float32))
    assert alone.draw(np.random.default_rng(0), 1, 100) is None  # no other speaker: no babble


def test_room_response_has_unit_energy_and_decays_60_db_over_rt60():
    ir = room_response(np.random.default_rng(0), 0.5)
    assert ir.size == 8000 and abs(float(np.sum(ir**2)) - 1) < 1e-12
    head, tail = np.mean(ir[:400] ** 2), np.mean(ir[-400:] ** 2)  # first and last 25 ms
    assert 50 < 10 * np.log10(head / tail) < 65  # ~57 dB between their centres, plus noise


def test_training_set_babble_keeps_the_snr_and_the_seeding(corpus):  # noqa: F811
    def make(babble):
        return TrainingSet(
            corpus / "ingest" / "lmdb" / "train",
            corpus / "ingest" / "manifests" / "train.csv",
            corpus / "noise",
            "train",
            segment_frames=35,
            snrs_db=SNRS,
            seed=7,
            modalities=(),
            babble=babble,
        )

    plain, babble, again = make(None), make(SPEC), make(SPEC)
    assert utterance_speakers(corpus / "ingest" / "manifests" / "train.csv") == {u: int(u[1:4]) for u in UTTS}
    for i in range(len(babble)):
        x, y = babble[i], again[(0, i)]
        assert torch.equal(x["noisy"], y["noisy"])  # (epoch, i) and i at the epoch set are the same sample
        assert torch.equal(x["clean"], plain[i]["clean"]) and not torch.equal(x["noisy"], plain[i]["noisy"])
        c = x["clean"].double().numpy()
        n = x["noisy"].double().numpy() - c
        assert abs(10 * np.log10(np.sum(c**2) / np.sum(n**2)) - float(x["snr_db"])) < 0.01


@pytest.mark.parametrize("workers", [0, 2])
def test_one_persistent_loader_serves_every_epoch(corpus, workers):  # noqa: F811
    """The run-long sampler's batches are each epoch's own samples, in each epoch's seeded order."""
    ds = TrainingSet(
        corpus / "ingest" / "lmdb" / "train",
        corpus / "ingest" / "manifests" / "train.csv",
        corpus / "noise",
        "train",
        segment_frames=35,
        snrs_db=SNRS,
        seed=7,
        modalities=("thermal",),
    )
    sampler = RunSampler(len(ds), seed=3, batch_size=2, grad_accum=1, start_epoch=1, skip_batches=1)
    loader = DataLoader(
        ds, batch_size=2, sampler=sampler, num_workers=workers, persistent_workers=workers > 0, collate_fn=collate
    )
    got = list(itertools.islice(loader, 2 * sampler.batches_per_epoch - 1))  # rest of epoch 1, all of epoch 2
    keys = list(itertools.islice(iter(sampler), 2 * len(got)))
    assert [e for e, _ in keys] == [1] * (sampler.used - 2) + [2] * sampler.used
    for b, batch in enumerate(got):
        for j in range(2):
            epoch, i = keys[2 * b + j]
            ds.set_epoch(epoch)
            want = ds[i]
            for k in ("noisy", "clean", "thermal", "snr_db"):
                assert torch.equal(batch[k][j], want[k]), (b, j, k)
