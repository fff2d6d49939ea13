"""Time-aligned fusion of visual streams into the audio U-Net bottleneck.

The audio tokens are the bottleneck's time steps (one per STFT frame). Each visual stream,
at the video frame rate, is first resampled onto those time steps by linear interpolation on
timestamps, so every fusion type combines audio and video of the same instant:

* ``cross_attention``: audio queries attend to visual keys/values within a few video frames
  of their own time (sinusoidal time encodings on both sides);
* ``concat``: the aligned visual features are concatenated to the bottleneck channels at every
  time-frequency cell and projected back;
* ``film``: the aligned visual features give a per-time-step scale and shift of the channels.

Every type is a residual ``x + scale * delta`` with a learnable ``scale`` that starts at 0
(ReZero): at initialisation each visual variant computes exactly what the audio-only model
with the same U-Net weights computes. With two streams a learned sigmoid gate per stream and
sample weights each stream's contribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

FusionType = Literal["cross_attention", "concat", "film"]

# Cross-attention window, in video frames either side (±143 ms at 28 fps): covers the usual
# audio-visual asynchrony of speech while keeping the fusion local in time. The BiGRU before it
# already carries the longer context.
ATTENTION_RADIUS_FRAMES = 4.0


def frame_positions(
    n_steps: int, n_frames: int, n_samples: int, hop_length: int, device: torch.device | None = None
) -> Tensor:
    """Fractional video-frame index at the centre of each of ``n_steps`` STFT frames.

    Video and audio cover the same span: video frame ``t`` covers ``[t, t+1) * n_samples / n_frames``
    samples (centre ``t + 0.5``), STFT frame ``j`` is centred on sample ``j * hop_length``. Working
    from the two lengths avoids needing the frame rate or the sample rate here.
    """
    centres = torch.arange(n_steps, device=device, dtype=torch.float32) * hop_length
    return centres * (n_frames / n_samples) - 0.5


def interpolation_matrix(positions: Tensor, n_frames: int) -> Tensor:
    """(n_steps, n_frames) linear-interpolation weights at fractional ``positions`` (clamped at the ends).

    Applied as a matrix product, which is deterministic on every device (unlike gathers with
    scatter-add backward).
    """
    pos = positions.clamp(0, n_frames - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n_frames - 1)
    w_hi = (pos - lo.to(pos.dtype)).unsqueeze(1)
    one_hot = torch.eye(n_frames, device=positions.device, dtype=positions.dtype)
    return one_hot[lo] * (1 - w_hi) + one_hot[hi] * w_hi


def sinusoidal_encoding(positions: Tensor, dim: int) -> Tensor:
    """Transformer-style sin/cos encoding (n, dim) of real-valued ``positions`` (in video frames)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float().unsqueeze(1) * freqs
    enc = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(enc, (0, dim - 2 * half))  # odd dim: one zero column


class StreamGate(nn.Module):
    """Per-sample weight in (0, 1) for one stream, from that stream's time-averaged features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, stream: Tensor) -> Tensor:
        return torch.sigmoid(self.linear(stream.mean(dim=1))).squeeze(1)


class Fusion(nn.Module):
    """Base class: alignment, gates and the zero-initialised residual; subclasses give ``delta``.

    Args:
        channels: bottleneck channels ``C``.
        dim: visual feature size ``D`` (``fusion_dim``).
        n_streams: number of visual streams (1 or 2).
        hop_length: STFT hop, to place bottleneck steps in time.
    """

    def __init__(self, channels: int, dim: int, n_streams: int, hop_length: int) -> None:
        super().__init__()
        if n_streams < 1:
            raise ValueError("fusion needs at least one visual stream")
        self.channels, self.dim, self.n_streams, self.hop_length = channels, dim, n_streams, hop_length
        self.gates = nn.ModuleList(StreamGate(dim) for _ in range(n_streams)) if n_streams > 1 else None
        self.scale = nn.Parameter(torch.zeros(()))

    def delta(self, x: Tensor, streams: list[Tensor], weights: list[Tensor | None], positions: Tensor) -> Tensor:
        """Residual (B, C, F', steps) from bottleneck ``x`` and aligned streams (B, steps, D)."""
        raise NotImplementedError

    def forward(self, x: Tensor, streams: Sequence[Tensor], n_samples: int) -> tuple[Tensor, list[Tensor]]:
        """Fused bottleneck and the gate values (one (B,) tensor per stream; empty for one stream).

        Args:
            x: bottleneck (B, C, F', steps).
            streams: visual features (B, T, D) per stream, at the video frame rate.
            n_samples: waveform length, so that video frames and STFT frames can be placed in time.
        """
        if len(streams) != self.n_streams:
            raise ValueError(f"expected {self.n_streams} visual stream(s), got {len(streams)}")
        n_frames = streams[0].shape[1]
        if any(s.shape[1] != n_frames for s in streams):
            raise ValueError(f"visual streams differ in length: {[s.shape[1] for s in streams]}")
        positions = frame_positions(x.shape[-1], n_frames, n_samples, self.hop_length, x.device)
        interp = interpolation_matrix(positions, n_frames).to(streams[0].dtype)
        aligned = [interp @ s for s in streams]  # (steps, T) @ (B, T, D) → (B, steps, D)
        gates = [g(s) for g, s in zip(self.gates, streams)] if self.gates is not None else []
        weights: list[Tensor | None] = list(gates) if gates else [None] * self.n_streams
        return x + self.scale * self.delta(x, aligned, weights, positions), gates


def _weighted(t: Tensor, w: Tensor | None) -> Tensor:
    """``t`` (B, ...) scaled per sample by ``w`` (B,), or unchanged without a gate."""
    return t if w is None else t * w.view(-1, *([1] * (t.dim() - 1)))


class CrossAttentionFusion(Fusion):
    """Audio time steps query each stream over a local time window; one attention per stream."""

    def __init__(self, channels: int, dim: int, n_streams: int, hop_length: int, heads: int) -> None:
        super().__init__(channels, dim, n_streams, hop_length)
        # Frequency is averaged out per time step: a token is "the audio now", not a T-F cell.
        self.query = nn.Sequential(nn.Linear(channels, dim), nn.LayerNorm(dim))
        self.key_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_streams))
        self.attention = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(n_streams))
        self.out = nn.Linear(dim, channels)

    def delta(self, x: Tensor, streams: list[Tensor], weights: list[Tensor | None], positions: Tensor) -> Tensor:
        pe = sinusoidal_encoding(positions, self.dim).to(x.dtype)
        q = self.query(x.mean(dim=2).transpose(1, 2)) + pe
        # True = may not attend: keys further than the window from the query's own time.
        blocked = (positions.unsqueeze(1) - positions.unsqueeze(0)).abs() > ATTENTION_RADIUS_FRAMES
        mixed: Tensor | int = 0
        for norm, attn, s, w in zip(self.key_norm, self.attention, streams, weights):
            v = norm(s)  # keys carry the time encoding, values only the visual content
            mixed = mixed + _weighted(attn(q, v + pe, v, attn_mask=blocked, need_weights=False)[0], w)
        return self.out(mixed).transpose(1, 2).unsqueeze(2)  # (B, C, 1, steps): same for every bin


class ConcatFusion(Fusion):
    """[bottleneck; aligned streams] at every time-frequency cell → 1x1 conv back to C channels."""

    def __init__(self, channels: int, dim: int, n_streams: int, hop_length: int) -> None:
        super().__init__(channels, dim, n_streams, hop_length)
        self.project = nn.Conv2d(channels + n_streams * dim, channels, 1)

    def delta(self, x: Tensor, streams: list[Tensor], weights: list[Tensor | None], positions: Tensor) -> Tensor:
        v = torch.cat([_weighted(s, w) for s, w in zip(streams, weights)], dim=2)  # (B, steps, M*D)
        v = v.transpose(1, 2).unsqueeze(2).expand(-1, -1, x.shape[2], -1)
        return self.project(torch.cat([x, v.to(x.dtype)], dim=1))


class FilmFusion(Fusion):
    """Per-time-step channel scale and shift from each aligned stream (summed over streams)."""

    def __init__(self, channels: int, dim: int, n_streams: int, hop_length: int) -> None:
        super().__init__(channels, dim, n_streams, hop_length)
        self.film = nn.ModuleList(nn.Linear(dim, 2 * channels) for _ in range(n_streams))

    def delta(self, x: Tensor, streams: list[Tensor], weights: list[Tensor | None], positions: Tensor) -> Tensor:
        # A tensor, not sum()'s start 0: there is at least one stream (checked by Fusion).
        params = cast(Tensor, sum(_weighted(f(s), w) for f, s, w in zip(self.film, streams, weights)))
        gamma, beta = params.transpose(1, 2).unsqueeze(2).chunk(2, dim=1)  # each (B, C, 1, steps)
        return gamma * x + beta  # x + scale*(gamma*x + beta) = x*(1 + scale*gamma) + scale*beta


def build_fusion(kind: FusionType, channels: int, dim: int, heads: int, n_streams: int, hop_length: int) -> Fusion:
    """The fusion module of type ``kind`` (``ModelConfig.fusion``)."""
    if kind == "cross_attention":
        return CrossAttentionFusion(channels, dim, n_streams, hop_length, heads)
    if kind == "concat":
        return ConcatFusion(channels, dim, n_streams, hop_length)
    if kind == "film":
        return FilmFusion(channels, dim, n_streams, hop_length)
    raise ValueError(f"unknown fusion {kind!r}")
