#!/usr/bin/env python3
"""End-to-end speed of blazeface against MediaPipe's pipeline and the bare TFLite interpreter, in one run.

    python benchmarks/bench_speed.py [--mediapipe-python PATH] [--threads 2] [--write]

Cases (short-range model unless stated): one 1280×720 image, one 640×480 image (decoded RGB array in,
``Detections`` out, median latency); a batch of 64 images at 128×128 (throughput); a folder of JPEGs including
decoding (throughput, peak RSS for 100 vs 500 files, CPU use); batches of 256 on the GPU when there is one.
Peers in the same run: MediaPipe 0.10.14's ``FaceDetection.process`` (a side Python with ``mediapipe==0.10.14``
and ``numpy<2``, driven as a subprocess by ``mediapipe_peer.py``) and the TFLite interpreter (``ai-edge-litert``)
on the bare network. ``--write`` replaces the speed section of ``benchmarks/RESULTS.md`` and writes
``benchmarks/speed.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine_info import machine  # noqa: E402


def timed(fn, count: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``count`` calls of ``fn`` (after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_ms(fn, repeat: int, warmup: int = 10) -> float:
    return statistics.median(timed(fn, repeat, warmup)) * 1e3


def make_images(tmp: Path) -> dict[str, Path]:
    src = Image.open(ROOT / "examples" / "grace_hopper.jpg").convert("RGB")
    out = {}
    for name, size in (("1280x720", (1280, 720)), ("640x480", (640, 480))):
        p = tmp / f"{name}.jpg"
        src.resize(size, Image.BILINEAR).save(p, quality=95)
        out[name] = p
    return out


def make_folder(tmp: Path, count: int) -> Path:
    """``count`` JPEGs of mixed sizes made from the public-domain fixtures."""
    folder = tmp / f"folder{count}"
    folder.mkdir(exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in sorted((ROOT / "examples").iterdir())]
    sizes = [(640, 480), (1024, 768), (800, 800), (1280, 720), (480, 640)]
    cache: dict[tuple[int, int], Path] = {}
    for i in range(count):
        key = (i % len(sources), i % len(sizes))
        if key not in cache:
            p = folder / f"{i:05d}.jpg"
            sources[key[0]].resize(sizes[key[1]], Image.BILINEAR).save(p, quality=90)
            cache[key] = p
        else:
            shutil.copy(cache[key], folder / f"{i:05d}.jpg")
    return folder


def folder_run(folder: str, backend: str, threads: int) -> dict:
    """Run in a fresh process: stream a folder, report throughput, peak RSS and CPU use."""
    code = f"""
import json, os, resource, time, torch
torch.set_num_threads({threads})
from blazeface import FaceDetector
from blazeface.io import iter_image_files
d = FaceDetector('short_range', device='cpu', backend={backend!r}, threads={threads}, batch_size=32)
files = list(iter_image_files([{folder!r}]))
t0, c0 = time.perf_counter(), os.times()
n = sum(1 for _ in d.stream(files))
t1, c1 = time.perf_counter(), os.times()
cpu = (c1.user - c0.user) + (c1.system - c0.system)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({{"images": n, "images_per_s": n / (t1 - t0), "cpu_busy": cpu / (t1 - t0),
                  "peak_rss_mb": int(hwm) / 1024}}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


class MediaPipePeer:
    """MediaPipe's pipeline in a side Python (``mediapipe_peer.py --serve``): :meth:`times` runs one image
    ``count`` times there and returns the latencies, so that its blocks interleave with ours."""

    def __init__(self, python: str, images: list[Path]) -> None:
        cmd = [python, str(ROOT / "benchmarks" / "mediapipe_peer.py"), "--serve", *map(str, images)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = json.loads(self._line())["ready"]

    def _line(self) -> str:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the MediaPipe peer exited (is mediapipe==0.10.14 installed in that Python?)")
        return line

    def times(self, index: int, count: int) -> list[float]:
        self.proc.stdin.write(f"{index} {count}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._line())

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=60)


def start_mediapipe(python: str | None, images: list[Path]) -> MediaPipePeer | None:
    if not python:
        return None
    try:
        return MediaPipePeer(python, images)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"MediaPipe peer failed: {exc}", file=sys.stderr)
        return None


def interleaved(contenders: dict, peer: MediaPipePeer | None, index: int, repeat: int, rounds: int = 30) -> dict:
    """Latencies of one image, in ``rounds`` rounds of ``repeat // rounds`` runs: MediaPipe's block, then each
    contender's, round after round, so that a drift of the machine's speed hits every side alike. Returns the median
    ms per side and, with MediaPipe, the per-round ratios of the best contender to MediaPipe."""
    per_round = max(30, repeat // rounds)
    # Before each block: 10 untimed runs (as the peer does), which also outlast the other side's idle worker
    # threads spinning after their last run. (A pause instead lets the vCPUs idle: the first ~10 runs after
    # 50 ms of sleep are up to 2.5x slower, so a pause plus 3 warm-up runs inflated the short blocks.)
    warmup = 10
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    peer_samples: list[float] = []
    round_ratios = []
    for _ in range(rounds):
        if peer is not None:
            block = peer.times(index, per_round)
            peer_samples += block
        medians = {}
        for name, fn in contenders.items():
            got = timed(fn, per_round, warmup=warmup)
            samples[name] += got
            medians[name] = statistics.median(got)
        if peer is not None:
            round_ratios.append(min(medians.values()) / statistics.median(block))
    out = {"ms": {name: statistics.median(v) * 1e3 for name, v in samples.items()}}
    if peer is not None:
        out["mediapipe_ms"] = statistics.median(peer_samples) * 1e3
        out["round_ratios"] = round_ratios
    return out


def tflite_peer(threads: int, repeat: int) -> dict:
    """The bare short-range network in the TFLite interpreter (XNNPACK), one image per invoke."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(SHARED / "models" / "face_detection_short_range.tflite"), num_threads=threads)
    interp.allocate_tensors()
    idx = interp.get_input_details()[0]["index"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)

    def run():
        interp.set_tensor(idx, x)
        interp.invoke()

    ms = median_ms(run, repeat)
    return {"median_ms": ms, "images_per_s": 1e3 / ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mediapipe-python", default=os.environ.get("MEDIAPIPE_PYTHON"),
                    help="a Python with mediapipe==0.10.14 (e.g. /tmp/mp/bin/python); omitted: no MediaPipe peer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--folder-size", type=int, default=500)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md and benchmarks/speed.png")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from blazeface import FaceDetector, __version__
    from blazeface.inference import available_backends

    tmp = Path(tempfile.mkdtemp(prefix="blazeface-bench-"))
    images = make_images(tmp)
    arrays = {k: np.asarray(Image.open(p).convert("RGB")).copy() for k, p in images.items()}
    results: dict = {"threads": args.threads, "cases": {}}
    backends = [b for b in ("onnxruntime", "torch") if b in available_backends()]
    detectors = {b: FaceDetector("short_range", device="cpu", backend=b, threads=args.threads, batch_size=64)
                 for b in backends}
    tflite_file = SHARED / "models" / "face_detection_short_range.tflite"
    if tflite_file.is_file():  # our pipeline with MediaPipe's own network file in LiteRT (XNNPACK)
        detectors["litert file"] = FaceDetector(str(tflite_file), device="cpu", threads=args.threads, batch_size=64)

    # One image: MediaPipe's blocks and ours alternate (the machine is shared and its speed drifts).
    peer = start_mediapipe(args.mediapipe_python, list(images.values()))
    tfl = tflite_peer(args.threads, args.repeat)
    mediapipe = {}
    for index, (name, arr) in enumerate(arrays.items()):
        run = interleaved({b: (lambda det=det, arr=arr: det(arr)) for b, det in detectors.items()}, peer, index,
                          args.repeat)
        results["cases"][name] = run["ms"]
        if peer is not None:
            mediapipe[name] = run["mediapipe_ms"]
            results.setdefault("round_ratios", {})[name] = run["round_ratios"]
    if peer is not None:
        results["mediapipe"] = mediapipe
        results["mediapipe_version"] = peer.version
        peer.close()
    # Where one image's time goes (default backend): letterbox, network, decoding + NMS, each alone.
    det = detectors[backends[0]]
    arr = arrays["1280x720"]
    batch, boxes = det.preprocess([arr])
    raw = det.forward(batch)
    results["stages_1280x720"] = {"backend": backends[0],
                                  "letterbox": median_ms(lambda: det.preprocess([arr]), args.repeat),
                                  "network": median_ms(lambda: det.forward(batch), args.repeat),
                                  "decode_nms": median_ms(lambda: det.postprocess(*raw, boxes), args.repeat)}
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(64)]
    batch[0] = np.asarray(Image.open(ROOT / "examples" / "pillow_hopper.png").convert("RGB")).copy()
    case = results["cases"].setdefault("batch64x128", {})
    for b, det in detectors.items():
        ms = median_ms(lambda: det(batch), max(10, args.repeat // 20), warmup=2)
        case[b] = 64e3 / ms  # images/s
    tfl2 = tflite_peer(args.threads, args.repeat)
    tfl_ms = min(tfl["median_ms"], tfl2["median_ms"])
    results["tflite_bare_network"] = {"median_ms": tfl_ms, "images_per_s": 1e3 / tfl_ms}
    # Folder of JPEGs, in fresh processes so peak RSS belongs to the run.
    small = make_folder(tmp, 100)
    big = make_folder(tmp, args.folder_size)
    results["folder"] = {b: {"100": folder_run(str(small), b, args.threads),
                             str(args.folder_size): folder_run(str(big), b, args.threads)} for b in backends}
    # GPU, when there is one.
    if torch.cuda.is_available():
        gpu = FaceDetector("short_range", device="cuda", backend="torch", batch_size=256)
        gbatch = torch.randint(0, 256, (256, 128, 128, 3), dtype=torch.uint8, device="cuda")
        frames = list(gbatch)

        def run_gpu():
            gpu.detect_tensors(frames)
            torch.cuda.synchronize()

        ms = median_ms(run_gpu, 20, warmup=3)
        results["gpu"] = {"device": torch.cuda.get_device_name(), "images_per_s": 256e3 / ms}
    shutil.rmtree(tmp, ignore_errors=True)

    results["meta"] = {
        "date": dt.date.today().isoformat(), "machine": machine(),
        "python": platform.python_version(), "torch": torch.__version__, "blazeface": __version__,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=ROOT).stdout.strip(),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(results, indent=1))
    (ROOT / "benchmarks" / "speed.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.write:
        write_results(results)


def write_results(r: dict) -> None:
    m = r["meta"]
    mp = r.get("mediapipe", {})
    lines = [
        "## Speed (issue 3)",
        "",
        f"`python benchmarks/bench_speed.py --mediapipe-python PATH --write`, commit `{m['commit']}`, {m['date']}, "
        f"{m['machine']}, {r['threads']} threads, torch {m['torch']}, load average at the end {m['load_average']:.2f}. "
        "Medians; every peer ran in the same run. One image: 30 rounds, each a block of 30 of MediaPipe's runs then a "
        "block of 30 of each of ours (each block after 10 untimed runs), so that the machine's "
        "drifting speed hits every side alike; the ratio column gives the ratio of the medians, then the median and "
        "the range of the 30 per-round ratios. "
        "*litert file* = this package's pipeline (letterbox, decoding, NMS, batching) running MediaPipe's own "
        "`face_detection_short_range.tflite` in LiteRT, `FaceDetector(path)`.",
        "",
        "| case | " + " | ".join(f"blazeface {b}" for b in r["cases"]["1280x720"]) + " | MediaPipe 0.10.14 | ratio (best / MediaPipe) |",
        "|---|" + "---|" * (len(r["cases"]["1280x720"]) + 2),
    ]
    for name in ("1280x720", "640x480"):
        case = r["cases"][name]
        best = min(case.values())
        peer = mp.get(name)
        rr = r.get("round_ratios", {}).get(name) or [best / peer] if peer else []
        lines.append(f"| one {name} image, end to end (ms) | " + " | ".join(f"{v:.2f}" for v in case.values())
                     + f" | {peer:.2f} | {best / peer:.2f} (rounds: median {statistics.median(rr):.2f}, {min(rr):.2f}–{max(rr):.2f}) |"
                     if peer else
                     f"| one {name} image, end to end (ms) | " + " | ".join(f"{v:.2f}" for v in case.values()) + " | – | – |")
    st = r.get("stages_1280x720")
    if st and mp.get("1280x720"):
        lines += ["", f"One 1280×720 image with {st['backend']}, each stage alone: letterbox {st['letterbox']:.2f} ms, "
                  f"network {st['network']:.2f} ms ({st['network'] / mp['1280x720']:.2f}× MediaPipe's whole pipeline), "
                  f"decoding + NMS {st['decode_nms']:.2f} ms."]
    t = r["tflite_bare_network"]
    case = r["cases"]["batch64x128"]
    lines += [
        "",
        "Batch of 64 images at 128×128, whole pipeline (images/s): "
        + ", ".join(f"{b} {v:.0f}" for b, v in case.items())
        + f"; TFLite interpreter on the bare network, {r['threads']} threads: {t['images_per_s']:.0f} images/s "
        f"({t['median_ms']:.2f} ms) → ratio {max(case.values()) / t['images_per_s']:.2f}.",
        "",
        "Folder of JPEGs (decoding included, background decoding threads):",
        "",
        "| backend | files | images/s | CPU busy (cores) | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for b, runs in r["folder"].items():
        for n, f in runs.items():
            lines.append(f"| {b} | {n} | {f['images_per_s']:.0f} | {f['cpu_busy']:.2f} | {f['peak_rss_mb']:.0f} |")
    if mp.get("1280x720"):
        lat = min(r["cases"]["1280x720"].values()) / mp["1280x720"]
        thr = max(case.values()) / t["images_per_s"]
        runs = r["folder"].get("onnxruntime") or next(iter(r["folder"].values()))
        rss = [f["peak_rss_mb"] for f in runs.values()]
        busy = min(f["cpu_busy"] for f in runs.values())
        lines += ["", "Targets of issue 3 in this run: one 1280×720 image ≤ 0.5× MediaPipe: "
                  f"{lat:.2f} ({'met' if lat <= 0.5 else 'not met'}); batch of 64 ≥ the bare TFLite network: {thr:.2f}× "
                  f"({'met' if thr >= 1 else 'not met'}); folder: peak RSS {min(rss):.0f}–{max(rss):.0f} MB for "
                  f"{' and '.join(runs)} files, {busy:.2f} of 2 cores busy."]
    if "gpu" in r:
        lines += ["", f"GPU ({r['gpu']['device']}): {r['gpu']['images_per_s']:.0f} images/s, batches of 256 at "
                  "128×128, end to end (letterbox, network, decoding, NMS on the device)."]
    else:
        lines += ["", "GPU: no GPU in this run."]
    section = "\n".join(lines) + "\n"
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach section says how it was made; rerun its command to check.\n"
    start = text.find("## Speed (issue 3)")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(r["cases"]["1280x720"]) + (["MediaPipe"] if mp else [])
        values = list(r["cases"]["1280x720"].values()) + ([mp["1280x720"]] if mp else [])
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(names, values, color=["tab:green"] * (len(names) - bool(mp)) + (["tab:gray"] if mp else []))
        ax.set_xlabel("ms per 1280×720 image, end to end (lower is better)")
        fig.tight_layout()
        fig.savefig(ROOT / "benchmarks" / "speed.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no chart", file=sys.stderr)


if __name__ == "__main__":
    main()
