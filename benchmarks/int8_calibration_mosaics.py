"""int8 calibrated with and without mosaics of the calibration photos, in every format (issue 6).

    python benchmarks/int8_calibration_mosaics.py --models back --formats onnx tflite torchscript \
        --mosaics 0 16 [--seeds 0 1 2] [--json FILE]
    python benchmarks/int8_calibration_mosaics.py --render FILE...    # the rows as a Markdown table

``--mosaics N``: ``export_model(..., int8=True, calibration_mosaics=N)``: N mosaics of the bundled example photos
(grids of 2x2 to 6x6 random crops, ``quantize.mosaic_photos``) take the place of most calibration images, so
the network is calibrated (and, where the model fine-tunes, distilled) on faces at crowd scales too; 0 is the
calibration up to now. ``--seeds``: the seed of the calibration images (augmentations, mosaics and sampling:
``calibration_images(seed=...)``), to see how much a result depends on the draw. Everything else is the export's
default (float tails, QAT steps). Per file, like ``torchscript_int8_accuracy.py``: float's faces matched at
IoU >= 0.9 on the example photos, the seed images and wider_val_dev (``export_int8.match``), AP easy / medium /
hard at min score 0.1 minus float's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402

from blazeface import FaceDetector  # noqa: E402
from blazeface.export import export_model, quantize  # noqa: E402
from blazeface.inference import load_backend  # noqa: E402

SUFFIX = {"onnx": "onnx", "tflite": "tflite", "torchscript": "pt"}


class Reference:
    """Float's faces on the three image sets and its AP on wider_val_dev, computed once per model."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.sets = {"examples": bench.images_of(bench.ROOT / "examples"),
                     "seed_images": bench.images_of(bench.SHARED / "seed_images"),
                     "wider_val_dev": bench.images_of(bench.SHARED / "wider_val_dev" / "images")}
        self.annotations = json.loads((bench.SHARED / "wider_val_dev" / "annotations.json").read_text())
        detector = FaceDetector(model, device="cpu")
        self.min_score = detector.min_score
        self.faces = {key: detector(images) for key, images in self.sets.items()}
        self.ap = self.wider_ap(FaceDetector(model, device="cpu", min_score=0.1))

    def wider_ap(self, detector: FaceDetector) -> dict[str, float]:
        images = self.sets["wider_val_dev"]
        found = {p.name: (d.xyxy, d.scores) for p, d in zip(images, detector(images))}
        return {s: round(bench.wider_ap(self.annotations, found, s), 4) for s in ("easy", "medium", "hard")}

    def compare(self, path: Path) -> dict:
        detector = FaceDetector(str(path), device="cpu")
        out = {key: bench.match(self.faces[key], detector(images), self.min_score) for key, images in self.sets.items()}
        ap = self.wider_ap(FaceDetector(str(path), device="cpu", min_score=0.1))
        out["AP_minus_float"] = {s: round(ap[s] - self.ap[s], 4) for s in ap}
        return out


def export_with_seed(model: str, fmt: str, path: Path, mosaics: int, seed: int) -> Path:
    """``export_model`` int8 with ``calibration_images(seed=seed)`` (the export itself always draws seed 0)."""
    original = quantize.calibration_images

    def seeded(*args, **kwargs):
        kwargs["seed"] = seed
        return original(*args, **kwargs)

    with mock.patch.object(quantize, "calibration_images", seeded):
        return export_model(model, fmt, path, int8=True, calibration_mosaics=mosaics)


def render(paths: list[str]) -> str:
    """The rows of earlier runs' JSON files as one Markdown table."""
    lines = ["| model | format | mosaics | seed | wider_val_dev found / matched of float's | AP easy / medium minus float's "
             "| seed images matched (min IoU) | examples matched |", "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            if "format" not in r:
                continue
            w, s, e, ap = r["wider_val_dev"], r["seed_images"], r["examples"], r["AP_minus_float"]
            lines.append(f"| {r['model']} | {r['format']} | {r['mosaics']} | {r['seed']} | {w['int8_faces']} / "
                         f"{w['matched']} of {w['faces']} | {ap['easy']:+.4f} / {ap['medium']:+.4f} | {s['matched']} of "
                         f"{s['faces']} ({s['min_iou']}) | {e['matched']} of {e['faces']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["back"])
    ap.add_argument("--formats", nargs="+", default=["onnx", "tflite", "torchscript"], choices=list(SUFFIX))
    ap.add_argument("--mosaics", type=int, nargs="+", default=[0, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--render", nargs="+", metavar="JSON", help="only print the rows of earlier runs as a table")
    args = ap.parse_args()
    if args.render:
        print(render(args.render))
        return
    out = {"date": datetime.date.today().isoformat(), "machine": bench.machine(),
           "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=bench.ROOT,
                                    capture_output=True, text=True).stdout.strip(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            ref = Reference(model)
            out["rows"].append({"model": model, "float_AP": ref.ap})
            for fmt in args.formats:
                for mosaics in args.mosaics:
                    for seed in args.seeds:
                        t0 = time.perf_counter()
                        path = export_with_seed(model, fmt, Path(tmp) / f"{model}_{mosaics}_{seed}.{SUFFIX[fmt]}",
                                                mosaics, seed)
                        row = {"model": model, "format": fmt, "mosaics": mosaics, "seed": seed,
                               "export_seconds": round(time.perf_counter() - t0),
                               "quantization": load_backend(path).metadata.get("quantization"), **ref.compare(path)}
                        out["rows"].append(row)
                        w = row["wider_val_dev"]
                        print(f"{model} {fmt} mosaics {mosaics} seed {seed}: wider {w['int8_faces']} found / "
                              f"{w['matched']} of {w['faces']} matched, AP {row['AP_minus_float']}, seed images "
                              f"{row['seed_images']['matched']} / {row['seed_images']['faces']} (min IoU "
                              f"{row['seed_images']['min_iou']}), examples {row['examples']['matched']} / "
                              f"{row['examples']['faces']}", flush=True)
                        if args.json:
                            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
