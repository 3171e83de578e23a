"""``blazeface eval``: score detections (or run a model) on WIDER FACE-style ground truth or FDDB."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

EVAL_MIN_SCORE = 0.05


def add_eval_parser(sub: Any) -> None:
    """Register the ``eval`` subcommand on the ``blazeface`` parser's subparsers."""
    from ..registry import list_models

    e = sub.add_parser(
        "eval", help="WIDER FACE AP (easy/medium/hard) or FDDB ROC of a model or a detections file",
        description="Score face detections with the WIDER FACE protocol (IoU >= 0.5, easy/medium/hard, ignored "
                    "faces neither help nor hurt, VOC-interpolated AP over the toolbox's 1000 score cut-offs). "
                    "Either run --model over the ground truth's images, or score --detections.")
    e.add_argument("ground_truth", help="annotations.json (shared WIDER JSON), wider_face_val_bbx_gt.txt, "
                   "a folder with the official .mat files, a COCO json, or an FDDB ellipseList (with --fddb)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=list_models() + ["front", "full"], help="run this model over the images")
    src.add_argument("--detections", help="detections to score: our --jsonl output, MediaPipe's reference JSON, "
                     "a toolbox prediction folder, COCO results json, or FDDB output (with --fddb)")
    e.add_argument("--mediapipe-model", help="which model's entries to read from a MediaPipe reference JSON")
    e.add_argument("--images", help="image folder (default: the ground truth's, e.g. images/ beside annotations.json)")
    e.add_argument("--tile", nargs="?", const="auto", choices=["auto", "off"], default="off",
                   help="multi-scale tiled inference with --model (default: off)")
    e.add_argument("--min-score", type=float, default=None,
                   help=f"score threshold with --model (default: {EVAL_MIN_SCORE}; evaluation wants the whole curve)")
    e.add_argument("--weights", help="a .safetensors file for --model")
    e.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    e.add_argument("--limit", type=int, help="only the first N images (sorted by name)")
    e.add_argument("--toolbox-iou", action="store_true",
                   help="the official toolbox's +1-pixel IoU (default: continuous boxes)")
    e.add_argument("--box-style", choices=["blazeface", "wider"], default="blazeface",
                   help="'wider': reshape boxes to WIDER FACE's annotation style before matching (see "
                        "blazeface.eval.data.WIDER_BOX_STYLE); default: the boxes as detected")
    e.add_argument("--exact-curve", action="store_true",
                   help="a cut-off at every distinct score instead of the toolbox's 1000")
    e.add_argument("--json", dest="json_out", help="write the results (AP, counts, PR curves) as JSON here")
    e.add_argument("--plot", help="write the PR curves as a PNG here (needs matplotlib: blazeface[eval])")
    e.add_argument("--save-detections", help="with --model: write the detections as JSON lines here")
    e.add_argument("--fddb", action="store_true", help="the ground truth is an FDDB ellipseList: discrete ROC")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_eval)


def _detector(args: argparse.Namespace):
    from ..detector import FaceDetector

    min_score = EVAL_MIN_SCORE if args.min_score is None else args.min_score
    return FaceDetector(args.model, device=args.device, min_score=min_score, weights=args.weights, tiling=args.tile)


def _run_fddb(args: argparse.Namespace, stdout: TextIO) -> int:
    from .fddb import evaluate_fddb, read_fddb_detections, read_fddb_ellipses

    ellipses = read_fddb_ellipses(args.ground_truth)
    if args.detections:
        dets = read_fddb_detections(args.detections)
    else:
        if not args.images:
            print("blazeface eval: --fddb with --model needs --images (the folder holding 2002/, 2003/)", file=sys.stderr)
            return 2
        import torch

        from ..io import read_image

        det = _detector(args)
        dets = {}
        for name in ellipses:
            img = torch.from_numpy(read_image(Path(args.images) / f"{name}.jpg").copy()).to(det.device)
            r = det.detect_tensors([img], [name])[0]
            dets[name] = np.concatenate([r.xywh, r.scores[:, None]], axis=1)
    res = evaluate_fddb(ellipses, dets)
    summary = {f"tpr_at_{fp}_fp": round(res.tpr_at(fp), 4) for fp in (10, 50, 100, 500, 1000, 2000)}
    print(f"FDDB discrete ROC, {res.num_faces} faces: " + ", ".join(f"{k} {v}" for k, v in summary.items()), file=stdout)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"faces": res.num_faces, **summary,
                                                   "tpr": res.tpr.round(5).tolist(),
                                                   "false_positives": res.false_positives.tolist()}) + "\n")
    return 0


def run_eval(args: argparse.Namespace, stdout: TextIO) -> int:
    from .data import read_detections, read_ground_truth, to_wider_style
    from .protocol import evaluate
    from .report import format_table, plot_pr, write_json

    if args.fddb:
        return _run_fddb(args, stdout)
    gt = read_ground_truth(args.ground_truth, args.images)
    if args.limit:
        gt = gt.subset(sorted(gt.images)[:args.limit])
    extra: dict[str, dict[str, str]] = {}
    if args.detections:
        dets = read_detections(args.detections, args.mediapipe_model, gt)
        name = Path(args.detections).name + (f" ({args.mediapipe_model})" if args.mediapipe_model else "")
    else:
        from tqdm import tqdm

        from .runner import run_detector

        det = _detector(args)
        bar = tqdm(total=len(gt), unit="img", desc=f"eval ({det.model_name})", file=sys.stderr,
                   disable=args.quiet or None)
        run = run_detector(det, gt, progress=lambda i, n: bar.update(1))
        bar.close()
        dets = run.detections
        name = f"{det.model_name}" + (" tiled" if det.tiling else "") + f" (min score {det.min_score:g})"
        extra[name] = {"ms / image": f"{run.ms_per_image:.0f}"}
        if args.save_detections:
            with open(args.save_detections, "w", encoding="utf-8") as f:
                for rec in run.records:
                    f.write(json.dumps(rec) + "\n")
    if args.box_style == "wider":
        dets = to_wider_style(dets)
        name += " [WIDER-style boxes]"
    result = evaluate(gt, dets, thresholds=None if args.exact_curve else 1000,
                      pixel_offset=1.0 if args.toolbox_iou else 0.0)
    print(format_table({name: result}, extra), file=stdout)
    for s, r in result.settings.items():
        print(f"{s}: {r.num_found} of {r.num_faces} faces found, {r.num_detections} detections counted", file=stdout)
    if args.json_out:
        write_json(args.json_out, {name: result})
    if args.plot:
        plot_pr(args.plot, {name: result}, Path(args.ground_truth).parent.name)
    return 0
