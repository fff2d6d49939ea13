"""The one TAVSE model: an audio U-Net plus, per variant, visual encoders fused at its bottleneck.

The four variants of the study differ only in their :class:`~tavse.common.config.VariantConfig`
(the visual streams, their fusion, modality dropout); everything else comes from the same
:class:`~tavse.common.config.ModelConfig`. Modules are built in a fixed order (U-Net first), so
with the same seed every variant starts from the same U-Net weights, and because the fusion
residual starts at zero every variant initially computes exactly the audio-only output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tavse.common.config import STREAMS, ModelConfig, VariantConfig
from tavse.models.audio_unet import AudioUNet
from tavse.models.fusion import Fusion, build_fusion
from tavse.models.visual_encoder import VisualEncoder

IN_CHANNELS: dict[str, int] = {"rgb": 3, "thermal": 1}


def draw_stream_keep(batch: int, n_streams: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(batch, n_streams) bool: which streams each sample keeps under modality dropout.

    Each stream is dropped with probability ``p``; a sample that drew all its streams for
    dropping keeps one of them, chosen uniformly. Draws come from ``generator``, else from the
    global CPU torch RNG (whatever the model's device).
    """
    keep = torch.rand(batch, n_streams, generator=generator) >= p
    none_kept = ~keep.any(dim=1)
    rescue = torch.randint(n_streams, (batch,), generator=generator)
    keep[none_kept, rescue[none_kept]] = True
    return keep


class TAVSE(nn.Module):
    """Mask-based speech enhancer seeing audio and the given visual streams.

    Args:
        cfg: the model configuration (its ``dims`` give the size).
        variant: the visual streams this variant sees (a subset of ``("rgb", "thermal")`` in that
            order), their fusion and modality dropout.
        roi_size: side of the mouth crops in pixels.
    """

    def __init__(self, cfg: ModelConfig, variant: VariantConfig, roi_size: int) -> None:
        super().__init__()
        modalities = tuple(variant.streams)
        if modalities != tuple(m for m in STREAMS if m in modalities) or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be a subset of {STREAMS} in that order, got {list(modalities)}")
        dims = cfg.dims
        self.modalities = modalities
        self.roi_size = roi_size
        self.modality_dropout = variant.modality_dropout

        self.unet = AudioUNet(dims.unet_channels, cfg.n_fft, cfg.win_length, cfg.hop_length, dims.audio_gru_hidden, 1)
        # ModuleDict keys follow the canonical order; audio-only gets neither encoders nor fusion.
        self.visual = nn.ModuleDict(
            {
                m: VisualEncoder(
                    IN_CHANNELS[m],
                    dims.visual_trunk,
                    dims.visual_width,
                    dims.gru_hidden,
                    dims.gru_layers,
                    dims.fusion_dim,
                    roi_size,
                )
                for m in modalities
            }
        )
        self.fusion: Fusion | None = None
        if modalities:
            if variant.fusion is None:
                raise ValueError(f"a variant with streams {list(modalities)} needs a fusion")
            self.fusion = build_fusion(
                variant.fusion,
                self.unet.bottleneck_channels,
                dims.fusion_dim,
                dims.fusion_heads,
                len(modalities),
                self.unet.bottleneck_hop,
            )

    def forward(
        self, noisy: Tensor, visual: Mapping[str, Tensor] | None = None, keep_mask: Tensor | None = None
    ) -> dict[str, Any]:
        """Enhance ``noisy`` (B, N) with the variant's visual streams.

        Args:
            noisy: 16 kHz waveform (B, N).
            visual: ``{"rgb": (B, T, 3, S, S), "thermal": (B, T, 1, S, S)}`` in [0, 1], T video
                frames spanning the same time as the N samples; only this variant's streams are read.
            keep_mask: (B, n_streams) bool, the modality-dropout draw to apply in training
                (data-parallel ranks pass their slice of one draw for the global batch); drawn
                here with :func:`draw_stream_keep` when None.

        Returns:
            ``enhanced`` (B, N); ``mask`` (B, F, frames) in (0, 1); ``gates`` {modality: (B,)} when
            two streams are fused, else empty; ``stream_keep`` {modality: (B,) bool}, the streams
            kept by modality dropout (all True outside training).
        """
        if noisy.dim() != 2:
            raise ValueError(f"noisy must be (B, N), got {tuple(noisy.shape)}")
        batch, n_samples = noisy.shape
        spec = self.unet.stft(noisy)
        bottleneck, skips = self.unet.encode(self.unet.features(spec))

        gates: dict[str, Tensor] = {}
        stream_keep: dict[str, Tensor] = {}
        if self.fusion is not None:
            visual = visual or {}
            missing = [m for m in self.modalities if m not in visual]
            if missing:
                raise KeyError(f"variant {list(self.modalities)} needs visual stream(s) {missing}")
            streams = [self.visual[m](visual[m]) for m in self.modalities]
            if any(s.shape[0] != batch for s in streams):
                raise ValueError("visual streams and audio differ in batch size")
            keep = torch.ones(batch, len(streams), dtype=torch.bool)
            if self.training and self.modality_dropout > 0:
                keep = (
                    draw_stream_keep(batch, len(streams), self.modality_dropout)
                    if keep_mask is None
                    else keep_mask.cpu()
                )
                if keep.shape != (batch, len(streams)):
                    raise ValueError(f"keep_mask must be ({batch}, {len(streams)}), got {tuple(keep.shape)}")
                # Zero the encoded features, not the frames: the fusion sees "no stream" as zeros
                # and the trunk's BatchNorm statistics are not skewed by blank frames.
                streams = [s * keep[:, i].to(s.device, s.dtype).view(-1, 1, 1) for i, s in enumerate(streams)]
            stream_keep = {m: keep[:, i].to(noisy.device) for i, m in enumerate(self.modalities)}
            bottleneck, gate_list = self.fusion(bottleneck, streams, n_samples)
            gates = dict(zip(self.modalities, gate_list))

        mask = self.unet.decode(bottleneck, skips).float()  # float32 even under autocast
        enhanced = self.unet.istft(spec * mask, n_samples)
        return {"enhanced": enhanced, "mask": mask, "gates": gates, "stream_keep": stream_keep}


def parameter_counts(model: TAVSE) -> dict[str, int]:
    """Parameters per part and ``total``: ``audio_unet`` (its convolutions), ``audio_temporal`` (its
    bottleneck BiGRU; both the same in every variant), ``visual_rgb``, ``visual_thermal``, ``fusion``."""

    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    temporal = count(model.unet.temporal)
    counts = {"audio_unet": count(model.unet) - temporal, "audio_temporal": temporal}
    for m in STREAMS:
        counts[f"visual_{m}"] = count(model.visual[m]) if m in model.visual else 0
    counts["fusion"] = count(model.fusion)
    counts["total"] = count(model)
    return counts
