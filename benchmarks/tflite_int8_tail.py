"""TFLite int8 with N arithmetic ops upstream of the heads left in float, against float, on wider_val_dev (issue 6).

    python benchmarks/tflite_int8_tail.py back --tails 0 3 6 9 [--json FILE]

For each N: export ``MODEL`` as TFLite int8 with ``tflite_float_tail=N`` (``blazeface.export.tflite_int8.float_tail_ops``),
then the same faces as the float network at its threshold (``export_int8.match``: float faces / int8 faces / matched
at IoU >= 0.9 / flips), WIDER AP easy / medium at min score 0.1 (``export_int8.wider_ap``), and the median
milliseconds per image of the int8 file and of the float ``.tflite`` in LiteRT (1 thread, batch 1, interleaved in
this run; the result files of commit 94b7735 and 14fb4ef timed blocks of 20 bare interpreter runs instead, under
``litert_ms``). Prints one JSON line per N.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402


def litert_speed(float_path: Path, int8_path: Path, size: int, repeats: int = 60) -> dict[str, float]:
    """int8 against float through our LiteRT backend, 1 thread, one image: median ms (interleaved) and the ratio,
    as ``export_int8.py``'s ``litert_t1_b1`` rows."""
    from blazeface.inference import load_backend

    fb, qb = load_backend(float_path, 1), load_backend(int8_path, 1)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    ms = bench.interleaved_ms({"f": lambda: fb.run(x), "q": lambda: qb.run(x)}, repeats)
    return bench._speed_row(ms["f"], ms["q"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--tails", type=int, nargs="+", default=[0, 3, 6, 9])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    bench.WiderValDevCheck(args.model).sweep("tflite", "tflite_float_tail", args.tails,
                                             lambda tail: {"tflite_float_tail": tail}, "litert_t1_b1", litert_speed,
                                             args.json)


if __name__ == "__main__":
    main()
