"""Replay tiled merge rules on cached tile candidates (see ``tiling_diagnose.py``)."""

from __future__ import annotations

import ast

import numpy as np

from blazeface.ops.boxes import box_iou
from blazeface.ops.nms import non_max_suppression
from blazeface.registry import get_config
from blazeface.tiling import MODEL_FACE_RANGE, _cut_by_border


def parse(rule: str) -> dict:
    if rule == "default":
        return {}
    out = {}
    for part in rule.split(","):
        k, _, v = part.partition("=")
        out[k] = ast.literal_eval(v) if v else True
    return out


def replay(data: dict, model: str, rule: str = "default") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(dets, levels)``: per image key ``[N, 5]`` ``x, y, w, h, score`` and the level of each merged
    detection's leader."""
    o = parse(rule)
    cfg = get_config(model)
    iou_tile = o.get("tile_iou", cfg.min_suppression)
    iou_merge = o.get("merge_iou", cfg.min_suppression)
    margin = o.get("margin", 0.05)
    lo, hi = MODEL_FACE_RANGE[model]
    dets, levels = {}, {}
    for key, item in data.items():
        tiles, cands = item["tiles"], item["cands"]
        nlev = max(t.level for t in tiles)
        B, S, K, L = [], [], [], []
        for tile, (boxes, scores, kps) in zip(tiles, cands):
            if len(scores) == 0:
                continue
            if "blend_rel" in o:
                b, s, k = nms_rel(boxes, scores, kps, iou_tile, o["blend_rel"])
            else:
                sup = non_max_suppression(boxes, scores, kps, iou_tile, o.get("tile_nms", "weighted"))
                b, s, k = sup.boxes, sup.scores, sup.keypoints
            keep = ~_cut_by_border(b, tile, margin)
            size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
            if "band_lo" in o and tile.level < nlev:  # face smaller than the band: a finer level sees it
                keep &= size >= o["band_lo"] * lo
            if "band_hi" in o and tile.level > 0:  # larger than the band: a coarser level sees it
                keep &= size <= o["band_hi"] * hi
            b, s, k = b[keep], s[keep], k[keep]
            if "small_px" in o:  # faces under small_px network-input pixels: score × sqrt(size / small_px)
                px = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 0) * tile.region.size
                s = s * np.sqrt(np.minimum(px / o["small_px"], 1.0))
            if "gamma" in o:  # faces below the band: scores shrink with (size / edge) ** gamma
                rel = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 0) / (o.get("edge", 1.0) * lo)
                s = s * np.minimum(rel, 1.0) ** o["gamma"]
            r = tile.region
            B.append(r.to_image(b.reshape(-1, 2, 2)).reshape(-1, 4))
            S.append(s)
            K.append(r.to_image(k))
            L.append(np.full(len(s), tile.level))
        if not B or sum(len(s) for s in S) == 0:
            dets[key], levels[key] = np.zeros((0, 5)), np.zeros(0, int)
            continue
        b, s, k, lv = map(np.concatenate, (B, S, K, L))
        if "merge_rel" in o:
            mb, ms, _ = nms_rel(b, s, k, iou_merge, o["merge_rel"])
        else:
            sup = non_max_suppression(b, s, k, iou_merge, o.get("merge", "weighted"))
            mb, ms = sup.boxes, sup.scores
        # level of the leader: the candidate with that score and the highest IoU
        iou = box_iou(mb.astype(np.float64), b.astype(np.float64))
        lead = np.argmax(np.where(np.isclose(s[None], ms[:, None]), iou, -1), axis=1)
        if o.get("fuse"):  # score from the cluster: noisy-or / mean / count of supporters
            member = iou > iou_merge
            if o["fuse"] == "noisyor":
                ms = 1 - np.prod(np.where(member, 1 - s[None], 1.0), axis=1)
            elif o["fuse"] == "levels":  # mean over the levels that can see the face of its best score there
                ms = fuse_levels(mb, ms, b, s, lv, member, tiles, lo * o.get("vis_lo", 1.0), hi * o.get("vis_hi", 1.0),
                                 margin, o.get("how", "mean"))
            elif o["fuse"] == "support":
                ms = ms * (1 + o.get("alpha", 0.1) * (member.sum(1) - 1)) / (1 + o.get("alpha", 0.1) * 10)
        dets[key] = np.concatenate([mb[:, :2], mb[:, 2:] - mb[:, :2], ms[:, None]], 1).astype(np.float64)
        levels[key] = lv[lead]
    return dets, levels


def nms_rel(boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray, iou_threshold: float, rel: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted NMS whose blend takes only the cluster members scoring at least ``rel`` × the leader's score
    (the whole cluster is still suppressed)."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, kps = boxes[order], scores[order], kps[order]
    over = box_iou(boxes, boxes) > iou_threshold
    left = np.ones(len(scores), bool)
    B, S, K = [], [], []
    while left.any():
        top = int(np.argmax(left))
        members = left & over[top]
        if not members.any():
            members = np.zeros_like(left); members[top] = True
        w = np.where(members & (scores >= rel * scores[top]), scores, 0.0)
        w[top] = scores[top]
        B.append((w[:, None] * boxes).sum(0) / w.sum())
        K.append((w[:, None, None] * kps).sum(0) / w.sum())
        S.append(scores[top])
        left &= ~members
    return np.array(B, np.float32), np.array(S, np.float32), np.array(K, np.float32)


def fuse_levels(mb, ms, b, s, lv, member, tiles, lo, hi, margin, how="mean"):
    """Scores of the merged boxes ``mb`` [K, 4] (image px): over the levels where a tile holds the box whole
    (not cut by an interior border) at a size within ``[lo, hi]`` of the tile side, the best member score found
    at that level (0 if none), averaged; boxes no level sees keep their score."""
    levels = sorted({t.level for t in tiles})
    vis = np.zeros((len(mb), len(levels)), bool)
    for t in tiles:
        r = t.region
        nb = (mb - np.array([r.x0, r.y0, r.x0, r.y0])) / r.side
        size = np.maximum(nb[:, 2] - nb[:, 0], nb[:, 3] - nb[:, 1])
        inside = (nb[:, 0] > -0.02) & (nb[:, 1] > -0.02) & (nb[:, 2] < 1.02) & (nb[:, 3] < 1.02)
        ok = inside & ~_cut_by_border(nb, t, margin) & (size >= lo) & (size <= hi)
        vis[:, levels.index(t.level)] |= ok
    best = np.stack([np.where(member & (lv == L)[None], s[None], 0).max(1) for L in levels], 1)
    n = vis.sum(1)
    if how == "mean":
        fused = (best * vis).sum(1) / np.maximum(n, 1)
    elif how == "max_mean":  # mean of own and the fused
        fused = 0.5 * (ms + (best * vis).sum(1) / np.maximum(n, 1))
    else:
        fused = np.exp((np.log(np.maximum(best, 1e-3)) * vis).sum(1) / np.maximum(n, 1))
    return np.where(n > 0, fused, ms)
