"""ONNX int8 after N steps of quantization-aware fine-tuning against float, on wider_val_dev (issue 6).

    python benchmarks/int8_qat_accuracy.py back --qat-steps 0 300 [--onnx-int8 '{"reduce_range": false}'] [--json FILE]

For each N: export ``MODEL`` as ONNX int8 with ``qat_steps=N`` (0: post-training only), then the same faces as
float at its threshold (``export_int8.match``: float faces / int8 faces / matched at IoU >= 0.9 / flips) and WIDER
AP easy / medium at min score 0.1 (``export_int8.wider_ap``), and onnxruntime's median ms of each int8 file and of
the float export (1 thread, batch 1 and 16, interleaved in this run): QAT changes weights, not the graph, but
``--onnx-int8`` options change it. ``--onnx-int8``: a JSON object of ``export_model(onnx_int8=...)`` options
(e.g. 8-bit instead of 7-bit weights, or a longer ``float_tail``). Prints one JSON line per N.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402


def ort_speed(float_path: Path, int8_path: Path, size: int, repeats: int = 60) -> dict[str, dict]:
    """int8 against float in onnxruntime, 1 thread, batch 1 and 16: median ms (interleaved) and the ratio."""
    fs, qs = bench.ort_session(float_path, 1), bench.ort_session(int8_path, 1)
    rng = np.random.default_rng(0)
    out = {}
    for bs in (1, 16):
        x = rng.uniform(-1, 1, (bs, 3, size, size)).astype(np.float32)
        ms = bench.interleaved_ms({"f": lambda: fs.run(None, {"input": x}), "q": lambda: qs.run(None, {"input": x})},
                                  repeats if bs == 1 else repeats // 3)
        out[f"b{bs}"] = bench._speed_row(ms["f"], ms["q"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--qat-steps", type=int, nargs="+", default=[0, 300])
    parser.add_argument("--onnx-int8", type=json.loads, default=None,
                        help="JSON object of quantize_onnx options, e.g. '{\"reduce_range\": false}'")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    bench.WiderValDevCheck(args.model).sweep(
        "onnx", "qat_steps", args.qat_steps, lambda steps: {"qat_steps": steps, "onnx_int8": args.onnx_int8},
        "onnxruntime_t1", ort_speed, args.json, extra={"onnx_int8": args.onnx_int8})


if __name__ == "__main__":
    main()
