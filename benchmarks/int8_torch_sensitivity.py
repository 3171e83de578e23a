"""Which layers cost PyTorch int8 its accuracy: one block at a time kept float (issue 6).

    python benchmarks/int8_torch_sensitivity.py --model short_range [--json FILE] [--modules stem blocks.0 ...]
        [--qat-steps N]

For the model's TorchScript int8 (``quantize_torch_fx``, calibrated on the bundled examples with augmentations, its
shipped ``int8_torch_float_modules`` float), and then for each top-level stem / block / FPN module also kept float
(``float_modules``), the raw network's error against float on ``../shared/data/wider_val_dev`` (whole images
letterboxed): logits at anchors near faces (float logit > -2), mean, standard deviation and mean absolute value, and the regressors'
mean absolute error in input pixels weighted by the float score; and the traced module's time for one image (1
thread, median of interleaved runs against the shipped int8, under steady glibc malloc as ``int8_speed.py``).
Two floors without any int8 layer: float on inputs rounded to the calibrated int8 input grid (the first quantize's
scale and zero point without ``exact_pixel_input``), and float on inputs with uniform noise of the same step (±half a
level, independent per value); and the shipped int8 with the calibrated input quantize (``pixel_input=False``). The
block rows all quantize the input exactly (``pixel_input=True``, shipped) and are post-training. ``--qat-steps N``
(default: the model's ``int8_torch_qat_steps``; 0: none) adds the shipped int8 after N steps of quantization-aware
fine-tuning (``qat.qat_finetune_fx``). ``--modules`` with no names: no block rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402
from int8_speed import STEADY_MALLOC  # noqa: E402

from blazeface import create_model, get_config  # noqa: E402
from blazeface.export.quantize import TORCH_INT8_ENGINE, calibration_images, quantize_torch_fx  # noqa: E402
from blazeface.inference.files import quantized_engine  # noqa: E402


def outputs(net: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), quantized_engine(TORCH_INT8_ENGINE):
        parts = [net(images[i:i + 16]) for i in range(0, len(images), 16)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def traced(net: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), quantized_engine(TORCH_INT8_ENGINE), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.freeze(torch.jit.trace(net.eval(), example, check_trace=False))


def paired_ms(a: torch.jit.ScriptModule, b: torch.jit.ScriptModule, x: torch.Tensor, rounds: int = 5,
              repeats: int = 40) -> tuple[float, float]:
    """Median ms over ``rounds`` of ``a`` and ``b`` on ``x``, each round ``export_int8.interleaved_ms``."""
    times: list[dict[str, float]] = []
    with torch.no_grad(), quantized_engine(TORCH_INT8_ENGINE):
        for _ in range(rounds):
            times.append(bench.interleaved_ms({"a": lambda: a(x), "b": lambda: b(x)}, repeats))
    return tuple(round(statistics.median(t[k] for t in times), 3) for k in ("a", "b"))  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="short_range")
    ap.add_argument("--modules", nargs="*",
                    help="only these (default: every top-level stem, block and FPN module; none named: no block rows)")
    ap.add_argument("--qat-steps", type=int, default=None,
                    help="also the shipped int8 after N QAT steps (default: the model's int8_torch_qat_steps)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--default-malloc", action="store_true", help="time under glibc's default malloc settings")
    args = ap.parse_args()
    if not args.default_malloc and any(os.environ.get(k) != v for k, v in STEADY_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_MALLOC})
    torch.set_num_threads(1)
    config = get_config(args.model)
    size = config.input_size
    calibration = calibration_images(None, size)
    wider = calibration_images(bench.SHARED / "wider_val_dev" / "images", size, augment=False)
    reference = create_model(args.model).eval()
    f_reg, f_log = (t.numpy() for t in outputs(reference, wider))

    def errors(got: tuple[torch.Tensor, torch.Tensor]) -> dict:
        return bench.raw_errors(got[0].numpy(), got[1].numpy(), f_reg, f_log)

    shipped = tuple(config.int8_torch_float_modules)

    base = quantize_torch_fx(create_model(args.model).eval(), calibration, float_modules=shipped)
    calibrated = quantize_torch_fx(create_model(args.model).eval(), calibration, float_modules=shipped, pixel_input=False)
    scale, zero = (float(calibrated.get_buffer(_input_qparams(calibrated)[0])),
                   int(calibrated.get_buffer(_input_qparams(calibrated)[1])))
    grid = torch.fake_quantize_per_tensor_affine(wider, scale, zero, 0, 255)
    noise = wider + (torch.rand(wider.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * scale
    rows: list[dict] = [
        {"float": "everything", "input": f"rounded to the int8 input grid (scale {scale:.6f}, zero point {zero})",
         **errors(outputs(reference, grid))},
        {"float": "everything", "input": "uniform noise of one int8 input step", **errors(outputs(reference, noise))}]
    example = calibration[:1].contiguous()
    base_traced = traced(base, example)
    rows.append({"float": list(shipped), "input": "calibrated quantize (pixel_input=False)",
                 **errors(outputs(calibrated, wider))})
    rows.append({"float": list(shipped), "input": "exact pixel grid (shipped: pixel_input=True)", "qat_steps": 0,
                 **errors(outputs(base, wider))})
    qat_steps = config.int8_torch_qat_steps if args.qat_steps is None else args.qat_steps
    if qat_steps:
        tuned = quantize_torch_fx(create_model(args.model).eval(), calibration, float_modules=shipped, qat_steps=qat_steps)
        rows.append({"float": list(shipped), "input": "exact pixel grid (shipped: pixel_input=True)",
                     "qat_steps": qat_steps, **errors(outputs(tuned, wider))})
    print(json.dumps(rows, indent=1), flush=True)
    names = args.modules if args.modules is not None else [
        n for n, _ in reference.named_modules() if n == "stem" or (n.count(".") == 1 and n.startswith(("blocks.", "fpn.")))]
    for name in names:
        if name in shipped:
            continue
        net = quantize_torch_fx(create_model(args.model).eval(), calibration, float_modules=shipped + (name,))
        ms, base_ms = paired_ms(traced(net, example), base_traced, example)
        rows.append({"float": [*shipped, name], "also_float": name, **errors(outputs(net, wider)),
                     "ms": ms, "shipped_int8_ms": base_ms})
        print(json.dumps(rows[-1]), flush=True)
    result = {"date": datetime.date.today().isoformat(), "machine": bench.machine(), "model": args.model,
              "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=bench.ROOT,
                                       capture_output=True, text=True).stdout.strip(),
              "torch": torch.__version__, "wider_images": len(wider), "calibration_images": len(calibration),
              "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def _input_qparams(model: torch.fx.GraphModule) -> tuple[str, str]:
    """The buffer names of the first ``quantize_per_tensor``'s scale and zero point (the network input's)."""
    for node in model.graph.nodes:
        if node.op == "call_function" and node.target is torch.quantize_per_tensor:
            return node.args[1].target, node.args[2].target
    raise ValueError("no quantize_per_tensor in the int8 graph")


if __name__ == "__main__":
    main()
