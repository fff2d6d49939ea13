"""The audio path: STFT magnitude → 2-D U-Net with a temporal model → bounded mask → iSTFT.

Every variant uses this same U-Net and the same temporal model; the visual variants only add
a fusion at its bottleneck, so they differ from audio-only in the visual streams alone.

Cost and time resolution. Each encoder level is one strided 3x3 conv: frequency is halved at
every level, time at the first :data:`TIME_STRIDED_LEVELS` levels only, so the bottleneck
runs at 100 / 4 = 25 steps per second at hop 160 — about the 28 fps video rate, fine enough
for lip movements to line up with the sound (the fusion places every bottleneck step at its
own time, see :attr:`AudioUNet.bottleneck_hop`). Levels that start from
:data:`SEPARABLE_MIN_CHANNELS` channels or more use depthwise-separable convs: at 25 Hz the
deep, wide levels would otherwise dominate the cost (paper size: 512 channels x 9 bins x 63
steps). A bidirectional GRU over the frequency-pooled bottleneck gives every variant the
whole clip as context (the visual encoders have their own BiGRU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_FLOOR = 1e-5  # magnitude floor before the log: about -100 dB below a full-scale bin
TIME_STRIDED_LEVELS = 2  # levels that halve time: 100 STFT frames/s → 25 bottleneck steps/s
SEPARABLE_MIN_CHANNELS = 64  # levels with at least this many input channels use separable convs
HEAD_CHANNELS = 8  # full-resolution features the mask head sees beside the input spectrum


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


def down_block(in_ch: int, out_ch: int, stride: tuple[int, int]) -> nn.Sequential:
    """One encoder level: a strided 3x3 conv (depthwise-separable when wide) → BatchNorm → LeakyReLU."""
    if in_ch >= SEPARABLE_MIN_CHANNELS:
        conv: list[nn.Module] = [
            nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
        ]
    else:
        conv = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)]
    return nn.Sequential(*conv, nn.BatchNorm2d(out_ch), _act())


def up_block(in_ch: int, out_ch: int, stride: tuple[int, int]) -> nn.Sequential:
    """One decoder level: the transpose of :func:`down_block` (k3, p1: n steps → stride·n − 1 + ...)."""
    if in_ch >= SEPARABLE_MIN_CHANNELS:
        conv: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.ConvTranspose2d(out_ch, out_ch, 3, stride=stride, padding=1, groups=out_ch, bias=False),
        ]
    else:
        conv = [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)]
    return nn.Sequential(*conv, nn.BatchNorm2d(out_ch), _act())


def match_size(x: Tensor, size: Sequence[int]) -> Tensor:
    """Crop or zero-pad the last two axes (frequency, time) of ``x`` to ``size``."""
    pad_f, pad_t = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if pad_f > 0 or pad_t > 0:
        x = F.pad(x, (0, max(pad_t, 0), 0, max(pad_f, 0)))
    return x[..., : size[0], : size[1]]


class BottleneckRNN(nn.Module):
    """Whole-clip context for the bottleneck: BiGRU over its frequency-pooled steps, added back.

    The output (B, C, F', T') is ``x`` plus a per-step channel offset, the same for every bin.
    """

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.gru = nn.GRU(channels, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        seq, _ = self.gru(self.norm(x.mean(dim=2).transpose(1, 2)))  # (B, T', 2H)
        return x + self.proj(seq).transpose(1, 2).unsqueeze(2)


class AudioUNet(nn.Module):
    """Mask-estimating U-Net over the noisy log-magnitude spectrogram.

    Args:
        channels: encoder widths, one per level (``ModelSize.unet_channels``).
        n_fft, win_length, hop_length: STFT of the 16 kHz waveform (Hann window, centred frames).
        rnn_hidden, rnn_layers: the bottleneck BiGRU (``ModelSize.gru_hidden`` / ``gru_layers``).
    """

    window: Tensor  # a buffer, registered in __init__

    def __init__(
        self, channels: Sequence[int], n_fft: int, win_length: int, hop_length: int, rnn_hidden: int, rnn_layers: int
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"unet_channels needs at least two levels, got {list(channels)}")
        self.channels = list(channels)
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        # Not persistent: the window is derived from the config, so checkpoints need not carry it.
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        strides = [(2, 2 if i < TIME_STRIDED_LEVELS else 1) for i in range(len(channels))]
        self.encoder = nn.ModuleList(
            down_block(1 if i == 0 else channels[i - 1], c, strides[i]) for i, c in enumerate(channels)
        )
        self.temporal = BottleneckRNN(channels[-1], rnn_hidden, rnn_layers)
        # Decoder level i turns level i's features (concatenated with its skip, except at the
        # bottleneck) into level i-1's resolution; the last one returns to full resolution.
        self.decoder = nn.ModuleList(
            up_block(
                channels[i] * (1 if i == len(channels) - 1 else 2), channels[i - 1] if i else HEAD_CHANNELS, strides[i]
            )
            for i in range(len(channels))
        )
        # Full-resolution head: the decoder's features beside the input log spectrum.
        self.head = nn.Conv2d(HEAD_CHANNELS + 1, 1, 1)

    @property
    def n_bins(self) -> int:
        """Frequency bins of the STFT."""
        return self.n_fft // 2 + 1

    @property
    def bottleneck_channels(self) -> int:
        return self.channels[-1]

    @property
    def bottleneck_hop(self) -> int:
        """Samples between bottleneck steps: step j is centred on STFT frame ``j * 2**TIME_STRIDED_LEVELS``."""
        return self.hop_length * 2 ** min(TIME_STRIDED_LEVELS, len(self.channels))

    def stft(self, wav: Tensor) -> Tensor:
        """Complex STFT (B, F, frames) of a (B, N) waveform, always in float32."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return torch.stft(
                wav.float(),
                self.n_fft,
                self.hop_length,
                self.win_length,
                self.window,
                center=True,
                return_complex=True,
            )

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """Waveform (B, length) from a complex STFT, always in float32."""
        with torch.autocast(device_type=spec.device.type, enabled=False):
            return torch.istft(
                spec,
                self.n_fft,
                self.hop_length,
                self.win_length,
                self.window,
                center=True,
                length=length,
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
        """Bottleneck (B, C, F', steps) and the skips: the input, then every shallower level's output."""
        skips = [x]
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        return skips.pop(), skips

    def decode(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Mask in (0, 1) of shape (B, F, frames) from the (possibly fused) bottleneck.

        The temporal model runs here, after any fusion, so that it integrates audio and
        video over the clip in the visual variants and audio alone in audio-only.
        """
        x = self.temporal(x)
        for i in reversed(range(len(self.decoder))):
            x = match_size(self.decoder[i](x), skips[i].shape[-2:])
            x = torch.cat([x, skips[i]], dim=1)
        return torch.sigmoid(self.head(x)).squeeze(1)
