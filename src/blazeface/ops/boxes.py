"""Stateless box operations: decoding raw regressors against anchors, IoU, format conversion.

Boxes are ``(x1, y1, x2, y2)`` unless a name says otherwise; keypoints are ``(x, y)``. Every function
takes numpy arrays or torch tensors (on any device) and returns the same kind.
"""

from __future__ import annotations

from ..nn.blazenet import NUM_COORDS
from ._array import Array, clamp, clamp_min, concat, sigmoid, xp

NUM_KEYPOINTS = (NUM_COORDS - 4) // 2


def decode_boxes(regressors: Array, anchors: Array, scale: float) -> tuple[Array, Array]:
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
    anchor_xy = anchors[:, None, :2]
    # every (x, y) pair — centre, size, keypoints — in normalized units: one broadcast for all 8 pairs
    pairs = regressors.reshape(*regressors.shape[:-1], NUM_COORDS // 2, 2) / scale * anchors[:, None, 2:]
    center = pairs[..., 0, :] + anchor_xy[:, 0]
    half = pairs[..., 1, :] / 2
    boxes = concat([center - half, center + half], -1)
    keypoints = pairs[..., 2:, :] + anchor_xy
    return boxes, keypoints


def scores_from_logits(logits: Array, clip: float = 100.0) -> Array:
    """``sigmoid(clip(logit, -clip, clip))``: ``[..., A, 1]`` → ``[..., A]``."""
    return sigmoid(clamp(logits, -clip, clip))[..., 0]


def box_area(boxes: Array) -> Array:
    """Area of ``[N, 4]`` boxes in ``(x1, y1, x2, y2)``; 0 for empty boxes."""
    wh = clamp_min(boxes[:, 2:] - boxes[:, :2], 0)
    return wh[:, 0] * wh[:, 1]


def box_iou(boxes1: Array, boxes2: Array) -> Array:
    """Pairwise IoU ``[N, M]`` of ``(x1, y1, x2, y2)`` boxes; 0 where either is empty or they are disjoint."""
    m = xp(boxes1)
    area1 = box_area(boxes1)
    area2 = area1 if boxes2 is boxes1 else box_area(boxes2)
    a, b = boxes1.T[:, :, None], boxes2.T[:, None, :]  # [4, N, 1], [4, 1, M]: x and y apart, no [N, M, 2] temporaries
    w = clamp_min(m.minimum(a[2], b[2]) - m.maximum(a[0], b[0]), 0)
    inter = w * clamp_min(m.minimum(a[3], b[3]) - m.maximum(a[1], b[1]), 0)
    union = area1[:, None] + area2[None, :] - inter
    tiny = float(m.finfo(union.dtype).tiny)
    return m.where(union > 0, inter / clamp_min(union, tiny), m.zeros_like(inter))


def xyxy_to_xywh(boxes: Array) -> Array:
    """``(x1, y1, x2, y2)`` → ``(x1, y1, w, h)``."""
    return concat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], -1)


def xyxy_to_cxcywh(boxes: Array) -> Array:
    """``(x1, y1, x2, y2)`` → ``(cx, cy, w, h)``."""
    return concat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)
