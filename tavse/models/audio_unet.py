"""The audio path: STFT magnitude → 2-D U-Net → bounded mask → iSTFT with the noisy phase.

Every variant uses this same U-Net; the visual variants only modify its bottleneck.
The U-Net halves the frequency axis at each level but keeps every STFT frame, so the
bottleneck has one time step per STFT frame (100 per second at 16 kHz / hop 160): finer than
the 28 fps video, which keeps the audio-visual alignment exact in time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_FLOOR = 1e-5  # magnitude floor before the log: about -100 dB below a full-scale bin


def conv_block(in_ch: int, out_ch: int, freq_stride: int = 1) -> nn.Sequential:
    """Two 3x3 conv → BatchNorm → LeakyReLU layers; the first may stride over frequency only."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=(freq_stride, 1), padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(0.1),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(0.1),
    )


def _match_freq(x: Tensor, n_bins: int) -> Tensor:
    """Crop or zero-pad the frequency axis (dim -2) of ``x`` to ``n_bins``."""
    diff = n_bins - x.shape[-2]
    if diff > 0:
        return F.pad(x, (0, 0, 0, diff))
    return x[..., :n_bins, :] if diff < 0 else x


class AudioUNet(nn.Module):
    """Mask-estimating U-Net over the noisy log-magnitude spectrogram.

    Args:
        channels: encoder widths, one per level (``ModelSize.unet_channels``).
        n_fft, win_length, hop_length: STFT of the 16 kHz waveform (Hann window, centred frames).
    """

    def __init__(self, channels: Sequence[int], n_fft: int, win_length: int, hop_length: int) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"unet_channels needs at least two levels, got {list(channels)}")
        self.channels = list(channels)
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        # Not persistent: the window is derived from the config, so checkpoints need not carry it.
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

        self.encoder = nn.ModuleList(
            conv_block(1 if i == 0 else channels[i - 1], c, freq_stride=1 if i == 0 else 2)
            for i, c in enumerate(channels)
        )
        # Transposed conv k3/s2/p1 maps f bins to 2f-1: exact for 257 = 2^8 + 1; other sizes are cropped.
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 3, stride=(2, 1), padding=1)
            for i in range(len(channels) - 1)
        )
        self.decoder = nn.ModuleList(conv_block(2 * channels[i], channels[i]) for i in range(len(channels) - 1))
        self.head = nn.Conv2d(channels[0], 1, 1)

    @property
    def n_bins(self) -> int:
        """Frequency bins of the STFT."""
        return self.n_fft // 2 + 1

    @property
    def bottleneck_channels(self) -> int:
        return self.channels[-1]

    @property
    def bottleneck_bins(self) -> int:
        """Frequency bins left at the bottleneck after the strided convs."""
        f = self.n_bins
        for _ in self.channels[1:]:
            f = (f - 1) // 2 + 1
        return f

    def stft(self, wav: Tensor) -> Tensor:
        """Complex STFT (B, F, frames) of a (B, N) waveform, always in float32."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return torch.stft(
                wav.float(), self.n_fft, self.hop_length, self.win_length, self.window,
                center=True, return_complex=True,
            )

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """Waveform (B, length) from a complex STFT, always in float32."""
        with torch.autocast(device_type=spec.device.type, enabled=False):
            return torch.istft(
                spec, self.n_fft, self.hop_length, self.win_length, self.window,
                center=True, length=length,
            )

    @staticmethod
    def features(spec: Tensor) -> Tensor:
        """Network input (B, 1, F, frames): log magnitude, standardised per clip.

        The per-clip standardisation makes the mask independent of the input gain.
        """
        with torch.autocast(device_type=spec.device.type, enabled=False):
            x = torch.log(spec.abs() + LOG_FLOOR)
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True)
            return ((x - mean) / (std + 1e-5)).unsqueeze(1)

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Bottleneck (B, C, F', frames) and the skip tensors of the shallower levels."""
        skips: list[Tensor] = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
        return x, skips

    def decode(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Mask in (0, 1) of shape (B, F, frames) from the (possibly fused) bottleneck."""
        for i in reversed(range(len(skips))):
            x = _match_freq(self.up[i](x), skips[i].shape[-2])
            x = self.decoder[i](torch.cat([x, skips[i]], dim=1))
        return torch.sigmoid(self.head(x)).squeeze(1)
