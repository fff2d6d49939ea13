"""The audio path of the original TAVSE design, rebuilt from its description, as a speed baseline.

Five encoder levels (1→32→64→128→256→512), each one 3x3 conv with stride 2 in frequency AND
time, BatchNorm, LeakyReLU; four transposed-conv levels back with skip concatenation
(bilinear resize on a size mismatch); a last transposed conv to a sigmoid mask. Its
bottleneck for 2.5 s is 9 bins x 8 steps (3.2 steps/s): cheap, but far coarser in time than
the 28 fps video. Used only by ``bench/train_step.py`` to time a step side by side with ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHANNELS = (32, 64, 128, 256, 512)


def _down(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.LeakyReLU(0.2))


def _up(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(i, o, 3, 2, 1, 1), nn.BatchNorm2d(o), nn.ReLU())


class OriginalAudioUNet(nn.Module):
    """Noisy waveform (B, N) → enhanced waveform, through the original design's magnitude-mask U-Net."""

    def __init__(self, n_fft: int = 512, win_length: int = 400, hop_length: int = 160) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        c = CHANNELS
        self.enc = nn.ModuleList(_down(1 if k == 0 else c[k - 1], c[k]) for k in range(len(c)))
        self.dec = nn.ModuleList([_up(c[4], c[3]), _up(2 * c[3], c[2]), _up(2 * c[2], c[1]), _up(2 * c[1], c[0])])
        self.last = nn.ConvTranspose2d(2 * c[0], 1, 3, 2, 1, 1)

    def forward(self, noisy: Tensor) -> Tensor:
        spec = torch.stft(noisy, self.n_fft, self.hop_length, self.win_length, self.window, return_complex=True)
        x = spec.abs().unsqueeze(1)
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.dec:
            skip = skips.pop()
            x = block(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        mask = torch.sigmoid(F.interpolate(self.last(x), size=spec.shape[-2:], mode="bilinear", align_corners=False))
        return torch.istft(
            spec * mask.squeeze(1), self.n_fft, self.hop_length, self.win_length, self.window, length=noisy.shape[-1]
        )
