"""Anchor matching, MediaPipe's box encoding, and the detection loss.

**Encoding** is the exact inverse of :func:`blazeface.ops.boxes.decode_boxes` (MediaPipe's
``TensorsToDetections``): ``raw_x = (x - anchor_x) / anchor_w * scale``, ``raw_w = w / anchor_w * scale``
(no logarithm), keypoints like centres. A trained checkpoint therefore decodes with the unchanged
inference code.

**Matching.** BlazeFace's anchors all have size 1 (``fixed_anchor_size``), so each anchor is given a
*face-sized box*: a box of the face's own width and height centred on the anchor. Its IoU with the face
depends only on the offset relative to the face's size, so faces of every size get a similar number of
anchors. An anchor layer only takes faces in its size range (``face ≥ lo × cell`` unless it is the finest
layer, ``face ≤ hi × cell`` unless it is the coarsest), so the 16×16 and 8×8 grids of the 128-pixel models
share the work as MediaPipe's SSD scales do. Anchors with IoU ≥ ``pos_iou`` are positives, and every face
also gets its best eligible anchor (forced); anchors with IoU < ``neg_iou`` to every face of their layer's
range, and outside every ignored face, are negatives (a face outside a layer's size range is background for that layer); the rest do not count.

**Loss.** Classification: binary cross-entropy with hard-negative mining (``neg_ratio`` negatives per
positive, the hardest) or focal loss. Regression: smooth L1 on the raw outputs' error divided by the face's
size (scale-free), on positives, averaged per face (a small face with 2 positive anchors weighs as much as
a large one with 30); keypoints only where labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import AnchorOptions
from .augment import Target


def encode(boxes: torch.Tensor, keypoints: torch.Tensor, anchors: torch.Tensor, scale: float
           ) -> torch.Tensor:
    """The raw regressors ``[N, 16]`` that :func:`~blazeface.ops.boxes.decode_boxes` decodes to ``boxes``
    (``[N, 4]`` normalized ``x1, y1, x2, y2``) and ``keypoints`` (``[N, 6, 2]``) at ``anchors`` (``[N, 4]``)."""
    axy, awh = anchors[:, :2], anchors[:, 2:]
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    raw_c = (center - axy) / awh * scale
    raw_s = size / awh * scale
    raw_k = (keypoints - axy[:, None]) / awh[:, None] * scale
    return torch.cat([raw_c, raw_s, raw_k.reshape(len(boxes), keypoints.shape[1] * 2)], 1)


def anchor_cells(options: AnchorOptions) -> torch.Tensor:
    """``float32[A]``: the grid cell size (``stride / input``) of each anchor, in MediaPipe's anchor order."""
    from ..ops.anchors import generate_anchors

    cells: list[torch.Tensor] = []
    layer = 0
    n = 0
    while layer < options.num_layers:
        last = layer
        per_cell = 0
        while last < options.num_layers and options.strides[last] == options.strides[layer]:
            per_cell += len(options.aspect_ratios) + (options.interpolated_scale_aspect_ratio > 0)
            last += 1
        grid = math.ceil(options.input_size / options.strides[layer])
        cells.append(torch.full((grid * grid * per_cell,), 1.0 / grid))
        n += grid * grid * per_cell
        layer = last
    out = torch.cat(cells)
    assert len(out) == len(generate_anchors(options))
    return out


@dataclass(frozen=True)
class MatchConfig:
    pos_iou: float = 0.35
    neg_iou: float = 0.25
    #: a layer of cell size ``c`` takes faces of side ``lo * c`` to ``hi * c`` (the finest has no lower
    #: bound, the coarsest no upper bound).
    layer_lo: float = 2.0
    layer_hi: float = 8.0
    #: keep at most this many positives per face (its best by IoU; the others are ignored), ``None``: all.
    max_per_face: int | None = None


@dataclass
class Matches:
    """Per anchor: ``labels`` 1 positive, 0 negative, -1 ignored; ``face`` the matched face (or -1)."""

    labels: torch.Tensor
    face: torch.Tensor


def match_anchors(target: Target | dict, anchors: torch.Tensor, cells: torch.Tensor, cfg: MatchConfig = MatchConfig()
                  ) -> Matches:
    """Assign the faces of one input to anchors (see the module docstring)."""
    boxes = torch.as_tensor(_get(target, "boxes"), dtype=torch.float32, device=anchors.device).reshape(-1, 4)
    ignore = torch.as_tensor(_get(target, "ignore"), dtype=torch.bool, device=anchors.device).reshape(-1)
    a = anchors.shape[0]
    labels = torch.zeros(a, dtype=torch.long, device=anchors.device)
    face = torch.full((a,), -1, dtype=torch.long, device=anchors.device)
    if len(boxes) == 0:
        return Matches(labels, face)
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)  # [G, 2]
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    d = (anchors[:, None, :2] - center[None]).abs()  # [A, G, 2]
    inter = (wh[None] - d).clamp(min=0).prod(-1)
    area = wh.prod(-1)[None]
    iou = inter / (2 * area - inter)  # IoU of the face with a face-sized box at the anchor
    side = wh.prod(-1).sqrt()[None]  # [1, G]
    cell = cells[:, None]
    finest, coarsest = cells.min(), cells.max()
    eligible = ((side >= cfg.layer_lo * cell) | (cell == finest)) & ((side <= cfg.layer_hi * cell) | (cell == coarsest))
    valid = ~ignore
    # negatives: far from every face (any layer) and not inside an ignored face (grown by half a cell)
    inside_ignored = (d <= wh[None] / 2 + cell[..., None] / 2).all(-1) & ignore[None]
    near = torch.where(eligible | ignore[None], iou, torch.zeros_like(iou))  # other layers' faces are background
    negative = (near.max(1).values < cfg.neg_iou) & ~inside_ignored.any(1)
    labels[~negative] = -1
    if valid.any():
        iou_v = torch.where(eligible & valid[None], iou, torch.full_like(iou, -1.0))
        best_iou, best_face = iou_v.max(1)
        pos = best_iou >= cfg.pos_iou
        if cfg.max_per_face is not None:  # only each face's best anchors; the others are ignored
            top = iou_v.topk(min(cfg.max_per_face, a), dim=0).indices  # [k, G]
            in_top = torch.zeros_like(iou_v, dtype=torch.bool).scatter_(0, top, True)
            extra = pos & ~in_top.gather(1, best_face[:, None])[:, 0]
            pos &= ~extra
            labels[extra] = -1
        # every valid face gets its best eligible anchor
        forced = iou_v.argmax(0)  # [G]
        gi = torch.nonzero(valid).reshape(-1)
        pos[forced[gi]] = True
        best_face[forced[gi]] = gi
        labels[pos] = 1
        face[pos] = best_face[pos]
    return Matches(labels, face)


def _get(target: Target | dict, name: str):
    return target[name] if isinstance(target, dict) else getattr(target, name)


@dataclass(frozen=True)
class LossConfig:
    classification: Literal["ohem", "focal"] = "ohem"
    neg_ratio: float = 3.0
    min_negatives: int = 16
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_weight: float = 5.0
    #: weight of a pull keeping the *ignored* anchors' scores (tiny faces, a face's near neighbours: neither
    #: face nor background) at the starting model's: ``Σ KL(σ(start) ‖ σ(logit))`` over them, per positive
    #: (0: off; needs ``start_logits``). Fine-tuning otherwise drifts the scores of what it does not train.
    keep_weight: float = 0.0
    keypoint_weight: float = 1.0
    smooth_l1_beta: float = 0.05


class DetectionLoss(torch.nn.Module):
    """Loss of a batch: ``forward(regressors [B, A, 16], logits [B, A, 1], targets)`` → ``(total, parts)``.

    ``parts`` holds the detached ``cls``, ``box``, ``keypoint`` losses and the mean number of positives.
    """

    def __init__(self, anchor_options: AnchorOptions, scale: float, loss: LossConfig = LossConfig(),
                 match: MatchConfig = MatchConfig()) -> None:
        super().__init__()
        from ..ops.anchors import generate_anchors

        self.register_buffer("anchors", generate_anchors(anchor_options), persistent=False)
        self.register_buffer("cells", anchor_cells(anchor_options), persistent=False)
        self.scale = float(scale)
        self.cfg = loss
        self.match_cfg = match

    def forward(self, regressors: torch.Tensor, logits: torch.Tensor, targets: list[Target | dict],
                start_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``start_logits`` (``[B, A, 1]``, the starting model's on the same inputs) enable ``keep_weight``."""
        regressors = regressors.float()
        logits = logits.float()[..., 0]
        device = regressors.device
        labels, reg_t, reg_p, rel, kp_m, weight = [], [], [], [], [], []
        num_faces = 0
        for b, target in enumerate(targets):
            m = match_anchors(target, self.anchors, self.cells, self.match_cfg)
            labels.append(m.labels)
            idx = torch.nonzero(m.labels == 1).reshape(-1)
            if len(idx):
                faces = m.face[idx]
                boxes = torch.as_tensor(_get(target, "boxes"), dtype=torch.float32, device=device)[faces]
                kps = torch.as_tensor(_get(target, "keypoints"), dtype=torch.float32, device=device)[faces]
                mask = torch.as_tensor(_get(target, "keypoint_mask"), dtype=torch.bool, device=device)[faces]
                reg_t.append(encode(boxes, kps, self.anchors[idx], self.scale))
                reg_p.append(regressors[b, idx])
                wh = boxes[:, 2:] - boxes[:, :2]
                rel.append(wh.prod(-1).clamp(min=1e-8).sqrt() * self.scale / self.anchors[idx, 2])
                kp_m.append(mask)
                counts = torch.bincount(faces)
                weight.append(1.0 / counts[faces].float())  # every face weighs the same, whatever its anchors
                num_faces += int((counts > 0).sum())
        labels_t = torch.stack(labels)
        num_pos = max(int((labels_t == 1).sum()), 1)
        cls = self._classification(logits, labels_t) / num_pos
        if reg_t:
            t, p = torch.cat(reg_t), torch.cat(reg_p)
            err = (p - t) / torch.cat(rel)[:, None]  # error relative to the face's size
            per = F.smooth_l1_loss(err, torch.zeros_like(err), reduction="none", beta=self.cfg.smooth_l1_beta)
            per = per * torch.cat(weight)[:, None]
            box = per[:, :4].sum() / max(num_faces, 1)
            mask = torch.cat(kp_m).repeat_interleave(2, dim=1).float()
            kp_faces = (torch.cat(weight) * torch.cat(kp_m).any(1).float()).sum()
            kp = (per[:, 4:] * mask).sum() / kp_faces.clamp(min=1.0)
        else:
            box = kp = regressors.sum() * 0.0
        total = cls + self.cfg.box_weight * box + self.cfg.keypoint_weight * kp
        parts = {"cls": float(cls.detach()), "box": float(box.detach()), "keypoint": float(kp.detach()),
                 "positives": float((labels_t == 1).sum()) / len(targets)}
        if self.cfg.keep_weight > 0 and start_logits is not None:
            keep = ignored_score_drift(logits, start_logits.float()[..., 0], labels_t == -1) / num_pos
            total = total + self.cfg.keep_weight * keep
            parts["keep"] = float(keep.detach())
        return total, parts

    def _classification(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = (labels == 1).float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.cfg.classification == "focal":
            p = torch.sigmoid(logits)
            pt = torch.where(labels == 1, p, 1 - p)
            alpha = torch.where(labels == 1, self.cfg.focal_alpha, 1 - self.cfg.focal_alpha)
            loss = alpha * (1 - pt) ** self.cfg.focal_gamma * bce
            return (loss * (labels >= 0)).sum()
        if self.cfg.classification != "ohem":
            raise ValueError(f"unknown classification loss {self.cfg.classification!r}; expected 'ohem' or 'focal'")
        pos = labels == 1
        neg = labels == 0
        loss = bce[pos].sum()
        neg_loss = torch.where(neg, bce, torch.full_like(bce, -1.0))
        for b in range(labels.shape[0]):  # hardest negatives, per image
            k = int(min(max(self.cfg.neg_ratio * int(pos[b].sum()), self.cfg.min_negatives), int(neg[b].sum())))
            if k > 0:
                loss = loss + torch.topk(neg_loss[b], k).values.sum()
        return loss


def ignored_score_drift(logits: torch.Tensor, start_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ KL(Bernoulli(σ(start)) ‖ Bernoulli(σ(logit)))`` over the anchors in ``mask`` (all ``[B, A]``): zero
    where the scores equal the starting ones; its gradient is ``σ(logit) − σ(start)``."""
    p0 = torch.sigmoid(start_logits)
    kl = (F.binary_cross_entropy_with_logits(logits, p0, reduction="none")
          - F.binary_cross_entropy_with_logits(start_logits, p0, reduction="none"))
    return (kl * mask).sum()
