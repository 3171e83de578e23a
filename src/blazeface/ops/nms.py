"""Non-maximum suppression: MediaPipe's weighted ("blending") NMS and plain hard NMS."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from ._array import Array, argsort_desc, concat, first_true, xp
from .boxes import box_iou

NMSMode = Literal["weighted", "hard"]


class Suppressed(NamedTuple):
    """NMS output for one image: ``boxes [K, 4]``, ``scores [K]``, ``keypoints [K, P, 2]``."""

    boxes: Array
    scores: Array
    keypoints: Array


def non_max_suppression(
    boxes: Array,
    scores: Array,
    keypoints: Array,
    iou_threshold: float = 0.3,
    mode: NMSMode = "weighted",
    max_detections: int | None = None,
) -> Suppressed:
    """Suppress overlapping detections of one image, as MediaPipe's ``NonMaxSuppressionCalculator``.

    Candidates are taken by descending score. The top one ``D`` gathers every remaining candidate
    whose IoU with it is strictly above ``iou_threshold`` (``D`` included). ``"weighted"``: the output
    box corners and keypoints are the score-weighted mean of that cluster and the output score is
    ``D``'s own; ``"hard"``: ``D`` is output unchanged. The cluster leaves the candidates. If ``D``
    joins no cluster (an empty box, IoU 0 with itself) it is output and suppression stops, as in
    MediaPipe. The loop runs once per *output* face; IoU is computed once, vectorized. Works on numpy
    arrays or torch tensors (any device) and returns the same kind.

    Args:
        boxes: ``[N, 4]`` in ``(x1, y1, x2, y2)``.
        scores: ``[N]``.
        keypoints: ``[N, P, 2]``.
    """
    if mode not in ("weighted", "hard"):
        raise ValueError(f"unknown NMS mode {mode!r}; expected 'weighted' or 'hard'")
    m = xp(scores)
    n = scores.shape[0]
    if n == 0:
        return Suppressed(boxes[:0], scores[:0], keypoints[:0])
    order = argsort_desc(scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    overlaps = box_iou(boxes, boxes) > iou_threshold
    remaining = m.ones_like(overlaps[0])  # all True, same kind and device
    tops: list[int] = []
    clusters = []
    limit = n if max_detections is None else min(n, max_detections)
    left = n
    while left > 0 and len(tops) < limit:  # only the cluster choice is sequential
        top = first_true(remaining)
        members = remaining & overlaps[top]
        tops.append(top)
        clusters.append(members)
        count = int(members.sum())
        if count == 0:
            break
        remaining = remaining & ~members
        left -= count
    leaders = m.asarray(tops) if m is np else torch.tensor(tops, device=scores.device)
    out_scores = scores[leaders]
    if mode == "hard":
        return Suppressed(boxes[leaders], out_scores, keypoints[leaders])
    coords = concat([boxes, keypoints.reshape(n, -1)], -1)  # [N, 4 + 2P]
    weights = m.stack(clusters) * scores  # [K, N]: each cluster's members' scores, 0 elsewhere
    if count == 0:  # the last leader joined no cluster (an empty box): output as it is (weight 1 on itself)
        weights[-1, tops[-1]] = 1.0
    blended = _weighted_sums(weights, coords) / weights.sum(1)[:, None]
    return Suppressed(blended[:, :4], out_scores, blended[:, 4:].reshape(-1, *keypoints.shape[1:]))


def _weighted_sums(weights: Array, values: Array) -> Array:
    """``[K, D]``: ``Σ_n weights[k, n] · values[n]``, accumulated over ``n`` in order (as MediaPipe's loop does), a
    block of clusters at a time so that the ``[k, N, D]`` products stay small."""
    step = max(1, (1 << 20) // max(1, values.shape[0] * values.shape[1]))
    if weights.shape[0] <= step:
        return (weights[:, :, None] * values[None]).sum(1)
    parts = [(weights[i:i + step, :, None] * values[None]).sum(1) for i in range(0, weights.shape[0], step)]
    return concat(parts, 0)
