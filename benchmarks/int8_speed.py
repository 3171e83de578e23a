"""int8 / float speed in the same runtime, over several rounds, with how busy the machine was (issue 6).

    python benchmarks/int8_speed.py [--model short_range] [--rounds 7] [--repeats 100] [--json FILE]
    python benchmarks/int8_speed.py --onnx-variant conv_heads='{"matmul_heads": false}'   # an A/B in the same rounds
    python benchmarks/int8_speed.py --render benchmarks/results/int8_speed_*_vnni.json   # the RESULTS.md section

``export_int8.py`` times each pair once; on a shared machine the ratio of one run moves with the neighbours'
load (on 2026-12-02 every time here was 3-4x slower than on a quiet day, and the int8 gain shrank). This script
exports the float and int8 files once (ONNX, TorchScript; TFLite when litert-torch is installed),
then runs ``--rounds`` rounds. In each round every pair runs interleaved (``export_int8.interleaved_ms``: the
median of ``--repeats`` timings each, float and int8 alternating), at 1 thread and batch 1, 1 thread and batch
16, and 2 threads and batch 1. It reports per case the median float and int8 ms over rounds and the ratio
float / int8: its median, its range over rounds, and in how many rounds it was >= 1.5. The 1-minute load
average before each round shows whether other jobs shared the cores. ``--onnx-variant NAME=JSON`` adds ONNX int8
files exported with those ``quantize_onnx`` options, timed against the same float file in the same rounds
(``onnxruntime[NAME]``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_int8 as bench  # noqa: E402

from blazeface import get_config  # noqa: E402
from blazeface.export import export_model  # noqa: E402

CASES = ((1, 1), (1, 16), (2, 1))  # (threads, batch)
RUNTIMES = ("onnxruntime", "torchscript", "litert")
# glibc malloc, told to keep freed memory: by default it hands large blocks back to the kernel (mmap, heap trim) and
# every run faults them in again; for PyTorch float, whose activations are 4x int8's, that made float TorchScript
# bimodal per process (back: 8.8 or 15.7 ms, 1 thread; full range 6.6 or 10), int8 stable. Both run with this.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "10000000000"}


def export_pairs(model: str, tmp: Path, variants: dict[str, dict], runtimes: tuple[str, ...] = RUNTIMES
                 ) -> dict[str, tuple[Path, Path]]:
    """float and int8 files per runtime (and per ONNX variant), exported once into ``tmp``. TorchScript: the
    float file runs channels-last (frozen), the int8 one PyTorch's FX int8 (oneDNN kernels), as ``blazeface export``
    writes them."""
    files = {}
    if "onnxruntime" in runtimes:
        onnx_float = export_model(model, "onnx", tmp / "f.onnx")
        files["onnxruntime"] = (onnx_float, export_model(model, "onnx", tmp / "q.onnx", int8=True))
        for name, opts in variants.items():
            files[f"onnxruntime[{name}]"] = (onnx_float, export_model(model, "onnx", tmp / f"q_{name}.onnx", int8=True,
                                                                      onnx_int8=opts))
    if "torchscript" in runtimes:
        files["torchscript"] = (export_model(model, "torchscript", tmp / "f.pt"),
                                export_model(model, "torchscript", tmp / "q.pt", int8=True))
    if "litert" in runtimes:
        try:
            import litert_torch  # noqa: F401
        except ImportError:
            return files
        files["litert"] = (export_model(model, "tflite", tmp / "f.tflite"),
                           export_model(model, "tflite", tmp / "q.tflite", int8=True))
    return files


def pairs(files: dict[str, tuple[Path, Path]], threads: int) -> dict[str, tuple[Callable, Callable]]:
    """float and int8 callables ``run(x)`` per runtime, at ``threads`` threads (one session per file: the ONNX
    variants share the float one)."""
    from blazeface.inference import load_backend

    backends: dict[Path, Callable] = {}
    for f, q in files.values():
        for path in (f, q):
            backends.setdefault(path, load_backend(path, threads).run)
    return {runtime: (backends[f], backends[q]) for runtime, (f, q) in files.items()}


SECTION = "## int8 speed over rounds (issue 6)"

NOTES = """\
Notes. Two AMD EPYC machines, both 2 cores with AVX-512 VNNI and no AMX, otherwise idle (the load average counts
the benchmark itself): runs of 2026-12-06 on family 25 model 17 (Zen 4, no AVX-VNNI; `_epyc_zen4.json`, commit
`484153c`, glibc malloc told to keep freed memory: `STEADY_MALLOC`; "-dirty" in the JSON: only result files
had changed), runs of 2026-12-04 on a CPU that also has
AVX-VNNI and ran every model about 1.6-1.9x faster (`_epyc_vnni.json`; the benchmark named no family and model
then). The tables of *Export and int8* above came from an Intel Xeon with AMX.

- **TorchScript int8 at `484153c`** (PyTorch FX on oneDNN): each residual sum and its ReLU fused into the
  convolution before them (`quantized::conv2d_add_relu`; the separate int8 add took 112 us at 24x128x128);
  stride-2 depthwise convolutions as (k+1)x(k+1) zero-led kernels with symmetric padding (the same function; the
  one-pixel shift of `72e825e` ran its pad in float between a dequantize and a quantize: 0.2-0.3 ms at 24x128x128
  with the convolution, 1.7-2.1 ms under glibc's default malloc, where a 4x4 int8 depthwise convolution costs what
  a 3x3 one does, 0.09 ms); max pools in float (PyTorch's int8 2x2 max pool: 390-660 against 200-270 us);
  `int8_torch_ops.py` times each op. And the loader packs the weights under the file's engine: packed under the default
  `x86` engine, the oneDNN kernels ran full range int8 in 8.3 instead of 3.5 ms. One image, 1 thread, all 7
  rounds >= 1.5: short range 1.61x, full range 1.74x, full range sparse 1.71x, back 1.54x (last 8 blocks float);
  before (`597ede5`): 1.43x, 1.55x, 1.62x, 1.26x. TorchScript's float is slower than onnxruntime's (short range
  2.6 against 1.5 ms): PyTorch int8 beats PyTorch float, not onnxruntime float.
- **Full range sparse with `fpn.1.blocks.1` also float (`b1924c3`'s default; "f7757ce-dirty" in the JSON is that
  change, `_torchscript_fpn1b1_` file, 2026-12-07)**: one image, 1 thread 1.54x (1.51-1.64, 7 of 7 rounds >= 1.5),
  2 threads 1.57x (7 of 7), batch 16 1.91x; with `fpn.2` alone (`31b650b`) 1.64x / 1.70x / 1.92x.
- **Short range after QAT became its default (`4266770`, 2026-12-07, `_torchscript_4266770_` file)**: one image,
  1 thread 1.50x (1.48-1.55, 4 of 7 rounds >= 1.5), batch 16 1.58x (7 of 7), float 2.46 ms. QAT changes weights,
  not the graph; the ratio sits at the edge of 1.5, between the quiet day's 1.61x (`484153c`) and the slow state's
  1.43x (`31b650b`).
- **The same machine, later on 2026-12-06 (`31b650b`, `_torchscript_epyc_zen4.json`), TorchScript only**: every
  time 1.2-1.5x slower than at `484153c` (short range float 3.8 against 2.6 ms), and the one-image ratios lower:
  short range **1.43x (0 of 7 rounds >= 1.5)**, full range 1.68x, full range sparse 1.64x, back 1.51x (4 of 7); at
  batch 16 1.69x / 1.89x / 1.92x / 2.34x. Not the code: the code of `2411aa6` (before `exact_pixel_input`), run
  alternately with `31b650b` in that state, gave short range 1.46x and 1.48x against 1.45x and 1.44x (the
  `_2411aa6_` / `_31b650b_` files are the second pair). Short range's one-image >= 1.5 holds on a quiet machine,
  not in every state of a shared one; exact pixel input costs one float add on the input (7-8 us at 128, 21-30 at 256; `int8_torch_ops.py`).
- **malloc.** With glibc's defaults, float TorchScript was bimodal per process (back, 1 thread: 8.8 or 15.7 ms;
  full range 6.6 or 10), int8 stable: glibc hands large freed blocks back to the kernel and every run faults them
  in again, and float's activations are 4x int8's. The script re-runs itself with `STEADY_MALLOC` (both files run
  under it; `--default-malloc` keeps the defaults), which timed float in its fast mode every time.
- **PyTorch's peer changed on 2026-12-06.** The `pytorch_fx` rows (the `_epyc_vnni` runs, and *Export and int8*)
  timed the FX int8 module against eager NCHW float, a slow baseline: channels-last float, what `FaceDetector`'s
  eager backend runs, took 8.7 against 13.2 ms for full range (1 thread, one image), and the FX ratios of 1.5-2.2x
  shrank to 0.9-1.2x against it. They are withdrawn; `export_int8.py` now times the TorchScript pair too.
- **One image on 1 thread, Zen 4, the other runtimes**: short range onnxruntime 1.56x (7 of 7 rounds >= 1.5),
  LiteRT 1.50x (1 of 7); full range LiteRT 1.46x, onnxruntime 1.28x; full range sparse LiteRT 0.99x, onnxruntime
  0.65x; back LiteRT 1.18x, onnxruntime 0.83x. Batches of 16, onnxruntime: 1.78x / 1.66x / 0.62x / 0.98x (short /
  full / sparse / back). TorchScript accuracy: `torchscript_int8_accuracy.py` (README, *Export*).
- On the faster EPYC (2026-12-04): LiteRT short range 1.45-1.56x, **onnxruntime 1.28-1.38x**. Its float kernels
  gained more from that CPU than MLAS's int8 ones (float 0.79-0.84 ms against 1.62, int8 0.59-0.61 against 1.01).
- Full range in onnxruntime: 1.65x at batch 16 but 1.28x for one image: its int8 3x3 depthwise convolutions take
  1.9x the float time (ORT's profile on Zen 4, `benchmarks/results/ort_profile_full_range_epyc_zen4.json`: 1630
  against 858 us; MLAS's fast symmetric depthwise kernel works in tiles of 64 channels; on full range's largest
  maps, 96x96 and 48x48, the depthwise convolutions have 8-48 channels, 8 and 12 padded to 16; the 16-channel ones
  at 96x96 take 257 us in int8 against 83 in float, the 32-channel ones 345 against 183), which cancels most of
  what the 1x1 convolutions gain (1223 against 2335 us).
- back and full range sparse keep float tails in ONNX and TFLite (ONNX 45 / 16 nodes, TFLite 20 / 12 ops) for
  accuracy: in onnxruntime their int8 is slower than float for one image. In PyTorch (8 blocks / the last FPN
  stage) back's 24-channel 128x128 layers dominate, where int8 depthwise convolutions are no faster than float
  (185 against 143 us each, channels-last) and only the 1x1 ones gain (130 against 292); with 4 float blocks
  instead of 8, back int8 took 5.55 against 5.86 ms but matched 130 of float's 281 wider_val_dev faces at IoU >= 0.9
  against 169.
- `heads_as_matmul` (short range's 1x1 heads as channels-last MatMul, the A/B table): int8 0.504 against 0.512 ms
  for one image (1.6%), 8.03 against 8.41 ms for 16 (4.5%).
- Why onnxruntime's int8 is slow for one image: MLAS's int8 depthwise and stem kernels read an indirection buffer of
  one pointer per kernel tap and output pixel, rebuilt on every run (short range's 5x5 stem, 64x64 outputs: 102,400
  pointers; each 3x3 depthwise at 64x64: 36,864), where the float NCHWc kernels slide over the input; in ORT's
  profile (1 thread, one image) the stem takes 97 us in int8 as in float, the depthwise convolutions 199 us in int8
  against 162 us in float, while the 1x1 ones take 128 against 285.
- LiteRT on 2 threads is erratic here (short range float 3.45 ms in one run, 0.54 ms in the next): its 2-thread
  ratios are not to be trusted.
"""


def render(files: list[Path], results_md: Path) -> None:
    """Write (or replace) this benchmark's section of ``results_md`` from the JSON of earlier runs."""
    runs = [json.loads(f.read_text()) for f in files]
    lines = [SECTION, "", "`python benchmarks/int8_speed.py --model MODEL --json FILE`, then `--render FILE...`. "
             "Per case: median float and int8 ms over rounds, the ratio float / int8 (median and range over rounds) "
             "and the rounds where it was >= 1.5 (the target). LiteRT runs a batch as single-image invocations; "
             "TorchScript runs the files `blazeface export --format torchscript [--int8]` writes: float channels-last "
             "and frozen, int8 PyTorch's FX int8 (x86 kernels); runs before 2026-12-06 timed eager NCHW float against "
             "the FX module (`pytorch_fx`, a slow baseline).", ""]
    for r in runs:
        variants = f"; ONNX variants {json.dumps(r['onnx_variants'])}" if r.get("onnx_variants") else ""
        lines += [f"### {r['model']} ({r['date']}, {r['commit']}, {r['rounds']} rounds x {r['repeats']} repeats{variants})", "",
                  f"{r['machine']}. 1-minute load average before each round: {r['load_average_1min']}.", "",
                  "| case | float ms | int8 ms | float / int8 | range over rounds | rounds >= 1.5 |", "|---|---|---|---|---|---|"]
        for case, v in r["cases"].items():
            lines.append(f"| {case} | {v['float_ms']} | {v['int8_ms']} | {v['ratio_median']} | "
                         f"{v['ratio_range'][0]}-{v['ratio_range'][1]} | {v['rounds_at_1_5']} |")
        lines.append("")
    lines.append(NOTES)
    bench.replace_section(results_md, "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="short_range")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES),
                    help="the pairs to time (litert: when litert-torch is installed)")
    ap.add_argument("--onnx-variant", action="append", default=[], metavar="NAME=JSON",
                    help="also time an ONNX int8 file exported with these quantize_onnx options")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's default malloc settings (else the script re-runs itself with STEADY_MALLOC)")
    ap.add_argument("--render", nargs="+", type=Path, metavar="JSON",
                    help="only write this benchmark's section of benchmarks/RESULTS.md from earlier runs")
    args = ap.parse_args()
    if args.render:
        render(args.render, bench.ROOT / "benchmarks" / "RESULTS.md")
        return
    if not args.default_malloc and any(os.environ.get(k) != v for k, v in STEADY_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_MALLOC})
    size = get_config(args.model).input_size
    rng = np.random.default_rng(0)
    times: dict[str, dict[str, list[float]]] = {}
    loads: list[float] = []
    variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in args.onnx_variant}
    with tempfile.TemporaryDirectory() as tmp:
        files = export_pairs(args.model, Path(tmp), variants, tuple(args.runtimes))
        runs = {t: pairs(files, t) for t in sorted({t for t, _ in CASES})}
        for _ in range(args.rounds):
            loads.append(round(os.getloadavg()[0], 2))
            for threads, batch in CASES:
                torch.set_num_threads(threads)
                x = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
                fns = {}
                for runtime, (f, q) in runs[threads].items():
                    fns[f"{runtime}_t{threads}_b{batch}|float"] = lambda f=f: f(x)
                    fns[f"{runtime}_t{threads}_b{batch}|int8"] = lambda q=q: q(x)
                ms = bench.interleaved_ms(fns, args.repeats if batch == 1 else max(10, args.repeats // 8))
                for key, v in ms.items():
                    case, kind = key.split("|")
                    times.setdefault(case, {"float": [], "int8": []})[kind].append(v)
    rows = {}
    for case, t in times.items():
        ratios = [f / q for f, q in zip(t["float"], t["int8"])]
        rows[case] = {"float_ms": round(statistics.median(t["float"]), 3), "int8_ms": round(statistics.median(t["int8"]), 3),
                      "ratio_median": round(statistics.median(ratios), 3),
                      "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                      "rounds_at_1_5": f"{sum(r >= 1.5 for r in ratios)}/{len(ratios)}"}
    out = {"model": args.model, "onnx_variants": variants, "machine": bench.machine(), "date": datetime.date.today().isoformat(),
           "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=bench.ROOT,
                                    capture_output=True, text=True).stdout.strip(),
           "rounds": args.rounds, "repeats": args.repeats, "load_average_1min": loads,
           "malloc": "glibc default" if args.default_malloc else STEADY_MALLOC, "cases": rows}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
