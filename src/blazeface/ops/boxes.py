"""Stateless box operations: decoding raw regressors against anchors, IoU, format conversion.

Boxes are ``(x1, y1, x2, y2)`` unless a name says otherwise; keypoints are ``(x, y)``.
"""

from __future__ import annotations

import torch

from ..nn.blazenet import NUM_COORDS

NUM_KEYPOINTS = (NUM_COORDS - 4) // 2


def decode_boxes(
    regressors: torch.Tensor, anchors: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode raw regressors as MediaPipe's ``TensorsToDetectionsCalculator`` (no exponential on sizes).

    Args:
        regressors: ``Tensor[..., A, 16]``: box ``x_center, y_center, w, h`` then 6 keypoints ``x, y``,
            in input pixels relative to the anchor.
        anchors: ``Tensor[A, 4]`` as ``(x_center, y_center, w, h)``, normalized.
        scale: MediaPipe's ``x_scale = y_scale = w_scale = h_scale`` (the input size).

    Returns:
        ``boxes: Tensor[..., A, 4]`` as normalized ``(x1, y1, x2, y2)`` and
        ``keypoints: Tensor[..., A, 6, 2]`` normalized, both in the network input's frame.
    """
    anchor_xy = anchors[:, :2]
    anchor_wh = anchors[:, 2:]
    center = regressors[..., 0:2] / scale * anchor_wh + anchor_xy
    size = regressors[..., 2:4] / scale * anchor_wh
    boxes = torch.cat([center - size / 2, center + size / 2], dim=-1)
    kp = regressors[..., 4:].reshape(*regressors.shape[:-1], NUM_KEYPOINTS, 2)
    keypoints = kp / scale * anchor_wh.unsqueeze(-2) + anchor_xy.unsqueeze(-2)
    return boxes, keypoints


def scores_from_logits(logits: torch.Tensor, clip: float = 100.0) -> torch.Tensor:
    """``sigmoid(clip(logit, -clip, clip))``: ``Tensor[..., A, 1]`` → ``Tensor[..., A]``."""
    return torch.sigmoid(logits.clamp(-clip, clip)).squeeze(-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of ``Tensor[N, 4]`` boxes in ``(x1, y1, x2, y2)``; 0 for empty boxes."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``Tensor[N, M]`` of ``(x1, y1, x2, y2)`` boxes; 0 where either is empty or they are disjoint."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` → ``(x1, y1, w, h)``."""
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` → ``(cx, cy, w, h)``."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)
