"""One visual stream: per-frame CNN trunk → BiGRU over time → features at the video frame rate."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

# Frames arrive in [0, 1]; centring them keeps the first conv's input zero-mean without
# assuming ImageNet statistics (the trunks are trained from scratch).
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


class BasicBlock(nn.Module):
    """Residual block of two 3x3 convs; a strided 1x1 conv on the shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class CompactTrunk(nn.Module):
    """Narrow ResNet for CPUs: strided stem, four one-block stages of width w, 2w, 4w, 8w, global pool."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            *(BasicBlock(widths[max(i - 1, 0)], w, stride=1 if i == 0 else 2) for i, w in enumerate(widths))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


class ResNet18Trunk(nn.Module):
    """torchvision ResNet-18 (random init) without its classifier: 512-d per frame."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        import torchvision  # here, not at module level: importing it costs seconds and only this trunk needs it

        net = torchvision.models.resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            # Same init torchvision gives its own convs.
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.fc = nn.Identity()  # the global average pool stays, so the output is (N, 512)
        self.net = net
        self.out_dim = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class VisualEncoder(nn.Module):
    """Frames (B, T, C, S, S) in [0, 1] → features (B, T, out_dim) at the video frame rate.

    Args:
        in_channels: 3 for RGB, 1 for thermal.
        trunk: ``resnet18`` or ``compact`` (``ModelSize.visual_trunk``).
        width: base width of the compact trunk (ignored by resnet18).
        gru_hidden, gru_layers: the BiGRU over time (hidden size per direction).
        out_dim: feature size handed to the fusion (``ModelSize.fusion_dim``).
        roi_size: expected crop side; other sizes are rejected as a configuration mismatch.
    """

    def __init__(
        self,
        in_channels: int,
        trunk: Literal["resnet18", "compact"],
        width: int,
        gru_hidden: int,
        gru_layers: int,
        out_dim: int,
        roi_size: int,
    ) -> None:
        super().__init__()
        self.in_channels, self.roi_size = in_channels, roi_size
        if trunk == "resnet18":
            self.trunk: ResNet18Trunk | CompactTrunk = ResNet18Trunk(in_channels)
        elif trunk == "compact":
            self.trunk = CompactTrunk(in_channels, width)
        else:
            raise ValueError(f"unknown visual trunk {trunk!r}")
        # Channels-last convolutions: 1.6x faster forward + backward for the compact trunk on CPU
        # (bench/train_step.py), and the layout GPUs' tensor cores prefer.
        # Module.to's overloads omit the memory_format-only form, which it documents and takes.
        self.trunk.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.gru = nn.GRU(self.trunk.out_dim, gru_hidden, num_layers=gru_layers, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * gru_hidden, out_dim)

    def forward(self, frames: Tensor) -> Tensor:
        if (
            frames.dim() != 5
            or frames.shape[2] != self.in_channels
            or frames.shape[-2:] != (self.roi_size, self.roi_size)
        ):
            raise ValueError(
                f"expected frames (B, T, {self.in_channels}, {self.roi_size}, {self.roi_size}), got {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        x = ((frames.flatten(0, 1).float() - PIXEL_MEAN) / PIXEL_STD).contiguous(memory_format=torch.channels_last)
        per_frame = self.trunk(x).reshape(b, t, -1)
        seq, _ = self.gru(per_frame)
        return self.proj(seq)
