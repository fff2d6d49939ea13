"""SI-SNR against a plain numpy reference, and the enhancement loss."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tavse.common.config import load_config
from tavse.losses import enhancement_loss, si_snr, silence_attenuation_db, speech_activity
from tavse.models import TAVSE

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "params.yaml")
STFT = {"n_fft": CFG.model.n_fft, "win_length": CFG.model.win_length, "hop_length": CFG.model.hop_length}


def numpy_si_snr(est: np.ndarray, ref: np.ndarray) -> float:
    """Textbook SI-SNR of one pair, in float64."""
    est = est.astype(np.float64) - est.mean()
    ref = ref.astype(np.float64) - ref.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    noise = est - target
    return float(10 * np.log10(np.dot(target, target) / np.dot(noise, noise)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_si_snr_matches_numpy(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((5, 4000))
    est = ref * rng.uniform(0.2, 3, (5, 1)) + rng.standard_normal((5, 4000)) * rng.uniform(0.05, 3, (5, 1)) + 0.3
    got = si_snr(torch.from_numpy(est).to(dtype), torch.from_numpy(ref).to(dtype))
    assert got.shape == (5,) and got.dtype == dtype
    want = np.array([numpy_si_snr(e, r) for e, r in zip(est.astype(dtype_np(dtype)), ref.astype(dtype_np(dtype)))])
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=1e-4)


def dtype_np(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def test_si_snr_is_scale_and_offset_invariant() -> None:
    torch.manual_seed(0)
    ref = torch.randn(3, 2000, dtype=torch.float64)
    est = ref + 0.5 * torch.randn(3, 2000, dtype=torch.float64)
    base = si_snr(est, ref)
    for gain in (1e-3, 0.37, 12.0):
        torch.testing.assert_close(si_snr(gain * est + 0.1, ref), base, rtol=0, atol=1e-4)  # eps: not exact


def test_si_snr_extremes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4000)
    assert bool((si_snr(x, x) > 60).all())  # identical: as large as rounding allows
    assert bool((si_snr(x, -x) > 60).all())  # polarity is a scale of -1
    silent = torch.zeros(2, 4000)
    assert torch.isfinite(si_snr(silent, x)).all() and torch.isfinite(si_snr(x, silent)).all()
    with pytest.raises(ValueError, match="differ in shape"):
        si_snr(x, x[:, :100])


def test_enhancement_loss_parts_and_autocast() -> None:
    torch.manual_seed(0)
    ref = torch.randn(2, 8000)
    est = ref + 0.3 * torch.randn(2, 8000)
    loss, parts = enhancement_loss(est, ref)
    torch.testing.assert_close(loss, -si_snr(est, ref).mean())
    assert set(parts) == {"si_snr"}

    est16, ref16 = est.bfloat16(), ref.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto, _ = enhancement_loss(est16, ref16)
    plain, _ = enhancement_loss(est16.float(), ref16.float())
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)


def test_speech_activity_and_masked_si_snr() -> None:
    """Gating the target-silent half of a noisy signal raises SI-SNR but not the speech-active SI-SNR."""
    g = torch.Generator().manual_seed(1)
    clean = torch.zeros(1, 16000)
    clean[:, 3200:9600] = torch.randn(1, 6400, generator=g)  # 0.4 s of "speech", frame-aligned
    noisy = clean + 0.3 * torch.randn(1, 16000, generator=g)
    active = speech_activity(clean)
    assert int(active.sum()) == 6400 and bool(active[0, 3200]) and not bool(active[0, 3199])
    gated = noisy * active
    assert float(si_snr(gated, clean) - si_snr(noisy, clean)) > 3.5  # the 60% silent share of the noise is gone
    torch.testing.assert_close(si_snr(gated, clean, mask=active), si_snr(noisy, clean, mask=active))
    # On the active samples alone the masked SI-SNR is the plain SI-SNR of those samples.
    sel = active[0]
    torch.testing.assert_close(si_snr(noisy, clean, mask=active)[0], si_snr(noisy[0, sel], clean[0, sel]))
    assert float(silence_attenuation_db(gated, noisy, active)) < -60
    torch.testing.assert_close(silence_attenuation_db(noisy, noisy, active), torch.zeros(1))
    assert bool(torch.isnan(silence_attenuation_db(noisy, noisy, torch.ones_like(active))).all())
    assert not bool(speech_activity(torch.zeros(2, 500)).any())  # silence has no active sample


def test_loss_decreases_when_overfitting_one_example() -> None:
    torch.manual_seed(0)
    model = TAVSE(dataclasses.replace(CFG.model, size="small"), CFG.variants["audio_only"], CFG.ingest.roi_size)
    t = torch.arange(8000) / 16000
    clean = (0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t).abs()).unsqueeze(0)
    noisy = clean + 0.1 * torch.randn(1, 8000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss, _ = enhancement_loss(model(noisy)["enhanced"], clean)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 1.0, losses  # at least 1 dB better
