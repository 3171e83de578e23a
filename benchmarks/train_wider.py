"""Fine-tune a MediaPipe model (default ``full_range``) on WIDER FACE images, split by event, and check it.

One command::

    python benchmarks/train_wider.py [--data ../shared/data/wider_val_dev/annotations.json] [--images DIR]
                                     [--model full_range] [--epochs 6] [--out runs/train_wider]

``--data`` is any annotation file ``blazeface.train.load_annotations`` reads whose images carry a WIDER event
(the wider_val_dev json, or a WIDER ``*_bbx_gt.txt`` whose paths start with the event folder). Split: events
sorted by their number, every 2nd one (2nd, 4th, …) held back (``blazeface.train.split_by_event``); no image of a
held-back event is trained on. On wider_val_dev that holds back ``2--Demonstration`` and ``6--Funeral`` (83
images) and trains on ``0--Parade``, ``4--Dancing``, ``8--Election_Campain`` (52 images).

Checks, printed and written to ``OUT/report.json`` and ``OUT/report.md``:

1. AP on the held-back events, WIDER style (easy / medium / hard; invalid and out-of-setting faces ignored),
   of the starting weights and of the fine-tuned ``last.safetensors`` (not the best epoch: the held-back
   events choose nothing), at score threshold 0.05 (the whole precision-recall curve) and at the model's own.
   ``OUT/gain.png`` plots each setting's AP minus the starting AP per epoch.
2. No face lost on the fixtures and seed images: every face the starting model finds there (at its own
   threshold) is found by the fine-tuned model (IoU ≥ 0.5, same threshold).

Exit status 0 when AP improves in every setting (at 0.05) and no face is lost, 1 otherwise.

The recipe is ``TrainConfig.fine_tune`` (what ``blazeface train --init pretrained`` uses); ``--lr``,
``--backbone-lr``, … override it. ``--tune`` is for choosing such settings without touching the held-back events:
the training events are split again by the same rule (on wider_val_dev: train on ``0--Parade`` and
``8--Election_Campain``, 36 images, report on ``4--Dancing``, 16 images).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def ap_table(report) -> dict[str, float]:
    return {"all": report.ap, **report.settings}


def check_faces_kept(model: str, weights: str, folders: list[Path]) -> dict:
    from blazeface import FaceDetector
    from blazeface.io import iter_image_files
    from blazeface.ops.boxes import box_iou

    base = FaceDetector(model, backend="torch")
    tuned = FaceDetector(model, weights=weights, backend="torch")
    rows = []
    for path in sorted(iter_image_files(folders)):
        a, b = base(str(path)), tuned(str(path))
        found = 0
        if len(a) and len(b):
            found = int((box_iou(a.xyxy, b.xyxy).max(1) >= 0.5).sum())
        rows.append({"image": path.name, "start_faces": len(a), "kept": found, "tuned_faces": len(b),
                     "start_scores": [round(float(s), 3) for s in a.scores],
                     "tuned_scores": [round(float(s), 3) for s in b.scores]})
    lost = sum(r["start_faces"] - r["kept"] for r in rows)
    return {"images": rows, "start_faces": sum(r["start_faces"] for r in rows), "lost": lost}


def plot_gain(history: list[dict], start: dict[str, float], path: Path, title: str) -> Path:
    """Per epoch, each setting's validation AP minus the starting weights' (epoch 0 is the start)."""
    from blazeface.train.plots import line_plot

    series = {k: [(0, 0.0)] + [(r["epoch"], r[f"val_ap_{k}" if k != "all" else "val_ap"] - start[k]) for r in history
                               if "val_ap" in r] for k in start}
    return line_plot(series, path, title, ylabel="AP gain")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "wider_val_dev" / "annotations.json"))
    p.add_argument("--images", default=None, help="image folder (default: beside the annotations)")
    p.add_argument("--model", default="full_range")
    p.add_argument("--tune", action="store_true",
                   help="choose settings without the held-back events: split the training events again by the same "
                        "rule, train on the first part and report on the second (the held-back events are not read)")
    p.add_argument("--held-offset", type=int, default=1, choices=[0, 1],
                   help="hold back the 2nd, 4th, … events (1, default) or the 1st, 3rd, … (0: the split reversed)")
    p.add_argument("--batch-size", type=int, default=16)
    recipe = p.add_argument_group("the recipe (default: TrainConfig.fine_tune)")
    for name, kind in (("epochs", int), ("repeats", int), ("lr", float), ("backbone-lr", float), ("l2sp", float),
                       ("ema-decay", float), ("weight-decay", float), ("warmup-steps", int),
                       ("freeze-backbone-epochs", int), ("box-weight", float), ("neg-ratio", float), ("keep-weight", float), ("min-face", float),
                       ("neg-iou", float), ("zoom-prob", float)):
        recipe.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest on a busy machine)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train_wider")
    p.add_argument("--keep", nargs="*", default=[str(SHARED / "fixtures"), str(SHARED / "seed_images")],
                   help="folders whose faces must not be lost")
    args = p.parse_args(argv)

    from blazeface import FaceDetector, get_config
    from blazeface.train import TrainConfig, Trainer, evaluate, load_annotations, split_by_event
    from blazeface.train.trainer import default_match

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_annotations(args.data, args.images)
    train, held = split_by_event(samples, offset=args.held_offset)
    if args.tune:
        train, held = split_by_event(train)
    if not train or not held:
        print("need images from at least two WIDER events", file=sys.stderr)
        return 2
    events = lambda ss: sorted({s.event for s in ss})  # noqa: E731
    print(f"train: {len(train)} images, events {events(train)}; held back: {len(held)} images, events {events(held)}")
    own = get_config(args.model).min_score

    t0 = time.perf_counter()
    images = {}
    from blazeface.io import load_image

    for s in held:
        images[s.path] = load_image(s.path)
    start = {}
    for thr in (0.05, own):
        det = FaceDetector(args.model, backend="torch", min_score=thr, device=args.device)
        start[thr] = ap_table(evaluate(det, held, images))
    print(f"start AP (held back, min_score 0.05): {start[0.05]}")

    overrides = {k: getattr(args, k) for k in ("epochs", "repeats", "lr", "backbone_lr", "l2sp", "ema_decay",
                                               "weight_decay", "warmup_steps", "freeze_backbone_epochs", "min_face")
                 if getattr(args, k) is not None}
    if args.zoom_prob is not None:
        overrides["augment"] = dataclasses.replace(TrainConfig.fine_tune(args.model).augment, zoom_prob=args.zoom_prob)
    if args.neg_iou is not None:
        overrides["match"] = dataclasses.replace(default_match(get_config(args.model)), neg_iou=args.neg_iou)
    loss = {k: getattr(args, k) for k in ("box_weight", "neg_ratio", "keep_weight") if getattr(args, k) is not None}
    if loss:
        overrides["loss"] = dataclasses.replace(TrainConfig.fine_tune(args.model).loss, **loss)
    config = TrainConfig.fine_tune(args.model, batch_size=args.batch_size, seed=args.seed, device=args.device,
                                   threads=args.threads, cache_images=True, val_min_score=0.05, **overrides)
    trainer = Trainer(config, train, held, out)
    trainer.val_images = images
    history = trainer.fit()
    weights = str(out / "last.safetensors")
    tuned = {}
    for thr in (0.05, own):
        det = FaceDetector(args.model, weights=weights, backend="torch", min_score=thr, device=args.device)
        tuned[thr] = ap_table(evaluate(det, held, images))
    plot_gain(history, start[0.05], out / "gain.png", f"{args.model}: held-back AP - starting AP (min score 0.05)")
    kept = check_faces_kept(args.model, weights, [Path(k) for k in args.keep])
    improved = {k: tuned[0.05][k] > start[0.05][k] for k in start[0.05]}
    ok = all(improved.values()) and kept["lost"] == 0
    ips = [r["images_per_s"] for r in history]
    report = {
        "data": args.data, "model": args.model, "train_images": len(train), "held_images": len(held),
        "train_events": events(train), "held_events": events(held), "tune": args.tune, "config": config.to_dict(),
        "threads": args.threads, "device": str(trainer.device),
        "ap_start": {str(k): v for k, v in start.items()}, "ap_tuned": {str(k): v for k, v in tuned.items()},
        "improved_at_0.05": improved, "faces_kept": kept, "train_images_per_s": float(np.median(ips)),
        "seconds": time.perf_counter() - t0, "pass": ok,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"Fine-tuning `{args.model}` on {len(train)} images ({', '.join(events(train))}), "
             f"AP on {len(held)} held-back images ({', '.join(events(held))}):", "",
             "| weights | min score | all | easy | medium | hard |", "|---|---|---|---|---|---|"]
    for name, table in (("start", start), ("fine-tuned", tuned)):
        for thr, t in table.items():
            lines.append(f"| {name} | {thr:g} | " + " | ".join(f"{t.get(k, float('nan')):.3f}"
                                                               for k in ("all", "easy", "medium", "hard")) + " |")
    lines += ["", f"Faces of the starting model on {', '.join(Path(k).name for k in args.keep)}: {kept['start_faces']}, "
              f"lost after fine-tuning: {kept['lost']}.",
              f"Training: {config.epochs} epochs × {config.repeats} passes, {np.median(ips):.1f} images/s "
              f"({trainer.device}, {args.threads} thread(s)); total {report['seconds']:.0f} s. "
              f"{'PASS' if ok else 'FAIL'}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
