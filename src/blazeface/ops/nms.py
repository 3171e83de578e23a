"""Non-maximum suppression: MediaPipe's weighted ("blending") NMS and plain hard NMS."""

from __future__ import annotations

from typing import Literal, NamedTuple

from ._array import Array, argsort_desc, first_true, xp
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
    out_boxes, out_scores, out_kps = [], [], []
    limit = n if max_detections is None else min(n, max_detections)
    left = n
    while left > 0 and len(out_scores) < limit:
        top = first_true(remaining)
        members = remaining & overlaps[top]
        count = int(members.sum())
        if mode == "weighted" and count > 0:
            w = scores * members  # the members' scores, 0 elsewhere
            total = w.sum()
            out_boxes.append((w[:, None] * boxes).sum(0) / total)
            out_kps.append((w[:, None, None] * keypoints).sum(0) / total)
        else:
            out_boxes.append(boxes[top])
            out_kps.append(keypoints[top])
        out_scores.append(scores[top])
        if count == 0:
            break
        remaining = remaining & ~members
        left -= count
    return Suppressed(m.stack(out_boxes), m.stack(out_scores), m.stack(out_kps))
