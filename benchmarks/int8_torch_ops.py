"""PyTorch int8 kernels against their float forms, one op at a time (the choices of ``quantize_torch_fx``, issue 6).

    python benchmarks/int8_torch_ops.py [--channels 24] [--size 128] [--repeats 200] [--steady-malloc]

1 thread, one channels-last ``[1, C, S, S]`` tensor, the median of ``--repeats`` runs each (microseconds): a stride-2
depthwise convolution behind TF's asymmetric pad run in float between a dequantize and a quantize (the one-pixel
shift of ``72e825e``) against the enlarged 4x4 kernel of ``enlarged_stride2_kernels`` and a plain 3x3 one; the
int8 2x2 max pool against dequantize + float pool + quantize (``float_max_pools``); the int8 add + ReLU that
``fused_residual_backend_config`` folds into the convolution; float depthwise and 1x1 convolutions for scale. For
the int8 input and the stem, on a ``[1, 3, S, S]`` image as the network receives it (NCHW): the float add of
``exact_pixel_input`` (half a pixel step), the 3-channel 5x5 stride-2 stem convolution in float against int8
(quantize + int8 convolution, what a float stem saves and costs), and an int8 3x3 depthwise convolution on the stem's
output (``[1, C, S/2, S/2]``) in NCHW (what a float stem gives) against channels-last.
``--steady-malloc`` re-runs it with ``int8_speed.STEADY_MALLOC`` (glibc keeps freed memory): with the defaults, ops
that allocate a fresh large buffer (the float pad) pay page faults on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Callable

import torch
import torch.ao.nn.quantized as nnq
import torch.nn.functional as F
from bench_speed import median_ms
from int8_speed import STEADY_MALLOC


def median_us(fn: Callable[[], object], repeats: int) -> float:
    """Median microseconds of ``repeats`` calls of ``fn`` after 20 untimed ones."""
    return round(median_ms(fn, repeats, warmup=20) * 1e3, 1)


def int8_conv(in_channels: int, channels: int, kernel: int, padding: int, stride: int = 2,
              groups: int | None = None) -> nnq.Conv2d:
    """An int8 convolution with random weights (depthwise unless ``groups`` is given)."""
    groups = channels if groups is None else groups
    conv = nnq.Conv2d(in_channels, channels, kernel, stride=stride, padding=padding, groups=groups)
    weight = torch.quantize_per_channel(torch.randn(channels, in_channels // groups, kernel, kernel),
                                        torch.full((channels,), 0.01), torch.zeros(channels, dtype=torch.long), 0,
                                        torch.qint8)
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
    dw3, dw4, dw3_s1 = int8_conv(c, c, 3, 1), int8_conv(c, c, 4, 1), int8_conv(c, c, 3, 1, stride=1)
    image = torch.rand(1, 3, s, s) * 2 - 1  # NCHW, as the network's input
    float_stem = torch.nn.Conv2d(3, c, 5, stride=2, padding=2)
    int8_stem = int8_conv(3, c, 5, 2, groups=1)
    stem_out = torch.rand(1, c, s // 2, s // 2)  # the stem's output size
    stem_out_nchw = torch.quantize_per_tensor(stem_out, 0.01, 0, torch.quint8)
    stem_out_nhwc = torch.quantize_per_tensor(stem_out.contiguous(memory_format=torch.channels_last), 0.01, 0,
                                              torch.quint8)
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
            "int8_dw3x3_s1_stem_output_channels_last": median_us(lambda: dw3_s1(stem_out_nhwc), n),
            "int8_dw3x3_s1_stem_output_nchw": median_us(lambda: dw3_s1(stem_out_nchw), n),
            "float_add_half_step_image": median_us(lambda: image + 1 / 255, n),
            "float_stem5x5_s2_3ch": median_us(lambda: float_stem(image), n),
            "quantize_int8_stem5x5_s2_3ch": median_us(lambda: int8_stem(torch.quantize_per_tensor(
                image, 1 / 127.5, 127, torch.quint8)), n),
            "float_pw1x1": median_us(lambda: float_pw(xf), n),
        }
    print(json.dumps({"channels": c, "size": s, "threads": 1, "engine": "onednn",
                      "malloc": STEADY_MALLOC if steady else "glibc default", "median_us": out}, indent=1))


if __name__ == "__main__":
    main()
