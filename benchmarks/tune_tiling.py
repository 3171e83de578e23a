"""Choosing tile settings without overfitting (issue 5): every candidate :class:`~blazeface.tiling.TileConfig` runs
on all of wider_val_dev once, and its AP is reported separately on the two halves of an event split
(:func:`blazeface.train.split_by_event`'s rule: events sorted by number, every 2nd held back). Settings are chosen
on the *tuning* half (``0--Parade``, ``4--Dancing``, ``8--Election_Campain``, 52 images) and confirmed on the
*held-back* half (``2--Demonstration``, ``6--Funeral``, 83 images).

    python benchmarks/tune_tiling.py --models short_range --variants default flip max_tiles=64 flip,max_tiles=64

A variant is ``default`` or comma-separated ``field=value`` pairs of :class:`TileConfig` (``flip`` alone means
``flip=True``). One JSON line per (model, variant) is appended to ``--out`` (AP easy / medium / hard per half and
on the whole set, mean tiles per image, and the accuracy pass's mean ms per image, 1 thread, not a timing).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from blazeface import FaceDetector  # noqa: E402
from blazeface.eval import evaluate, read_annotations_json  # noqa: E402
from blazeface.eval.runner import run_detector  # noqa: E402
from blazeface.tiling import TileConfig, plan_tiles  # noqa: E402


def event_halves(keys: list[str], every: int = 2, offset: int = 1) -> tuple[list[str], list[str]]:
    """``(tuning, held_back)`` image keys: events (the ``N--Name`` folder) sorted by number, the ``offset``-th of
    every ``every`` held back, as :func:`blazeface.train.split_by_event`."""
    event = {k: k.split("/")[0] if "/" in k else k.split("_")[0] for k in keys}
    events = sorted(set(event.values()), key=lambda e: int(e.split("--")[0]) if e.split("--")[0].isdigit() else 0)
    held = {e for i, e in enumerate(events) if i % every == offset}
    return [k for k in keys if event[k] not in held], [k for k in keys if event[k] in held]


def parse_variant(text: str) -> TileConfig:
    if text == "default":
        return TileConfig()
    fields = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        fields[name] = ast.literal_eval(value) if value else True
    return TileConfig(**fields)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wider_val_dev"))
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--variants", nargs="+", default=["default"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="tune_tiling.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gt = read_annotations_json(Path(args.data) / "annotations.json")
    keys = sorted(gt.images)
    tuning, held = event_halves([gt.images[k].path or k for k in keys])
    by_path = {gt.images[k].path or k: k for k in keys}
    halves = {"tuning": [by_path[k] for k in tuning], "held_back": [by_path[k] for k in held], "all": keys}
    for model in args.models:
        for variant in args.variants:
            cfg = parse_variant(variant)
            det = FaceDetector(model, device="cpu", min_score=0.05, tiling=cfg, threads=args.threads)
            t0 = time.time()
            run = run_detector(det, gt)
            rec = {"model": model, "variant": variant, "images": {h: len(v) for h, v in halves.items()}}
            for half, ks in halves.items():
                res = evaluate(gt.subset(ks), {k: run.detections[k] for k in ks})
                rec[half] = {s: round(float(v), 4) for s, v in res.ap.items()}
            sizes = [gt.images[k].size for k in keys]
            rec["tiles"] = float(np.mean([len(plan_tiles(w, h, det.input_size, model, cfg)) for w, h in sizes]))
            rec["ms_accuracy_pass"] = run.ms_per_image
            print(f"{model:18s} {variant:40s} tune {rec['tuning']['easy']:.3f} {rec['tuning']['medium']:.3f} "
                  f"{rec['tuning']['hard']:.3f} | held {rec['held_back']['easy']:.3f} {rec['held_back']['medium']:.3f} "
                  f"{rec['held_back']['hard']:.3f} | all {rec['all']['easy']:.3f} {rec['all']['medium']:.3f} "
                  f"{rec['all']['hard']:.3f} | {rec['tiles']:.1f} tiles ({time.time() - t0:.0f} s)", flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
