"""TFLite int8 with N arithmetic ops upstream of the heads left in float, against float, on wider_val_dev (issue 6).

    python benchmarks/tflite_int8_tail.py back --tails 0 3 6 9 [--json FILE]

For each N: export ``MODEL`` as TFLite int8 with ``tflite_float_tail=N`` (``blazeface.export.tflite_int8.float_tail_ops``),
then the same faces as the float network at its threshold (``export_int8.match``: float faces / int8 faces / matched
at IoU >= 0.9 / flips), WIDER AP easy / medium at min score 0.1 (``export_int8.wider_ap``), and the median
milliseconds per image of the int8 file and of the float ``.tflite`` in LiteRT (1 thread, batch 1, alternating
rounds in this run). Prints one JSON line per N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402

from blazeface.export import export_model  # noqa: E402


def litert_ms(paths: list[Path], size: int, rounds: int = 15, runs: int = 20) -> list[float]:
    """Median ms per run of each ``.tflite`` file (1 thread), rounds alternating between the files."""
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    its = []
    for p in paths:
        it = Interpreter(model_path=str(p), num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        its.append(it)
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for k, it in enumerate(its):
            for _ in range(5):
                it.invoke()
            t0 = time.perf_counter()
            for _ in range(runs):
                it.invoke()
            times[k].append((time.perf_counter() - t0) / runs * 1e3)
    return [round(statistics.median(t), 3) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--tails", type=int, nargs="+", default=[0, 3, 6, 9])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    check = bench.WiderValDevCheck(args.model)
    commit = check.commit
    rows = [{"model": args.model, "commit": commit, "tflite_float_tail": "float", "AP": check.float_ap}]
    print(json.dumps(rows[0]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = export_model(args.model, "tflite", Path(tmp) / "float.tflite")
        for tail in args.tails:
            path = export_model(args.model, "tflite", Path(tmp) / f"int8_tail{tail}.tflite", int8=True,
                                tflite_float_tail=tail)
            int8_ms, float_ms = litert_ms([path, float_path], check.reference.config.input_size)
            row = {"model": args.model, "commit": commit, "tflite_float_tail": tail, **check.compare(path),
                   "litert_ms": {"int8": int8_ms, "float": float_ms, "speedup": round(float_ms / int8_ms, 2)}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
