"""Non-maximum suppression: MediaPipe's weighted ("blending") NMS and plain hard NMS."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from .boxes import box_iou

NMSMode = Literal["weighted", "hard"]


class Suppressed(NamedTuple):
    """NMS output for one image: ``boxes: Tensor[K, 4]``, ``scores: Tensor[K]``, ``keypoints: Tensor[K, P, 2]``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints: torch.Tensor


def non_max_suppression(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    keypoints: torch.Tensor,
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
    MediaPipe. The loop runs once per *output* face; IoU is computed once, vectorized.

    Args:
        boxes: ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)``.
        scores: ``Tensor[N]``.
        keypoints: ``Tensor[N, P, 2]``.
    """
    if mode not in ("weighted", "hard"):
        raise ValueError(f"unknown NMS mode {mode!r}; expected 'weighted' or 'hard'")
    n = scores.shape[0]
    if n == 0:
        return Suppressed(boxes[:0], scores[:0], keypoints[:0])
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    overlaps = box_iou(boxes, boxes) > iou_threshold
    remaining = torch.ones(n, dtype=torch.bool, device=scores.device)
    out_boxes, out_scores, out_kps = [], [], []
    limit = n if max_detections is None else min(n, max_detections)
    remaining_cpu = n
    while remaining_cpu > 0 and len(out_scores) < limit:
        top = int(torch.argmax(remaining.to(torch.uint8)))
        members = remaining & overlaps[top]
        count = int(members.sum())
        if mode == "weighted" and count > 0:
            w = torch.where(members, scores, torch.zeros_like(scores))
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
        remaining_cpu -= count
    return Suppressed(torch.stack(out_boxes), torch.stack(out_scores), torch.stack(out_kps))
