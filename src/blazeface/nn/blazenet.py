"""One network class for every BlazeFace variant, built from a frozen :class:`NetSpec`.

The short-range (front), back and 2019 front models are a stem plus single BlazeBlocks with two
heads; the full-range models add double blocks and a top-down (FPN-style) path to one 48×48 head;
the sparse full-range model pads symmetrically and ends its heads with a depth-to-space. The
paper's model is double blocks with 5×5 kernels. All of these are data below, not classes.

``forward`` returns the raw outputs, exactly as the TFLite models do:
``regressors: Tensor[B, A, 16]`` (box ``x, y, w, h`` then six keypoints ``x, y``, in input pixels,
relative to the anchor) and ``logits: Tensor[B, A, 1]``, the finer grid's anchors first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BlazeBlock, DepthToSpace, PaddedConv2d, PaddingMode

NUM_COORDS = 16  # box (4) + 6 keypoints × (x, y)


@dataclass(frozen=True)
class BlockSpec:
    """One BlazeBlock: ``mid_channels=None`` is a single block, otherwise a double block."""

    in_channels: int
    out_channels: int
    stride: int = 1
    mid_channels: int | None = None
    residual: bool = True


@dataclass(frozen=True)
class FPNStageSpec:
    """One top-down step: ``relu(1×1(lateral)) + upsample2×(relu(1×1(deep)))``, then double blocks.

    ``lateral`` is the index of the backbone block whose output joins; ``blocks`` double blocks of
    ``channels → channels // 2 → channels`` follow the sum.
    """

    lateral: int
    channels: int
    blocks: int


@dataclass(frozen=True)
class HeadSpec:
    """A classifier/regressor pair on one feature map with ``anchors`` anchors per cell.

    ``feature`` indexes the backbone block whose output feeds it (ignored with an FPN, whose
    output feeds every head). ``depth_to_space`` builds the sparse model's head: a 1×1 to 4× the
    channels, a 3×3 stride-2 depthwise, then depth-to-space ×2.
    """

    feature: int
    in_channels: int
    anchors: int
    depth_to_space: bool = False


@dataclass(frozen=True)
class NetSpec:
    """The architecture of one BlazeFace network."""

    input_size: int
    stem_channels: int
    stem_kernel: int
    blocks: tuple[BlockSpec, ...]
    heads: tuple[HeadSpec, ...]
    kernel_size: int = 3
    padding: PaddingMode = "same"
    fpn: tuple[FPNStageSpec, ...] = field(default_factory=tuple)

    @property
    def num_anchors(self) -> int:
        """Anchors the heads produce for one image."""
        total = 0
        for head in self.heads:
            size = self.feature_size(head)
            total += size * size * head.anchors
        return total

    def feature_size(self, head: HeadSpec) -> int:
        """Side of the feature map ``head`` runs on."""
        if self.fpn:
            strides = sum(b.stride == 2 for b in self.blocks) - len(self.fpn)
        else:
            strides = sum(b.stride == 2 for b in self.blocks[: head.feature + 1])
        return self.input_size // 2 // 2**strides


def _double_blocks(channels: int, count: int, kernel_size: int, padding: PaddingMode) -> nn.Sequential:
    return nn.Sequential(
        *[
            BlazeBlock(channels, channels, 1, channels // 2, True, kernel_size, padding)
            for _ in range(count)
        ]
    )


class FPNStage(nn.Module):
    """One top-down merge (see :class:`FPNStageSpec`)."""

    def __init__(self, deep_channels: int, lateral_channels: int, spec: FPNStageSpec,
                 kernel_size: int, padding: PaddingMode) -> None:
        super().__init__()
        self.deep = nn.Conv2d(deep_channels, spec.channels, 1)
        self.lateral = nn.Conv2d(lateral_channels, spec.channels, 1)
        self.blocks = _double_blocks(spec.channels, spec.blocks, kernel_size, padding)

    def forward(self, deep: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(F.relu(self.deep(deep)), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.blocks(F.relu(self.lateral(lateral)) + up)


class DetectionHead(nn.Module):
    """A 1×1 convolution to ``anchors × channels`` per cell, reshaped to ``[B, H*W*anchors, channels]``."""

    def __init__(self, in_channels: int, anchors: int, channels: int, depth_to_space: bool) -> None:
        super().__init__()
        out = anchors * channels
        if depth_to_space:
            self.conv = nn.Sequential(
                nn.Conv2d(in_channels, out * 4, 1),
                PaddedConv2d(out * 4, out * 4, 3, 2, out * 4, "explicit"),
                DepthToSpace(2),
            )
        else:
            self.conv = nn.Conv2d(in_channels, out, 1)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)  # NHWC, as the TFLite graph reshapes it
        return y.reshape(y.shape[0], -1, self.channels)


class BlazeNet(nn.Module):
    """A BlazeFace network; ``forward(x: Tensor[B, 3, S, S] in [-1, 1])`` → ``(regressors, logits)``."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        k, pad = spec.kernel_size, spec.padding
        self.stem = PaddedConv2d(3, spec.stem_channels, spec.stem_kernel, 2, 1, pad)
        self.blocks = nn.ModuleList(
            BlazeBlock(b.in_channels, b.out_channels, b.stride, b.mid_channels, b.residual, k, pad)
            for b in spec.blocks
        )
        deep_channels = spec.blocks[-1].out_channels
        fpn = []
        for stage in spec.fpn:
            fpn.append(FPNStage(deep_channels, spec.blocks[stage.lateral].out_channels, stage, k, pad))
            deep_channels = stage.channels
        self.fpn = nn.ModuleList(fpn)
        self.regressors = nn.ModuleList(
            DetectionHead(h.in_channels, h.anchors, NUM_COORDS, h.depth_to_space) for h in spec.heads
        )
        self.classifiers = nn.ModuleList(
            DetectionHead(h.in_channels, h.anchors, 1, h.depth_to_space) for h in spec.heads
        )
        self._taps = sorted({s.lateral for s in spec.fpn} | ({h.feature for h in spec.heads} if not spec.fpn else set()))

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps the heads run on, in head order."""
        x = F.relu(self.stem(x))
        taps: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                taps[i] = x
        if self.spec.fpn:
            for stage_spec, stage in zip(self.spec.fpn, self.fpn):
                x = stage(x, taps[stage_spec.lateral])
            return [x for _ in self.spec.heads]
        return [taps[h.feature] for h in self.spec.heads]

    def heads(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The detection heads on :meth:`features`' maps: ``(regressors [B, A, 16], logits [B, A, 1])``."""
        regressors = torch.cat([head(f) for head, f in zip(self.regressors, feats)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.classifiers, feats)], dim=1)
        return regressors, logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(x))
