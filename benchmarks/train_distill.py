"""Distillation: the paper's model trained from scratch on a teacher's pseudo-labels (boxes + 6 keypoints).

    python benchmarks/train_distill.py [--teacher full_range] [--tiles 2] [--epochs 36] [--repeats 20]
        [--zoom-prob 0.9] [--tiling auto] [--out runs/train_distill]

Images: everything available here: ``wider_val_dev`` (135), the fixtures (4) and the seed images (3). The teacher
labels them all (whole image plus a ``tiles×tiles`` grid of overlapping squares, merged by weighted NMS; faces
at the teacher's threshold are labels, those within 0.25 below it are ignored). Split: the WIDER events held back
by ``split_by_event`` (``2--Demonstration``, ``6--Funeral``) are the test images; the other events, the fixtures
and the seed images are trained on. Reports the student's AP against the teacher's labels and its keypoint error
(mean distance over the face's size) on the held-back and the training images, the student run with ``--tiling``
(as a 128-pixel model is run on large photos; also on faces within the tiling's reach, and without tiling), with
the curves that the Trainer writes (``OUT/log.csv``, ``OUT/losses.png``, ``OUT/val_ap.png``), to ``OUT/report.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from blazeface.train import Sample

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def keep_scores(detections: tuple[np.ndarray, np.ndarray, np.ndarray], min_score: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections scoring at least ``min_score``."""
    keep = detections[1] >= min_score
    return detections[0][keep], detections[1][keep], detections[2][keep]


def within_reach(sample: "Sample", model: str) -> "Sample":
    """``sample`` with the faces too small for ``model`` under default tiling ignored: below the model's
    smallest face (``MODEL_FACE_RANGE``'s ``lo``) on the image's smallest tile."""
    import dataclasses

    from blazeface.registry import get_config
    from blazeface.tiling import MODEL_FACE_RANGE, plan_tiles

    w, h = sample.size
    smallest = min(t.region.side for t in plan_tiles(w, h, get_config(model).input_size, model))
    side = np.sqrt(np.prod(np.clip(sample.boxes[:, 2:] - sample.boxes[:, :2], 0, None), 1))
    return dataclasses.replace(sample, ignore=sample.ignore | (side < MODEL_FACE_RANGE[model][0] * smallest))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="full_range")
    p.add_argument("--tiles", type=int, default=2)
    p.add_argument("--student", default="paper")
    p.add_argument("--epochs", type=int, default=36)
    p.add_argument("--repeats", type=int, default=20, help="passes over the training images per epoch")
    p.add_argument("--zoom-prob", type=float, default=0.9, help="share of examples zoomed on one face")
    p.add_argument("--tiling", default="auto", help="student's tiling for evaluation and validation (auto, off)")
    p.add_argument("--val-points", type=int, default=6, help="validations during training")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train_distill")
    args = p.parse_args(argv)

    from blazeface import FaceDetector
    from blazeface.io import iter_image_files
    from blazeface.train import AugmentConfig, TrainConfig, Trainer, load_annotations, pseudo_label, split_by_event
    from blazeface.train import write_jsonl
    from blazeface.train.metrics import evaluate_detections, run_detector

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wider = load_annotations(SHARED / "wider_val_dev" / "annotations.json")
    events = {s.path: s.event for s in wider}
    paths = [s.path for s in wider] + [str(q) for q in sorted(iter_image_files([SHARED / "fixtures", SHARED / "seed_images"]))]
    labels = pseudo_label(paths, args.teacher, tiles=args.tiles, progress=True)
    for s in labels:
        s.event = events.get(s.path, "0--Parade")  # fixtures and seed images join a training event
    write_jsonl(labels, out / "pseudo_labels.jsonl")
    train, held = split_by_event(labels)
    n_faces = lambda ss: int(sum((~s.ignore).sum() for s in ss))  # noqa: E731
    print(f"teacher {args.teacher} (tiles {args.tiles}): {n_faces(labels)} faces on {len(labels)} images; "
          f"train {len(train)} images / {n_faces(train)} faces, held back {len(held)} images / {n_faces(held)} faces")

    # zooms aimed at the student's face sizes: most teacher faces are a few percent of a WIDER photo, below
    # the 128-pixel model's range in a whole-image letterbox, so nearly every example is a zoom on one face
    config = TrainConfig(model=args.student, init="scratch", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         repeats=args.repeats, seed=args.seed, threads=args.threads, cache_images=True,
                         augment=AugmentConfig(zoom_prob=args.zoom_prob), val_tiling=args.tiling,
                         val_every=max(1, args.epochs // args.val_points))
    trainer = Trainer(config, train, held, out)
    history = trainer.fit()
    weights = out / "last.safetensors"
    results = {}
    for name, ss in (("held_back", held), ("train", train)):
        in_range = [within_reach(s, args.student) for s in ss]
        for tiling in dict.fromkeys((args.tiling, "off")):
            det = FaceDetector(args.student, weights=weights, backend="torch", min_score=0.05, tiling=tiling)
            dets = run_detector(det, ss)
            rows = [("all", 0.05, ss, dets), ("all", 0.5, ss, [keep_scores(d, 0.5) for d in dets])]
            if tiling != "off":
                rows.append(("in range", 0.05, in_range, dets))
            for faces, thr, labels_, d in rows:
                r = evaluate_detections(d, labels_)
                results[f"{name}|{tiling}|{faces}|{thr:g}"] = {
                    "ap": r.ap, "keypoint_error": r.keypoint_error, "faces": r.faces, "detections": r.detections}
    ips = float(np.median([h["images_per_s"] for h in history]))
    samples_seen = len(train) * args.repeats * args.epochs
    train_seconds = float(sum(h["seconds"] for h in history))
    report = {"teacher": args.teacher, "tiles": args.tiles, "student": args.student, "epochs": args.epochs,
              "repeats": args.repeats, "lr": args.lr, "zoom_prob": args.zoom_prob, "tiling": args.tiling,
              "train_images": len(train), "held_images": len(held), "teacher_faces": n_faces(labels),
              "results": results, "train_images_per_s": ips, "train_samples": samples_seen,
              "train_seconds": train_seconds, "threads": args.threads, "seconds": time.perf_counter() - t0}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"`{args.student}` from scratch on `{args.teacher}` pseudo-labels (tiles {args.tiles}): "
             f"{len(train)} training images, {len(held)} held-back images; {args.epochs} epochs × {args.repeats}.", "",
             "| images | student tiling | teacher faces counted | min score | faces | AP vs teacher "
             "| keypoint error / face size |", "|---|---|---|---|---|---|---|"]
    for k, v in results.items():
        name, tiling, faces, thr = k.split("|")
        lines.append(f"| {name} | {tiling} | {faces} | {thr} | {v['faces']} | {v['ap']:.3f} | "
                     f"{v['keypoint_error']:.3f} |")
    lines.append(f"\nTraining: {samples_seen} samples in {train_seconds:.0f} s ({ips:.1f} images/s, "
                 f"{args.threads} CPU thread(s)); total {report['seconds']:.0f} s.")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
