"""ONNX Runtime int8 variants against float: speed grid, per-op profile, agreement on wider_val_dev (issue 6).

    python benchmarks/int8_ort_variants.py [--repeats 40] [--json benchmarks/results/int8_ort_variants.json]

Variants (all: uint8 activations per tensor, 99.99th-percentile ranges, per-channel weights, head convolutions
in float with int8-stored weights, calibrated on the augmented ``examples/``):

- ``u8u8_qdq_float_pads``: the export of eb32dc7 (the residual channel pads run in float between DQ and Q);
- ``u8u8_qdq``: the default export up to 2cd7d7b (those pads run in uint8, :func:`blazeface.export.quantize.integer_pads`);
- ``u8s8_qdq_rr`` / ``u8s8_qop_rr``: symmetric int8 weights in 7 bits (``reduce_range``), QDQ / QOperator;
- ``u8s8_qop``: symmetric int8 weights in 8 bits: on AVX2 CPUs without VNNI, MLAS's u8×s8 kernels add pairs of
  products in int16 (``vpmaddubsw``), which saturates: the accuracy columns show what that costs (with VNNI,
  ``vpdpbusd`` sums into int32 and 8 bits are safe);
- ``*_fdw``: the depthwise convolutions left in float (int8-stored weights), the rest as named;
- ``*_a16``: the channel-aligned graph quantized (every channel count a multiple of 16, no channel ``Pad``:
  ORT's symmetric u8s8 depthwise kernels need the 16), the stem on 4 input channels (RGB + a zero channel:
  the symmetric kernels need inputs in 4s) except ``u8s8_qdq_rr_a16`` (3); ``u8s8_qdq_rr_a16_rgb0`` is the
  default export.

Speed: float and every variant interleaved in one process, medians, threads 1 and 2, batch 1 and 64.
Profile: ORT's per-node profile (1 thread, batch 1) by kind of node of the optimized graph.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_int8 import (ROOT, SHARED, flip_scores, images_of, interleaved_ms, match, ort_profile,  # noqa: E402
                         ort_session, wider_ap)

from blazeface import FaceDetector, get_config  # noqa: E402
from blazeface.export import export_model  # noqa: E402

VARIANTS: dict[str, dict] = {
    "u8u8_qdq_float_pads": {"weight_type": "uint8", "int_pads": False, "channel_block": None},
    "u8u8_qdq": {"weight_type": "uint8", "channel_block": None},
    "u8s8_qdq_rr": {"weight_type": "int8", "reduce_range": True, "channel_block": None},
    "u8s8_qop_rr": {"weight_type": "int8", "reduce_range": True, "quant_format": "qoperator", "channel_block": None},
    "u8s8_qop": {"weight_type": "int8", "reduce_range": False, "quant_format": "qoperator", "channel_block": None},
    "u8s8_qdq_rr_fdw": {"weight_type": "int8", "reduce_range": True, "float_depthwise": True, "channel_block": None},
    "u8s8_qdq_rr_a16": {"weight_type": "int8", "reduce_range": True, "channel_block": 16, "stem_input_channels": 3},
    "u8s8_qdq_rr_a16_rgb0": {"weight_type": "int8", "reduce_range": True, "channel_block": 16, "stem_input_channels": 4},
    "u8s8_qdq_rr_a16_rgb0_tail3": {"weight_type": "int8", "reduce_range": True, "channel_block": 16,
                                   "stem_input_channels": 4, "float_tail": 3},
    "u8s8_qdq_a16": {"weight_type": "int8", "reduce_range": False, "channel_block": 16},
    "u8u8_qdq_a16": {"weight_type": "uint8", "channel_block": 16},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="short_range")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = get_config(args.model).input_size
    out: dict = {"model": args.model, "variants": VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"float": export_model(args.model, "onnx", Path(tmp) / "float.onnx")}
        for k, opts in VARIANTS.items():
            files[k] = export_model(args.model, "onnx", Path(tmp) / f"{k}.onnx", int8=True, onnx_int8=opts)

        rng = np.random.default_rng(0)
        speed: dict = {}
        for threads in (1, 2):
            sessions = {k: ort_session(f, threads) for k, f in files.items()}
            for bs in (1, 64):
                x = rng.uniform(-1, 1, (bs, 3, s, s)).astype(np.float32)
                ms = interleaved_ms({k: (lambda q=q: q.run(None, {"input": x})) for k, q in sessions.items()},
                                    args.repeats if bs == 1 else max(5, args.repeats // 8))
                speed[f"t{threads}_b{bs}"] = {"float_ms": round(ms["float"], 3),
                                              "speedup": {k: round(ms["float"] / v, 3) for k, v in ms.items() if k != "float"}}
                print(threads, bs, speed[f"t{threads}_b{bs}"], flush=True)
        out["speed"] = speed
        out["profile_us_t1_b1"] = {k: ort_profile(files[k], s) for k in ("float", "u8u8_qdq", "u8s8_qdq_rr", "u8s8_qdq_rr_a16",
                                                                  "u8s8_qdq_rr_a16_rgb0")}

        sets = {"examples": images_of(ROOT / "examples"), "seed_images": images_of(SHARED / "seed_images"),
                "wider_val_dev": images_of(SHARED / "wider_val_dev" / "images")}
        ann = json.loads((SHARED / "wider_val_dev" / "annotations.json").read_text())
        ref_det = FaceDetector(args.model, device="cpu")
        ref = {k: ref_det(v) for k, v in sets.items()}
        ref_low = FaceDetector(args.model, device="cpu", min_score=0.1)(sets["wider_val_dev"])

        def ap_of(dets: list) -> dict[str, float]:
            return {st: round(wider_ap(ann, {p.name: (d.xyxy, d.scores) for p, d in zip(sets["wider_val_dev"], dets)}, st), 4)
                    for st in ("easy", "medium", "hard")}

        acc: dict = {"float_AP": ap_of(ref_low)}
        for k in VARIANTS:
            det = FaceDetector(str(files[k]), device="cpu")
            got = {n: det(v) for n, v in sets.items()}
            low = FaceDetector(str(files[k]), device="cpu", min_score=0.1)(sets["wider_val_dev"])
            acc[k] = {**{n: match(ref[n], got[n], ref_det.min_score) for n in sets}, "AP": ap_of(low),
                      "wider_val_dev_flips": flip_scores(ref["wider_val_dev"], ref_low, got["wider_val_dev"], low)}
            print(k, json.dumps(acc[k]), flush=True)
        out["accuracy"] = acc
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
