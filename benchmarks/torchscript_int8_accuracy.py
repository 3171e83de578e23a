"""PyTorch FX int8 (the TorchScript int8 file) against float PyTorch: same faces, AP, weights (issue 6).

    python benchmarks/torchscript_int8_accuracy.py [--models short_range full_range ...] [--json FILE] [--reduce-range]
        [--qat-steps N] [--qat-seeds 0 1 2 | 0,1,2 3,4,5]

Per model: exports ``blazeface export MODEL --format torchscript --int8`` (post-training, the bundled examples
with augmentations), then on the example photos, the seed images and wider_val_dev counts the faces float finds,
the int8 file's faces, the pairs matched at IoU >= 0.9 and the worst pair (``export_int8.match``), and on
wider_val_dev AP easy / medium / hard at min score 0.1 for both. Speed: ``int8_speed.py`` (its ``torchscript``
rows time the same files). ``--reduce-range``: 7-bit activations, the choice
``quantize.int8_activation_reduce_range`` makes on a CPU without VNNI, measured here on any CPU
(``export_model(torch_int8={"reduce_range": True})``; the arithmetic is the same, only the speed depends on the CPU). ``--qat-steps N``: the export first fine-tunes N steps under PyTorch's
int8 rounding (``qat.qat_finetune_fx``; default: the model's ``int8_torch_qat_steps``, as ``blazeface export`` does;
the steps run are in each model's ``quantization``); ``--qat-seeds``: one export per entry, each a seed of the
fine-tuning's batch sampling or comma-separated seeds whose runs' weights are averaged
(``export_model(torch_int8={"qat_seeds": (0, 1, 2)})``; default: the model's ``int8_torch_qat_seeds``, as the export),
to see how much the result varies.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402

import torch  # noqa: E402

from blazeface import FaceDetector  # noqa: E402
from blazeface.export import export_model  # noqa: E402
from blazeface.inference import load_backend  # noqa: E402


def evaluate(model: str, tmp: Path, qat_steps: int | None = None, torch_int8: dict | None = None) -> dict:
    path = export_model(model, "torchscript", tmp / f"{model}_int8.pt", int8=True, qat_steps=qat_steps,
                        torch_int8=torch_int8)
    sets = {"examples": bench.images_of(bench.ROOT / "examples"), "seed_images": bench.images_of(bench.SHARED / "seed_images"),
            "wider_val_dev": bench.images_of(bench.SHARED / "wider_val_dev" / "images")}
    ann = json.loads((bench.SHARED / "wider_val_dev" / "annotations.json").read_text())
    ref_det, got_det = FaceDetector(model, device="cpu"), FaceDetector(str(path), device="cpu")
    out: dict = {"model": model, "quantization": load_backend(path).metadata["quantization"],
                 "file_bytes": path.stat().st_size}
    for key, images in sets.items():
        out[key] = bench.match(ref_det(images), got_det(images), ref_det.min_score)
    wider = sets["wider_val_dev"]
    for key, det in (("float_AP", FaceDetector(model, device="cpu", min_score=0.1)),
                     ("int8_AP", FaceDetector(str(path), device="cpu", min_score=0.1))):
        found = det(wider)
        out[key] = {s: round(bench.wider_ap(ann, {p.name: (d.xyxy, d.scores) for p, d in zip(wider, found)}, s), 4)
                    for s in ("easy", "medium", "hard")}
    out["AP_minus_float"] = {s: round(out["int8_AP"][s] - out["float_AP"][s], 4) for s in out["int8_AP"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["short_range", "full_range", "full_range_sparse", "back"])
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit activations (a CPU without VNNI)")
    ap.add_argument("--qat-steps", type=int, default=None,
                    help="quantization-aware fine-tuning steps under PyTorch's int8 rounding (default: the model's "
                         "int8_torch_qat_steps, as the export; 0: post-training)")
    ap.add_argument("--qat-seeds", nargs="+", default=None,
                    help="one export per entry: a seed of the QAT batch sampling, or comma-separated seeds averaged")
    args = ap.parse_args()
    results = {"date": datetime.date.today().isoformat(), "machine": bench.machine(),
               "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=bench.ROOT,
                                        capture_output=True, text=True).stdout.strip(),
               "reduce_range": args.reduce_range, "qat_steps": args.qat_steps, "threads": torch.get_num_threads(),
               "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for seeds in args.qat_seeds or [None]:
                options = {**({"qat_seeds": tuple(int(s) for s in seeds.split(","))} if seeds else {}),
                           **({"reduce_range": True} if args.reduce_range else {})}
                results["models"].append(evaluate(model, Path(tmp), args.qat_steps, options or None))
                print(json.dumps(results["models"][-1], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
