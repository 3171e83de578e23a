"""Building blocks of every BlazeFace network: static TF-SAME padding, BlazeBlocks, depth-to-space.

All tensors are NCHW. Padding is static: the networks run on a fixed, even input size, so the
asymmetric padding TensorFlow's ``SAME`` mode applies to stride-2 convolutions is known when the
layer is built and no shape-dependent code runs in ``forward``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PaddingMode = Literal["same", "explicit"]


def same_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """TF ``SAME`` padding ``(before, after)`` of one spatial axis of even length.

    TensorFlow pads ``max(k - s, 0)`` in total for an even input, the extra pixel going *after*:
    a 3×3 stride-2 convolution pads ``(0, 1)``, a 5×5 stride-2 one ``(1, 2)``, stride 1 ``(k//2, k//2)``.
    """
    total = max(kernel_size - stride, 0)
    return total // 2, total - total // 2


def conv_padding(kernel_size: int, stride: int, mode: PaddingMode) -> tuple[int, int]:
    """Padding ``(before, after)`` of one axis for ``mode``.

    ``"same"`` reproduces TF SAME (asymmetric at stride 2); ``"explicit"`` is the symmetric
    ``kernel_size // 2`` that graphs with a separate PAD op followed by a VALID convolution use.
    """
    if mode == "same":
        return same_padding(kernel_size, stride)
    if mode == "explicit":
        return kernel_size // 2, kernel_size // 2
    raise ValueError(f"unknown padding mode {mode!r}; expected 'same' or 'explicit'")


class PaddedConv2d(nn.Sequential):
    """``nn.Conv2d`` with static, possibly asymmetric padding (a ``ZeroPad2d`` in front when needed)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        padding: PaddingMode = "same",
    ) -> None:
        before, after = conv_padding(kernel_size, stride, padding)
        conv_pad = before if before == after else 0
        layers: list[nn.Module] = []
        if before != after:
            layers.append(nn.ZeroPad2d((before, after, before, after)))
        layers.append(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, conv_pad, groups=groups, bias=True)
        )
        super().__init__(*layers)


class BlazeBlock(nn.Module):
    """A single or double BlazeBlock (BlazeFace paper, Fig. 1).

    Single: ``depthwise(k, stride) → 1×1 (in → out)``.
    Double: ``depthwise(k, stride) → 1×1 (in → mid) → ReLU → depthwise(k) → 1×1 (mid → out)``.
    With ``residual`` the input is added back — through a 2×2 max-pool when ``stride == 2`` and with
    zero channels appended when ``out > in`` (TFLite's channel PAD) — and ReLU follows.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        mid_channels: int | None = None,
        residual: bool = True,
        kernel_size: int = 3,
        padding: PaddingMode = "same",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if residual and out_channels < in_channels:
            raise ValueError("a residual BlazeBlock cannot reduce channels")
        self.stride = stride
        self.residual = residual
        self.channel_pad = out_channels - in_channels
        first_out = mid_channels if mid_channels is not None else out_channels
        self.dw1 = PaddedConv2d(in_channels, in_channels, kernel_size, stride, in_channels, padding)
        self.pw1 = nn.Conv2d(in_channels, first_out, 1)
        self.double = mid_channels is not None
        if mid_channels is not None:
            self.dw2 = PaddedConv2d(mid_channels, mid_channels, kernel_size, 1, mid_channels, padding)
            self.pw2 = nn.Conv2d(mid_channels, out_channels, 1)
        self.pool = nn.MaxPool2d(2, 2) if stride == 2 and residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw1(self.dw1(x))
        if self.double:
            h = self.pw2(self.dw2(F.relu(h)))
        if self.residual:
            skip = self.pool(x)
            if self.channel_pad > 0:
                skip = F.pad(skip, (0, 0, 0, 0, 0, self.channel_pad))
            h = h + skip
        return F.relu(h)


class DepthToSpace(nn.Module):
    """TensorFlow's ``DEPTH_TO_SPACE`` (DCR order) on NCHW tensors.

    Output ``[B, C, H*r, W*r]`` with ``out[b, c, h*r + i, w*r + j] = in[b, (i*r + j)*C + c, h, w]``.
    (``nn.PixelShuffle`` uses the other, CRD, order.)
    """

    def __init__(self, block_size: int) -> None:
        super().__init__()
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.block_size
        x = x.reshape(b, r, r, c // (r * r), h, w)
        x = x.permute(0, 3, 4, 1, 5, 2)
        return x.reshape(b, c // (r * r), h * r, w * r)
