"""Training losses and the project's single definitions of SI-SNR and of target speech activity.

Speech activity matters because a large share of every utterance is target-silent: a model
that only attenuates those stretches raises plain SI-SNR without removing any noise from the
speech. :func:`speech_activity` says which samples carry the target; :func:`si_snr` restricted
to them (``mask=``) cannot be raised by gating silence, and :func:`silence_attenuation_db`
measures the gating itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Target speech activity: 20 ms frames of the clean signal within 40 dB of its loudest frame.
ACTIVITY_FRAME = 320  # samples at 16 kHz
ACTIVITY_RANGE_DB = 40.0


def speech_activity(ref: Tensor, frame: int = ACTIVITY_FRAME, range_db: float = ACTIVITY_RANGE_DB) -> Tensor:
    """(..., N) bool: samples of ``ref`` inside a target-active frame.

    Frames of ``frame`` samples (the last one may be shorter) are active when their energy is
    within ``range_db`` of the loudest frame of the same item. An all-zero item has no active
    sample.
    """
    n = ref.shape[-1]
    n_frames = -(-n // frame)
    padded = torch.nn.functional.pad(ref.double(), (0, n_frames * frame - n))
    energy = padded.reshape(*ref.shape[:-1], n_frames, frame).pow(2).sum(dim=-1)
    peak = energy.amax(dim=-1, keepdim=True)
    active = (energy > peak * 10 ** (-range_db / 10)) & (peak > 0)
    return active.repeat_interleave(frame, dim=-1)[..., :n]


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8, mask: Tensor | None = None) -> Tensor:
    """Scale-invariant SNR in dB per item, over the last axis.

    Both signals are made zero-mean; ``ref`` is scaled to its least-squares fit of ``est``
    (the target) and the rest of ``est`` is the error. Computed in the inputs' dtype
    (float64 stays float64). ``eps`` keeps silent inputs finite (they give 0 dB).

    Args:
        est, ref: (..., N) estimate and reference.
        mask: optional (..., N) bool; only these samples count (means, fit and energies), e.g.
            :func:`speech_activity` of ``ref`` for the SI-SNR on speech-active samples.

    Returns:
        (...,) SI-SNR in dB, e.g. (B,) for (B, N) inputs.
    """
    if est.shape != ref.shape:
        raise ValueError(f"est {tuple(est.shape)} and ref {tuple(ref.shape)} differ in shape")
    if mask is not None:
        if mask.shape != est.shape:
            raise ValueError(f"mask {tuple(mask.shape)} and est {tuple(est.shape)} differ in shape")
        w = mask.to(est.dtype)
        count = w.sum(dim=-1, keepdim=True).clamp(min=1)
        est = (est - (est * w).sum(dim=-1, keepdim=True) / count) * w
        ref = (ref - (ref * w).sum(dim=-1, keepdim=True) / count) * w
    else:
        est = est - est.mean(dim=-1, keepdim=True)
        ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(dim=-1, keepdim=True) / (ref.pow(2).sum(dim=-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(dim=-1) + eps) / (noise.pow(2).sum(dim=-1) + eps))


def silence_attenuation_db(est: Tensor, noisy: Tensor, active: Tensor, eps: float = 1e-10) -> Tensor:
    """(...,) energy of ``est`` over that of ``noisy`` in the target-silent samples (``~active``), in dB.

    Negative: the system attenuates where the target is silent (what a voice-activity gate
    does); 0 dB: it passes the input through. NaN for an item with no silent sample.
    """
    silent = (~active).to(est.dtype)
    out = (est.pow(2) * silent).sum(dim=-1)
    inp = (noisy.to(est.dtype).pow(2) * silent).sum(dim=-1)
    db = 10 * torch.log10((out + eps) / (inp + eps))
    return torch.where(silent.sum(dim=-1) > 0, db, torch.full_like(db, float("nan")))


def enhancement_loss(est: Tensor, ref: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``mean(-SI-SNR)`` over the batch, in float32 even under autocast.

    The training objective of every variant. (An earlier ``0.1 x |STFT| L1`` term was inert
    beside ~10 dB of SI-SNR, and compressed-spectrum or magnitude terms measured no gain at
    this scale, so there is none.)

    Returns:
        The scalar loss and detached parts for logging: ``si_snr`` (mean dB).
    """
    with torch.autocast(device_type=est.device.type, enabled=False):
        sisnr = si_snr(est.float(), ref.float()).mean()
    return -sisnr, {"si_snr": sisnr.detach()}
