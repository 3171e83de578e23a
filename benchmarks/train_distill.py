"""Distillation: the paper's model trained from scratch on a teacher's pseudo-labels (boxes + 6 keypoints).

    python benchmarks/train_distill.py [--teacher full_range] [--tiles 2] [--epochs 30] [--out runs/train_distill]

Images: everything available here: ``wider_val_dev`` (135), the fixtures (4) and the seed images (3). The teacher
labels them all (whole image plus a ``tiles×tiles`` grid of overlapping squares, merged by weighted NMS; faces
at the teacher's threshold are labels, those within 0.25 below it are ignored). Split: the WIDER events held back
by ``split_by_event`` (``2--Demonstration``, ``6--Funeral``) are the test images; the other events, the fixtures
and the seed images are trained on. Reports the student's AP against the teacher's labels and its keypoint error
(mean distance over the face's size) on the held-back and the training images, with the curves that the Trainer
writes (``OUT/log.csv``, ``OUT/losses.png``, ``OUT/val_ap.png``), to ``OUT/report.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="full_range")
    p.add_argument("--tiles", type=int, default=2)
    p.add_argument("--student", default="paper")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train_distill")
    args = p.parse_args(argv)

    from blazeface import FaceDetector
    from blazeface.io import iter_image_files
    from blazeface.train import TrainConfig, Trainer, evaluate, load_annotations, pseudo_label, split_by_event
    from blazeface.train import write_jsonl

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

    config = TrainConfig(model=args.student, init="scratch", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         repeats=args.repeats, seed=args.seed, threads=args.threads, cache_images=True,
                         val_every=max(1, args.epochs // 10))
    trainer = Trainer(config, train, held, out)
    history = trainer.fit()
    weights = out / "last.safetensors"
    results = {}
    for name, ss in (("held_back", held), ("train", train)):
        for thr in (0.05, 0.5):
            r = evaluate(FaceDetector(args.student, weights=weights, backend="torch", min_score=thr), ss)
            results[f"{name}@{thr:g}"] = {"ap": r.ap, "keypoint_error": r.keypoint_error, "faces": r.faces,
                                          "detections": r.detections}
    ips = float(np.median([h["images_per_s"] for h in history]))
    report = {"teacher": args.teacher, "tiles": args.tiles, "student": args.student, "epochs": args.epochs,
              "repeats": args.repeats, "lr": args.lr, "train_images": len(train), "held_images": len(held),
              "teacher_faces": n_faces(labels), "results": results, "train_images_per_s": ips,
              "threads": args.threads, "seconds": time.perf_counter() - t0}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"`{args.student}` from scratch on `{args.teacher}` pseudo-labels (tiles {args.tiles}): "
             f"{len(train)} training images, {len(held)} held-back images; {args.epochs} epochs × {args.repeats}.", "",
             "| images | min score | faces (teacher) | AP vs teacher | keypoint error / face size |", "|---|---|---|---|---|"]
    for k, v in results.items():
        name, thr = k.split("@")
        lines.append(f"| {name} | {thr} | {v['faces']} | {v['ap']:.3f} | {v['keypoint_error']:.3f} |")
    lines.append(f"\nTraining: {ips:.1f} images/s ({args.threads} CPU thread(s)); total {report['seconds']:.0f} s.")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
