"""Where tiled AP is lost (issue 5): run every tile of the default plan once per image, keep each tile's
candidates (before per-tile NMS), then replay merge rules offline and classify the false positives.

    python benchmarks/tiling_diagnose.py --models full_range_sparse short_range --cache /tmp/tiles

The cache (one pickle per model) holds, per image and tile, the candidates above 0.05 (best ``max_candidates``),
in tile-normalized ``x1, y1, x2, y2``, with scores and keypoints, so a merge rule replays in seconds.
Reports, per half of the event split (``tune_tiling.event_halves``), the AP of the replayed default (which
must equal ``tiling="auto"``'s) and, for the easy setting, what the highest-scoring false positives are: a
duplicate of a found face, a poorly localized face (IoU 0.3–0.5 with a face of the setting), a half face at a
tile border, or background; and at which level they were found.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from blazeface import FaceDetector  # noqa: E402
from blazeface.eval import evaluate, read_annotations_json  # noqa: E402
from blazeface.eval.protocol import box_iou_xywh, match_image  # noqa: E402
from blazeface.io import read_image  # noqa: E402
from blazeface.ops.boxes import decode_boxes, scores_from_logits  # noqa: E402
from blazeface.tiling import TileConfig, _forward, plan_tiles, tile_batch  # noqa: E402
from tune_tiling import event_halves  # noqa: E402


def collect(model: str, gt, config: TileConfig) -> dict:
    """Per image key: ``tiles`` (the plan) and ``cands`` (per tile: boxes [K, 4] tile-normalized, scores [K],
    keypoints [K, P, 2] tile-normalized)."""
    det = FaceDetector(model, device="cpu", min_score=0.05, tiling=config, threads=1)
    out = {}
    for key in sorted(gt.images):
        img = read_image(gt.image_path(key))
        h, w = img.shape[:2]
        tiles = plan_tiles(w, h, det.input_size, model, config)
        cands = []
        for start in range(0, len(tiles), 16):
            part = tiles[start:start + 16]
            reg, lg = _forward(det, *tile_batch(det, img, part), det.forward)
            reg, lg = reg.numpy(), lg.numpy()
            for b in range(len(part)):
                s = scores_from_logits(lg[b], det.config.score_clip)
                idx = np.flatnonzero(s >= 0.05)
                idx = idx[np.argsort(-s[idx], kind="stable")[:config.max_candidates]]
                boxes, kps = decode_boxes(reg[b, idx], det._anchors_np[idx], det.config.box_scale)
                cands.append((np.asarray(boxes), np.asarray(s[idx]), np.asarray(kps)))
        out[key] = {"tiles": tiles, "cands": cands, "size": (w, h)}
    return out


def load_or_collect(model: str, gt, cache: Path, config: TileConfig | None = None) -> dict:
    path = cache / f"{model}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    data = collect(model, gt, config or TileConfig())
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return data


def ap_halves(gt, dets: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    keys = sorted(gt.images)
    tuning, held = event_halves([gt.images[k].path or k for k in keys])
    by_path = {gt.images[k].path or k: k for k in keys}
    halves = {"tuning": [by_path[p] for p in tuning], "held_back": [by_path[p] for p in held], "all": keys}
    return {h: {s: round(float(v), 3) for s, v in evaluate(gt.subset(ks), {k: dets[k] for k in ks}).ap.items()}
            for h, ks in halves.items()}


def fmt(res: dict[str, dict[str, float]]) -> str:
    return " | ".join(f"{h} {r['easy']:.3f} {r['medium']:.3f} {r['hard']:.3f}" for h, r in res.items())


def classify_easy_fps(gt, dets: dict[str, np.ndarray], info: dict[str, np.ndarray], top: int = 400) -> dict:
    """The ``top`` highest-scoring counted detections of the easy setting (scores min-max normalized as the
    protocol does), false positives classified; ``info[key]`` is an int level per detection (-1 unknown)."""
    rows = []
    for key, image in gt.images.items():
        d = dets.get(key)
        if d is None or len(d) == 0 or len(image.boxes) == 0:
            continue
        order = np.argsort(-d[:, 4], kind="stable")
        d = d[order]
        lev = info[key][order]
        keep = image.keep("easy")
        counted, tp = match_image(d, image.boxes, keep)
        iou = box_iou_xywh(d[:, :4], image.boxes)
        for i in np.flatnonzero(counted):
            if tp[i]:
                kind = "tp"
            else:
                best = iou[i].argmax()
                ious_keep = np.where(keep, iou[i], 0)
                if iou[i, best] >= 0.5:
                    kind = "duplicate"
                elif ious_keep.max() >= 0.3:
                    kind = "loose easy face"
                elif iou[i].max() >= 0.3:
                    kind = "loose other face"
                else:
                    # part of a face: inside a face box (half face) or covering several
                    inter = _inside_fraction(d[i, :4], image.boxes)
                    kind = "part of a face" if inter.max() > 0.7 else "background"
            rows.append((d[i, 4], kind, int(lev[i]), float(d[i, 2])))
    rows.sort(key=lambda r: -r[0])
    out: dict = {}
    for cut in (50, 100, 200, top):
        sel = rows[:cut]
        out[cut] = {k: sum(1 for r in sel if r[1] == k) for k in
                    ("tp", "duplicate", "loose easy face", "loose other face", "part of a face", "background")}
    fps = [r for r in rows[:top] if r[1] != "tp"]
    out["fp_levels"] = {lv: sum(1 for r in fps if r[2] == lv) for lv in sorted({r[2] for r in fps})}
    return out


def _inside_fraction(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Fraction of ``box`` (x, y, w, h) inside each face box."""
    x2, y2 = box[0] + box[2], box[1] + box[3]
    iw = np.minimum(x2, gts[:, 0] + gts[:, 2]) - np.maximum(box[0], gts[:, 0])
    ih = np.minimum(y2, gts[:, 1] + gts[:, 3]) - np.maximum(box[1], gts[:, 1])
    return np.clip(iw, 0, None) * np.clip(ih, 0, None) / max(box[2] * box[3], 1e-9)


def main(argv: list[str] | None = None) -> int:
    from tiling_replay import replay  # the merge rules under test

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wider_val_dev"))
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--cache", default="/tmp/tiles")
    p.add_argument("--rules", nargs="+", default=["default"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    gt = read_annotations_json(Path(args.data) / "annotations.json")
    for model in args.models:
        data = load_or_collect(model, gt, Path(args.cache))
        for rule in args.rules:
            dets, levels = replay(data, model, rule)
            print(f"{model:18s} {rule:30s} {fmt(ap_halves(gt, dets))}", flush=True)
            print("   ", classify_easy_fps(gt, dets, levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
