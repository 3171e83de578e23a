"""How many of float's own wider_val_dev faces float keeps at IoU >= 0.9 when the photo changes invisibly (issue 6).

int8 must find "the same faces as float (matched IoU >= 0.9)". This measures what that bar means for float
itself: the float detector on the clean photos against the float detector on the same photos after a change no
viewer would notice: uniform noise of +-1, +-2, +-4 and +-8 grey levels, and a re-save as JPEG at quality 95, 90 and 80
(the wider_val_dev photos are JPEGs already). Counted with ``export_int8.match`` (pairs at IoU >= 0.5, matched at
IoU >= 0.9, flips), so the rows compare directly with the int8 rows of ``export_int8.py`` and
``torchscript_int8_accuracy.py``.

    python benchmarks/float_perturbation_floor.py --models short_range full_range full_range_sparse back \
        --json benchmarks/results/float_perturbation_floor_epyc_zen5.json
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from export_int8 import ROOT, SHARED, images_of, match, uniform_noise
from machine_info import machine

from blazeface import FaceDetector
from blazeface.io import read_image

Perturbation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def jpeg_resave(quality: int) -> Perturbation:
    """Encodes the decoded RGB image as JPEG at ``quality`` (Pillow, 4:2:0) and decodes it again."""
    def apply(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))
    return apply


PERTURBATIONS: dict[str, tuple[Perturbation, int]] = {  # name: (change, seeds: 1 when it is deterministic)
    "noise_1": (uniform_noise(1), 3),
    "noise_2": (uniform_noise(2), 3),
    "noise_4": (uniform_noise(4), 3),
    "noise_8": (uniform_noise(8), 3),
    "jpeg_95": (jpeg_resave(95), 1),
    "jpeg_90": (jpeg_resave(90), 1),
    "jpeg_80": (jpeg_resave(80), 1),
}


def floor_of(model: str, images: list[np.ndarray]) -> dict:
    """``match`` of float's clean faces against float's faces on each perturbed copy, per perturbation and seed."""
    detector = FaceDetector(model, device="cpu")
    clean = detector(images)
    rows: dict[str, list[dict]] = {}
    for name, (change, seeds) in PERTURBATIONS.items():
        rows[name] = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            rows[name].append(match(clean, detector([change(im, rng) for im in images]), detector.min_score))
            print(model, name, seed, json.dumps(rows[name][-1]), flush=True)
    return {"model": model, "float_faces": int(sum(len(d) for d in clean)), "perturbations": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["short_range"])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    images = [read_image(p) for p in images_of(SHARED / "wider_val_dev" / "images")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = {"date": datetime.date.today().isoformat(), "machine": machine(), "commit": commit,
           "images": len(images), "models": [floor_of(m, images) for m in args.models]}
    for r in out["models"]:
        cells = []
        for name, runs in r["perturbations"].items():
            matched = [m["matched"] for m in runs]
            cells.append(f"{name} {min(matched)}-{max(matched)}" if len(matched) > 1 else f"{name} {matched[0]}")
        print(f"{r['model']}: {r['float_faces']} float faces, matched at IoU >= 0.9: " + ", ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
