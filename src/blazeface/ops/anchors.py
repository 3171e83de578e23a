"""SSD anchor generation, as MediaPipe's ``SsdAnchorsCalculator`` does it (no anchor file)."""

from __future__ import annotations

import math

import torch

from ..config import AnchorOptions


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate_anchors(options: AnchorOptions) -> torch.Tensor:
    """Anchors ``Tensor[A, 4]`` as ``(x_center, y_center, w, h)``, normalized to the input size.

    Order is MediaPipe's: layer group (consecutive layers of equal stride) → y → x → anchor.
    With ``fixed_anchor_size`` every ``w = h = 1``.
    """
    if len(options.strides) != options.num_layers:
        raise ValueError("AnchorOptions.strides must have num_layers entries")
    chunks: list[torch.Tensor] = []
    layer = 0
    while layer < options.num_layers:
        widths: list[float] = []
        heights: list[float] = []
        last = layer
        while last < options.num_layers and options.strides[last] == options.strides[layer]:
            scale = _scale(options.min_scale, options.max_scale, last, options.num_layers)
            if last == 0 and options.reduce_boxes_in_lowest_layer:
                pairs = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
            else:
                pairs = [(ratio, scale) for ratio in options.aspect_ratios]
                if options.interpolated_scale_aspect_ratio > 0.0:
                    nxt = 1.0 if last == options.num_layers - 1 else _scale(
                        options.min_scale, options.max_scale, last + 1, options.num_layers)
                    pairs.append((options.interpolated_scale_aspect_ratio, math.sqrt(scale * nxt)))
            for ratio, s in pairs:
                root = math.sqrt(ratio)
                heights.append(s / root)
                widths.append(s * root)
            last += 1
        stride = options.strides[layer]
        size = math.ceil(options.input_size / stride)
        centers = (torch.arange(size, dtype=torch.float64) + options.anchor_offset) / size
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")
        per_cell = len(widths)
        if options.fixed_anchor_size:
            wh = torch.ones(per_cell, 2, dtype=torch.float64)
        else:
            wh = torch.tensor(list(zip(widths, heights)), dtype=torch.float64)
        xy = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, per_cell, 2)
        chunks.append(torch.cat([xy, wh.expand(size * size, per_cell, 2)], dim=-1).reshape(-1, 4))
        layer = last
    return torch.cat(chunks).to(torch.float32)
