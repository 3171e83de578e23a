"""A :class:`~blazeface.nn.blazenet.BlazeNet` rewritten for ONNX Runtime's blocked (NCHWc) CPU kernels.

ONNX Runtime runs a convolution network fastest when every tensor stays in its blocked layout (8 channels a block
with AVX2), where a convolution also absorbs the residual ``Add`` and the ``ReLU`` after it. Two things in BlazeFace
break that layout and cost a reorder to plain NCHW and back around them: channel counts that are not a multiple of
the block (28, 36, 42, 12, …) and the skip path's channel ``Pad`` (TFLite's zero channels, ``out > in``).
:func:`align_channels` builds the same function without either:

- every tensor gets zero channels appended up to a multiple of ``multiple`` (zero weights and biases, so they stay
  exactly zero through depthwise convolutions, ReLU, max-pooling and sums; the next layer's weights ignore them);
- a block whose output is wider than its (aligned) input splits its last 1×1 convolution in two:
  ``concat(relu(pw[:in](h) + skip), relu(pw[in:](h)))`` equals ``relu(pw(h) + pad(skip))`` with no ``Pad``.

Outputs equal the original network's to float rounding (tested for every registered variant). It is an inference
graph for export only: the trainable :class:`BlazeNet` and its weights are untouched.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blazenet import BlazeNet, DetectionHead, FPNStage
from ..nn.layers import BlazeBlock, PaddedConv2d


def _aligned(channels: int, multiple: int) -> int:
    return -(-channels // multiple) * multiple


def _widen_conv(conv: nn.Conv2d, out_channels: int, in_channels: int, rows: slice | None = None) -> nn.Conv2d:
    """A copy of ``conv`` with ``out_channels`` outputs (rows ``rows`` of its weight, then zero rows) and
    ``in_channels`` inputs (zero columns appended); a depthwise ``conv`` stays depthwise (``groups = channels``)."""
    depthwise = conv.groups > 1
    if depthwise and conv.groups != conv.in_channels:
        raise ValueError("only plain and depthwise convolutions can be widened")
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                    groups=in_channels if depthwise else 1, bias=True)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        new.weight[: weight.shape[0], : weight.shape[1]] = weight
        new.bias[: bias.shape[0]] = bias
    return new


def _widen_padded(layer: PaddedConv2d, out_channels: int, in_channels: int) -> nn.Sequential:
    """:class:`PaddedConv2d` (optional spatial ``ZeroPad2d`` + conv) with its conv widened."""
    *pads, conv = list(layer)
    return nn.Sequential(*[copy.deepcopy(p) for p in pads], _widen_conv(conv, out_channels, in_channels))


class ChannelPad(nn.Module):
    """Append ``extra`` zero channels: ``Tensor[B, C, H, W]`` → ``Tensor[B, C + extra, H, W]``."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class AlignedBlock(nn.Module):
    """:class:`BlazeBlock` on aligned tensors: ``in_channels`` in (real channels first), aligned width out."""

    def __init__(self, block: BlazeBlock, in_channels: int, multiple: int) -> None:
        super().__init__()
        last = block.pw2 if block.double else block.pw1
        out = _aligned(last.out_channels, multiple)
        self.out_channels = out
        self.residual = block.residual
        self.dw1 = _widen_padded(block.dw1, in_channels, in_channels)
        self.double = block.double
        if block.double:
            mid = _aligned(block.pw1.out_channels, multiple)
            self.pw1 = _widen_conv(block.pw1, mid, in_channels)
            self.dw2 = _widen_padded(block.dw2, mid, mid)
            width = mid
        else:
            width = in_channels
        self.pool = copy.deepcopy(block.pool)
        self.split = block.residual and out > in_channels
        if self.split:  # the skip covers the first `in_channels` outputs; the rest have none
            self.main = _widen_conv(last, in_channels, width, slice(0, in_channels))
            self.extra = _widen_conv(last, out - in_channels, width, slice(in_channels, None))
        else:
            self.main = _widen_conv(last, out, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw1(x)
        if self.double:
            h = self.dw2(F.relu(self.pw1(h)))
        if not self.residual:
            return F.relu(self.main(h))
        y = F.relu(self.main(h) + self.pool(x))
        if self.split:
            y = torch.cat([y, F.relu(self.extra(h))], dim=1)
        return y


class AlignedFPNStage(nn.Module):
    """:class:`FPNStage` on aligned tensors."""

    def __init__(self, stage: FPNStage, deep_channels: int, lateral_channels: int, multiple: int) -> None:
        super().__init__()
        width = _aligned(stage.deep.out_channels, multiple)
        self.deep = _widen_conv(stage.deep, width, deep_channels)
        self.lateral = _widen_conv(stage.lateral, width, lateral_channels)
        blocks = []
        for block in stage.blocks:
            blocks.append(AlignedBlock(block, width, multiple))
            width = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = width

    forward = FPNStage.forward


def _aligned_head(head: DetectionHead, in_channels: int) -> DetectionHead:
    """A copy of ``head`` whose first 1×1 convolution reads ``in_channels`` (the zero channels weigh nothing)."""
    new = copy.deepcopy(head)
    if isinstance(new.conv, nn.Conv2d):
        new.conv = _widen_conv(head.conv, head.conv.out_channels, in_channels)  # type: ignore[arg-type]
    else:
        first = new.conv[0]
        new.conv[0] = _widen_conv(first, first.out_channels, in_channels)
    return new


class AlignedBlazeNet(nn.Module):
    """The function of a :class:`BlazeNet` with block-aligned channels and no channel ``Pad`` (see the module
    docstring); ``forward(x: Tensor[B, 3, S, S])`` → ``(regressors [B, A, 16], logits [B, A, 1])``."""

    def __init__(self, net: BlazeNet, multiple: int = 8, input_channels: int = 3) -> None:
        super().__init__()
        spec = net.spec
        self.spec = spec
        width = _aligned(spec.stem_channels, multiple)
        self.stem = _widen_padded(net.stem, width, input_channels)
        if input_channels > 3:  # zero image channels appended in the graph, ignored by the stem's zero weights
            self.stem.insert(0, ChannelPad(input_channels - 3))
        blocks = []
        widths = []
        for block in net.blocks:
            blocks.append(AlignedBlock(block, width, multiple))  # type: ignore[arg-type]
            width = blocks[-1].out_channels
            widths.append(width)
        self.blocks = nn.ModuleList(blocks)
        stages = []
        for stage_spec, stage in zip(spec.fpn, net.fpn):
            stages.append(AlignedFPNStage(stage, width, widths[stage_spec.lateral], multiple))  # type: ignore[arg-type]
            width = stages[-1].out_channels
        self.fpn = nn.ModuleList(stages)
        head_widths = [width] * len(spec.heads) if spec.fpn else [widths[h.feature] for h in spec.heads]
        self.regressors = nn.ModuleList(_aligned_head(h, w) for h, w in zip(net.regressors, head_widths))  # type: ignore[arg-type]
        self.classifiers = nn.ModuleList(_aligned_head(h, w) for h, w in zip(net.classifiers, head_widths))  # type: ignore[arg-type]
        self._taps = net._taps
        self.input_size = net.input_size

    features = BlazeNet.features
    heads = BlazeNet.heads
    forward = BlazeNet.forward


def cpu_flags() -> set[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (``avx512f``, ``avx512_vnni``, ...); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


def nchwc_block_size() -> int:
    """Channels per block of ONNX Runtime's NCHWc kernels on this CPU: 16 with AVX-512, else 8."""
    return 16 if "avx512f" in cpu_flags() else 8


def align_channels(net: BlazeNet, multiple: int = 8, input_channels: int = 3) -> AlignedBlazeNet:
    """``net`` as an :class:`AlignedBlazeNet` (same outputs) for export to ONNX Runtime's CPU kernels.

    ``input_channels=4`` pads the RGB input with a zero channel inside the graph (ORT's symmetric int8
    convolution kernels need a multiple of 4 input channels; its float kernels prefer 3)."""
    return AlignedBlazeNet(net.cpu().eval(), multiple, input_channels).eval()
