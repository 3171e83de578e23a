"""Accuracy on wider_val_dev (issue 5): AP easy / medium / hard for every model, with and without tiling, beside
MediaPipe's own reference detections scored by the same code, and the time per image.

One command (from the repository root, with ``pip install -e ".[eval]"``):

    python benchmarks/eval_wider.py

It writes ``benchmarks/eval_wider.json``, ``benchmarks/pr_<model>.png`` and the section
``## Accuracy on wider_val_dev (issue 5)`` of ``benchmarks/RESULTS.md`` (other sections are kept).
Options: ``--models short_range full_range_sparse``, ``--limit 20`` (a quick look), ``--threads 2``.

Rows per model: untiled at MediaPipe's threshold (the model's own; compare with MediaPipe's reference), untiled
at the evaluation threshold 0.05, tiled (``tiling="auto"``) at 0.05. AP is computed with
:func:`blazeface.eval.evaluate` (continuous IoU, toolbox matching, 1000 cut-offs, VOC-interpolated AP), on the
boxes as detected and, in separate columns, on the boxes reshaped to WIDER's annotation style
(:func:`blazeface.eval.to_wider_style`). Time: detection only (from the decoded ``[H, W, 3]`` tensor to
:class:`Detections`), one image per call, a detector built with ``threads=t`` (and
``torch.set_num_threads(t)``) per thread count; the median over the 1024-wide images, with the load average of each timing pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from blazeface import FaceDetector  # noqa: E402
from blazeface.eval import evaluate, read_annotations_json, read_mediapipe_json, to_wider_style  # noqa: E402
from blazeface.eval.report import plot_pr  # noqa: E402
from blazeface.eval.runner import run_detector  # noqa: E402
from blazeface.tiling import plan_tiles  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine_info import machine  # noqa: E402
from tune_tiling import event_halves  # noqa: E402

MODELS = ["short_range", "full_range_sparse", "full_range", "back"]
MEDIAPIPE = {"short_range", "full_range_sparse"}
SECTION = "## Accuracy on wider_val_dev (issue 5)"


def _ap(gt, dets):
    return evaluate(gt, dets), evaluate(gt, to_wider_style(dets))


def _halves_ap(gt, dets):
    """AP on the two halves of the event split (``tune_tiling.event_halves``: tile settings were chosen on
    ``tuning`` and confirmed on ``held_back``)."""
    keys = sorted(gt.images)
    tuning, held = event_halves([gt.images[k].path or k for k in keys])
    by_path = {gt.images[k].path or k: k for k in keys}
    out = {}
    for half, paths in (("tuning", tuning), ("held_back", held)):
        ks = [by_path[p] for p in paths]
        out[half] = evaluate(gt.subset(ks), {k: dets[k] for k in ks if k in dets}).ap if ks else None
    return out


def _median_ms(run, gt, width=1024):
    vals = [s for k, s in run.seconds.items() if gt.images[k].size and gt.images[k].size[0] == width]
    return 1000.0 * float(np.median(vals)) if vals else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wider_val_dev"))
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--limit", type=int, help="only the first N images (a quick look; RESULTS.md is not written)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the accuracy runs (default 1)")
    p.add_argument("--time-threads", type=int, nargs="+", default=[2, 1],
                   help="threads for the timing pass (default: 2 and 1; torch and ONNX Runtime)")
    p.add_argument("--time-images", type=int, default=10, help="1024-wide images in the timing pass (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="timing: the best of this many calls per image")
    p.add_argument("--out", default=str(ROOT / "benchmarks"))
    p.add_argument("--untiled-low", action="store_true", help="also run untiled at the evaluation threshold 0.05")
    p.add_argument("--results-only", action="store_true",
                   help="rewrite the RESULTS.md section from an existing eval_wider.json (e.g. after editing the notes)")
    p.add_argument("--time-only", action="store_true",
                   help="re-time the rows of an existing eval_wider.json (AP kept), e.g. on a quiet machine after the "
                        "accuracy run on a busy one; rewrites the json and the RESULTS.md section")
    args = p.parse_args(argv)
    if args.time_only:
        return retime(Path(args.data), Path(args.out), args.time_threads, args.time_images, args.repeats)
    if args.results_only:
        saved = json.loads((Path(args.out) / "eval_wider.json").read_text())
        write_results(Path(args.out) / "RESULTS.md", saved["rows"], saved["meta"])
        return 0
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    gt = read_annotations_json(data / "annotations.json")
    if args.limit:
        gt = gt.subset(sorted(gt.images)[:args.limit])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves_all, meta = [], {}, {}
    sizes = [im.size for im in gt.images.values() if im.size]
    for model in args.models:
        curves = {}
        if model in MEDIAPIPE:
            dets = read_mediapipe_json(data / "mediapipe_0.10.14.json", model)
            raw, wider = _ap(gt, dets)
            rows.append({"model": model, "run": "MediaPipe 0.10.14 (reference file)", "raw": raw.ap, "wider": wider.ap,
                         "found_easy": raw["easy"].num_found, "ms": None, "tiles": 1})
            curves["MediaPipe"] = raw
        runs = [("untiled, MediaPipe threshold", None, "off"), ("tiled, 0.05", 0.05, "auto")]
        if args.untiled_low:
            runs.insert(1, ("untiled, 0.05", 0.05, "off"))
        for label, min_score, tiling in runs:
            det = FaceDetector(model, device="cpu", min_score=min_score, tiling=tiling)
            t0 = time.time()
            run = run_detector(det, gt)
            raw, wider = _ap(gt, run.detections)
            tiles = float(np.mean([len(plan_tiles(w, h, det.input_size, model, det.tiling)) if det.tiling else 1
                                   for w, h in sizes]))
            label = label.replace("MediaPipe threshold", f"MediaPipe threshold {det.min_score:g}")
            timing, load_avg = time_detector(model, min_score, tiling, gt, args.time_threads, args.time_images,
                                             args.repeats)
            torch.set_num_threads(args.threads)
            rows.append({"model": model, "run": label, "raw": raw.ap, "wider": wider.ap,
                         "found_easy": raw["easy"].num_found, "ms": timing.get(2, timing[min(timing)]),
                         "ms_by_threads": timing, "load_avg_1min_timing": load_avg, "tiles": tiles,
                         "flip": float(np.mean([plan_tiles(w, h, det.input_size, model, det.tiling)[0].flip
                                                if det.tiling else False for w, h in sizes])),
                         "halves": _halves_ap(gt, run.detections), "ms_accuracy_pass_median": _median_ms(run, gt)})
            curves[label] = raw
            print(f"{model:18s} {label:34s} AP {raw.ap['easy']:.3f} {raw.ap['medium']:.3f} {raw.ap['hard']:.3f} | "
                  f"WIDER-style {wider.ap['easy']:.3f} {wider.ap['medium']:.3f} {wider.ap['hard']:.3f} | "
                  f"ms/img {timing}, {tiles:.1f} tiles ({time.time() - t0:.0f} s)", flush=True)
        plot_pr(out / f"pr_{model}.png", curves, f"{model}, wider_val_dev")
        curves_all[model] = curves
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"images": len(gt), "faces": gt.num_faces, "threads": args.threads, "time_threads": args.time_threads,
            "time_images": args.time_images, "repeats": args.repeats, "torch": torch.__version__,
            "cpu": machine(), "cpus": os.cpu_count(), "load_avg_1min_at_end": load}
    (out / "eval_wider.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    if not args.limit:
        write_results(out / "RESULTS.md", rows, meta)
    return 0


def retime(data: Path, out: Path, threads: list[int], n_images: int, repeats: int) -> int:
    """The timing pass alone, for every detector row of ``out/eval_wider.json``."""
    saved = json.loads((out / "eval_wider.json").read_text())
    gt = read_annotations_json(data / "annotations.json")
    for row in saved["rows"]:
        if row.get("ms") is None:  # MediaPipe's reference file: nothing to time
            continue
        tiled = row["run"].startswith("tiled")
        min_score = float(row["run"].split()[-1]) if not row["run"].startswith("untiled, MediaPipe") else None
        timing, load_avg = time_detector(row["model"], min_score, "auto" if tiled else "off", gt, threads, n_images,
                                         repeats)
        row.update(ms=timing.get(2, timing[min(timing)]), ms_by_threads=timing, load_avg_1min_timing=load_avg)
        print(f"{row['model']:18s} {row['run']:34s} ms/img {timing} (load {load_avg:.1f})", flush=True)
    saved["meta"].update(time_threads=threads, time_images=n_images, repeats=repeats,
                         load_avg_1min_at_end=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    (out / "eval_wider.json").write_text(json.dumps(saved, indent=1) + "\n")
    write_results(out / "RESULTS.md", saved["rows"], saved["meta"])
    return 0


def time_detector(model, min_score, tiling, gt, threads, n_images, repeats):
    """Median over ``n_images`` 1024-wide images of the best of ``repeats`` calls, per thread count (ms), with a
    detector built for that thread count (the default backend, ONNX Runtime, fixes its threads when built); and
    the 1-minute load average after the pass. The best of several calls filters out the time the process waits for
    a CPU held by other jobs."""
    from blazeface.io import read_image

    keys = [k for k in sorted(gt.images) if gt.images[k].size and gt.images[k].size[0] == 1024][:n_images]
    imgs = [torch.from_numpy(read_image(gt.image_path(k)).copy()) for k in keys]
    out = {}
    for t in threads:
        torch.set_num_threads(t)
        det = FaceDetector(model, device="cpu", min_score=min_score, tiling=tiling, threads=t)
        det.detect_tensors([imgs[0]])
        best = []
        for img in imgs:
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                det.detect_tensors([img])
                ts.append(time.perf_counter() - t0)
            best.append(min(ts))
        out[t] = 1000.0 * float(np.median(best))
    return out, (os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))


def _fmt(v, nd=3):
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _ms(r) -> str:
    t = r.get("ms_by_threads")
    if not t:
        return ""
    text = " / ".join(f"{t[k]:.0f}" for k in sorted(t, key=int, reverse=True))
    load = r.get("load_avg_1min_timing")
    return text if load is None else f"{text} (load {load:.1f})"


def _tiles(r) -> str:
    flip = r.get("flip") or 0.0
    return _fmt(r["tiles"], 1) + ("" if not flip else " ×2 (flip)" if flip == 1 else f" (flip on {flip:.0%})")


def write_results(path: Path, rows, meta) -> None:
    lines = [SECTION, "",
             f"`python benchmarks/eval_wider.py` on `../shared/data/wider_val_dev` ({meta['images']} images, "
             f"{meta['faces']} faces; easy 398 / medium 900 / hard 2,858 in the settings). AP by `blazeface.eval` "
             "(WIDER FACE toolbox matching, IoU ≥ 0.5 on continuous boxes, 1000 score cut-offs, VOC-interpolated AP); "
             "the MediaPipe rows score its reference file with the same code. *WIDER-style* columns reshape every "
             "detector's boxes to WIDER's annotation style first (`blazeface eval --box-style wider`: BlazeFace boxes "
             "are 10% wider, 17% shorter and 3% lower than WIDER's). Time: detection only (decoded image tensor in, "
             f"`Detections` out), one image per call, the best of {meta['repeats']} calls per image, median over "
             f"{meta['time_images']} 1024-wide images, at 2 and 1 threads (a detector built for each: ONNX Runtime, "
             f"the default backend, fixes its threads when built); CPU {meta['cpu']} (1-min load average {meta['load_avg_1min_at_end']:.1f} at the end of the run; "
             "on a shared machine times are inflated and noisy). PR curves: `benchmarks/pr_<model>.png`.", "",
             "| model | run | AP easy | AP medium | AP hard | WIDER-style easy | medium | hard "
             "| ms / image (2 threads / 1) (1-min load avg) | tiles |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['run']} | {_fmt(r['raw']['easy'])} | {_fmt(r['raw']['medium'])} | "
                     f"{_fmt(r['raw']['hard'])} | {_fmt(r['wider']['easy'])} | {_fmt(r['wider']['medium'])} | "
                     f"{_fmt(r['wider']['hard'])} | {_ms(r)} | {_tiles(r)} |")
    lines.append("")
    halves = [r for r in rows if r.get("halves")]
    if halves:
        lines += ["AP on the two halves of the event split the tile settings were chosen with "
                  "(`benchmarks/tune_tiling.py`: "
                  "events sorted by number, every 2nd held back; *tuning*: `0--Parade`, `4--Dancing`, "
                  "`8--Election_Campain`, 52 images; *held back*: `2--Demonstration`, `6--Funeral`, 83 images):", "",
                  "| model | run | tuning easy | medium | hard | held-back easy | medium | hard |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in halves:
            t, h = r["halves"]["tuning"], r["halves"]["held_back"]
            lines.append(f"| {r['model']} | {r['run']} | {_fmt(t['easy'])} | {_fmt(t['medium'])} | {_fmt(t['hard'])} | "
                         f"{_fmt(h['easy'])} | {_fmt(h['medium'])} | {_fmt(h['hard'])} |")
        lines.append("")
    section = "\n".join(lines) + "\n"
    notes = path.with_name("eval_wider_notes.md")
    if notes.exists():
        section += "\n" + notes.read_text(encoding="utf-8").strip() + "\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
