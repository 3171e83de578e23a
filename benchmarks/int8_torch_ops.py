"""PyTorch int8 kernels against their float forms, one op at a time (the choices of ``quantize_torch_fx``, issue 6).

    python benchmarks/int8_torch_ops.py [--channels 24] [--size 128] [--repeats 200] [--steady-malloc]

1 thread, one channels-last ``[1, C, S, S]`` tensor, the median of ``--repeats`` runs each (microseconds): a stride-2
depthwise convolution behind TF's asymmetric pad run in float between a dequantize and a quantize (the one-pixel
shift of ``72e825e``) against the enlarged 4x4 kernel of ``enlarged_stride2_kernels`` and a plain 3x3 one; the
int8 2x2 max pool against dequantize + float pool + quantize (``float_max_pools``); the int8 add + ReLU that
``fused_residual_backend_config`` folds into the convolution; float depthwise and 1x1 convolutions for scale.
``--steady-malloc`` re-runs it with ``int8_speed.STEADY_MALLOC`` (glibc keeps freed memory): with the defaults, ops
that allocate a fresh large buffer (the float pad) pay page faults on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Callable

import torch
import torch.ao.nn.quantized as nnq
import torch.nn.functional as F
from int8_speed import STEADY_MALLOC


def median_us(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e6, 1)


def int8_depthwise(channels: int, kernel: int, padding: int) -> nnq.Conv2d:
    conv = nnq.Conv2d(channels, channels, kernel, stride=2, padding=padding, groups=channels)
    weight = torch.quantize_per_channel(torch.randn(channels, 1, kernel, kernel), torch.full((channels,), 0.01),
                                        torch.zeros(channels, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(weight, torch.zeros(channels))
    conv.scale = 0.01
    return conv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--steady-malloc", action="store_true", help="re-run with int8_speed.STEADY_MALLOC")
    args = ap.parse_args()
    steady = all(os.environ.get(k) == v for k, v in STEADY_MALLOC.items())
    if args.steady_malloc and not steady:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_MALLOC})
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "onednn"
    c, s, n = args.channels, args.size, args.repeats
    xf = torch.rand(1, c, s, s).contiguous(memory_format=torch.channels_last)
    xq = torch.quantize_per_tensor(xf, 0.01, 0, torch.quint8)
    dw3, dw4 = int8_depthwise(c, 3, 1), int8_depthwise(c, 4, 1)
    float_dw = torch.nn.Conv2d(c, c, 3, padding=1, groups=c).to(memory_format=torch.channels_last)
    float_pw = torch.nn.Conv2d(c, c, 1).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = {
            "int8_dw3x3_s2_behind_float_pad": median_us(lambda: dw3(torch.quantize_per_tensor(
                F.pad(xq.dequantize(), (1, 0, 1, 0)), 0.01, 0, torch.quint8))[:, :, 1:, 1:], n),
            "int8_dw4x4_s2_enlarged": median_us(lambda: dw4(xq), n),
            "int8_dw3x3_s2_symmetric": median_us(lambda: dw3(xq), n),
            "int8_maxpool2x2": median_us(lambda: F.max_pool2d(xq, 2, 2), n),
            "dequantize_float_maxpool2x2_quantize": median_us(lambda: torch.quantize_per_tensor(
                F.max_pool2d(xq.dequantize(), 2, 2), 0.01, 0, torch.quint8), n),
            "int8_add_relu": median_us(lambda: torch.ops.quantized.add_relu(xq, xq, 0.01, 0), n),
            "float_dw3x3_s1": median_us(lambda: float_dw(xf), n),
            "float_pw1x1": median_us(lambda: float_pw(xf), n),
        }
    print(json.dumps({"channels": c, "size": s, "threads": 1, "engine": "onednn",
                      "malloc": STEADY_MALLOC if steady else "glibc default", "median_us": out}, indent=1))


if __name__ == "__main__":
    main()
