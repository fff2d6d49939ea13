"""Training losses and the project's single definition of SI-SNR."""

from __future__ import annotations

import torch
from torch import Tensor


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SNR in dB per item, over the last axis.

    Both signals are made zero-mean; ``ref`` is scaled to its least-squares fit of ``est``
    (the target) and the rest of ``est`` is the error. Computed in the inputs' dtype
    (float64 stays float64). ``eps`` keeps silent inputs finite (they give 0 dB).

    Args:
        est, ref: (..., N) estimate and reference.

    Returns:
        (...,) SI-SNR in dB, e.g. (B,) for (B, N) inputs.
    """
    if est.shape != ref.shape:
        raise ValueError(f"est {tuple(est.shape)} and ref {tuple(ref.shape)} differ in shape")
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(dim=-1, keepdim=True) / (ref.pow(2).sum(dim=-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(dim=-1) + eps) / (noise.pow(2).sum(dim=-1) + eps))


def stft_magnitude(x: Tensor, n_fft: int, win_length: int, hop_length: int) -> Tensor:
    """|STFT| (B, F, frames) of (B, N) waveforms in float32, Hann window, centred frames."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        window = torch.hann_window(win_length, device=x.device, dtype=torch.float32)
        spec = torch.stft(x.float(), n_fft, hop_length, win_length, window, center=True, return_complex=True)
        return spec.abs()


def enhancement_loss(
    est: Tensor, ref: Tensor, mag_weight: float, n_fft: int, win_length: int, hop_length: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """``mean(-SI-SNR) + mag_weight * L1(|STFT est|, |STFT ref|)``, in float32 even under autocast.

    Returns:
        The scalar loss and detached parts for logging: ``si_snr`` (mean dB) and ``mag_l1``.
    """
    with torch.autocast(device_type=est.device.type, enabled=False):
        est, ref = est.float(), ref.float()
        sisnr = si_snr(est, ref).mean()
        loss = -sisnr
        mag_l1 = est.new_zeros(())
        if mag_weight > 0:  # skip two STFTs when the term is off
            mag_l1 = (stft_magnitude(est, n_fft, win_length, hop_length)
                      - stft_magnitude(ref, n_fft, win_length, hop_length)).abs().mean()
            loss = loss + mag_weight * mag_l1
    return loss, {"si_snr": sisnr.detach(), "mag_l1": mag_l1.detach()}
