"""The Ray Data job: inputs → stateful detector actors (``map_batches``) → Parquet part files."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .. import __version__
from ..registry import get_config
from . import output
from .filesystem import resolve
from .inputs import InputPlan, Manifest, plan_inputs
from .worker import DetectWorker, WorkerConfig

#: Rows per part file (and per actor call) by default: big enough for few files, small enough that an
#: interrupted job loses little work.
DEFAULT_ROWS_PER_FILE = 256


@dataclass
class JobSummary:
    """What one run did. ``skipped``: inputs already in the output before this run."""

    output: str
    inputs: int | None
    skipped: int
    processed: int
    errors: int
    faces: int
    files: int
    actors: int
    gpus_per_actor: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_job(fs: Any, out_dir: str, job: dict[str, Any]) -> None:
    old = output.read_job(fs, out_dir)
    if old is None:
        return
    keys = ("model", "min_score", "weights")
    if any(old.get(k) != job.get(k) for k in keys):
        diff = ", ".join(f"{k}: {old.get(k)!r} there, {job.get(k)!r} now" for k in keys if old.get(k) != job.get(k))
        raise ValueError(f"{out_dir} holds results of another configuration ({diff}); choose another --output")


def _init_ray(address: str | None, num_cpus: int | None, quiet: bool) -> bool:
    """Connect to ``address`` or start a local instance; ``True`` when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING if quiet else logging.INFO}
    if address in (None, "", "local"):
        kwargs.update(address="local", num_cpus=num_cpus)
    else:
        kwargs.update(address=address)
    ray.init(**kwargs)
    return True


def _manifest_bytes_column(m: Manifest, bytes_column: str | None) -> str | None:
    """``bytes_column`` as given, else ``bytes`` or ``image`` when the manifest's schema has a binary one."""
    if bytes_column or m.kind != "parquet":
        return bytes_column
    import pyarrow as pa
    import pyarrow.parquet as pq

    with m.fs.open_input_file(m.paths[0]) as f:
        schema = pq.read_schema(f)
    for name in ("bytes", "image"):
        if name in schema.names and (pa.types.is_binary(schema.field(name).type)
                                     or pa.types.is_large_binary(schema.field(name).type)):
            return name
    return None


def detect_images(
    inputs: str | Sequence[str],
    output_dir: str,
    *,
    model: str = "short_range",
    weights: str | None = None,
    min_score: float | None = None,
    backend: str = "auto",
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    batch_size: int | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    decode_threads: int | None = None,
    blur: str | None = None,
    blur_mode: str = "pixelate",
    crops: str | None = None,
    crop_size: int = 112,
    filesystem: object | None = None,
    output_filesystem: object | None = None,
    path_column: str = "path",
    bytes_column: str | None = None,
    device: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = False,
    _fault_marker: str | None = None,
) -> JobSummary:
    """Detect faces in every input with a Ray Data actor pool and write Parquet part files to ``output_dir``.

    Args:
        inputs: folders (searched recursively), globs (``**`` crosses folders), image files, or Parquet / JSONL
            manifests with a ``path_column`` (and optionally ``bytes_column``, base64 in JSONL); local paths
            or URIs (``s3://``, ``gs://``, any pyarrow or fsspec scheme).
        output_dir: folder or URI for ``part-*.parquet``; inputs already there are skipped (resume).
        actors: detector actors (default: one per GPU, else one per ``cpus_per_actor`` CPUs of the cluster).
        cpus_per_actor: CPUs reserved per actor (default 1 on CPUs, 4 with a GPU); also its decoding and
            inference threads.
        gpus_per_actor: GPUs per actor (default: 1 when the cluster has GPUs, else 0).
        batch_size: images per forward pass (default 32 on CPUs, 256 on a GPU).
        rows_per_file: inputs per actor call and per part file.
        blur, crops: folders (or URIs) for anonymized copies and face crops, mirroring the input names.
        filesystem / output_filesystem: a pyarrow or fsspec filesystem for the inputs / outputs.
        device: ``"cpu"`` keeps the actors off GPUs even when the cluster has some.
        address: a Ray cluster (``ray://...``, ``HOST:PORT``, ``auto``); default: a new local instance
            (``num_cpus`` CPUs), or the one already initialized in this process.
    """
    import ray
    import ray.data

    start = time.perf_counter()
    plan: InputPlan = plan_inputs([inputs] if isinstance(inputs, str) else list(inputs), filesystem)
    out_fs, out_dir, out_name = resolve(output_dir, output_filesystem)
    out_fs.create_dir(out_dir, recursive=True)
    cfg = get_config(model)
    job = {"model": cfg.name, "min_score": min_score, "weights": str(weights) if weights else None,
           "version": __version__}
    _check_job(out_fs, out_dir, job)
    output.write_job(out_fs, out_dir, job)
    done = output.done_digests(out_fs, out_dir)

    table = plan.table()
    skipped = 0
    if table.num_rows and len(done):
        keep = ~output.isin_sorted(output.digest(table.column("path").to_pylist()), done)
        skipped = int((~keep).sum())
        table = table.filter(keep)
    total = table.num_rows if not plan.manifests else None
    if not table.num_rows and not plan.manifests:
        return JobSummary(out_name, skipped, skipped, 0, 0, 0, 0, 0, 0.0, time.perf_counter() - start)

    quiet = not progress
    started = _init_ray(address, num_cpus, quiet)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        if quiet:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        if gpus_per_actor is None:
            gpus_per_actor = 1.0 if gpus > 0 and not (device or "").startswith("cpu") else 0.0
        use_gpu = gpus_per_actor > 0
        if cpus_per_actor is None:
            cpus_per_actor = 4.0 if use_gpu else 1.0
        if actors is None:
            actors = int(gpus // gpus_per_actor) if use_gpu else int(resources.get("CPU", 1) // max(cpus_per_actor, 1e-3))
            actors = max(1, actors)
        threads = max(1, int(cpus_per_actor))
        wcfg = WorkerConfig(
            output=output_dir, model=model, weights=str(weights) if weights else None, min_score=min_score,
            backend=backend, device="cuda" if use_gpu else "cpu", threads=1 if use_gpu else threads,
            decode_threads=decode_threads or threads, batch_size=batch_size or (256 if use_gpu else 32),
            blur=blur, blur_mode=blur_mode, crops=crops, crop_size=crop_size, filesystem=filesystem,
            output_filesystem=output_filesystem, fault_marker=_fault_marker)

        bcol = bytes_column
        if plan.manifests and not bcol:
            bcol = _manifest_bytes_column(plan.manifests[0], None)
        wcfg.manifest_filesystem, wcfg.path_column, wcfg.bytes_column = plan.fs, path_column, bcol
        wcfg.rows_per_file = rows_per_file
        blocks = []
        if table.num_rows:  # blocks of rows_per_file listed inputs; smaller when that leaves an actor idle
            per_block = min(rows_per_file, -(-table.num_rows // actors))
            blocks += [table.slice(i, per_block) for i in range(0, table.num_rows, per_block)]
        units = plan.units()
        blocks += [units.slice(i, 1) for i in range(units.num_rows)]  # one manifest unit per block
        actors = max(1, min(actors, len(blocks)))
        ds = ray.data.from_arrow(blocks)
        done_arg = [ray.put(done)] if plan.manifests and len(done) else None
        ds = ds.map_batches(  # batch_size=None: one call per block (one part file, or one manifest unit)
            DetectWorker, fn_constructor_kwargs={"config": wcfg, "done": done_arg}, batch_size=None,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None)  # Ray Data restarts dead actors and retries their batches by default

        processed = errors = faces = 0
        files: set[str] = set()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc=f"detect ({cfg.name}, {actors} actors)", file=sys.stderr)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for f, n, e, k, s in zip(batch["file"], batch["rows"], batch["errors"], batch["faces"], batch["skipped"]):
                if int(n):
                    files.add(str(f))
                processed += int(n)
                errors += int(e)
                faces += int(k)
                skipped += int(s)
                if bar is not None:
                    bar.update(int(n) + int(s))
        if bar is not None:
            bar.close()
    finally:
        if started:
            ray.shutdown()
    inputs_total = (processed + skipped) if total is None else total + skipped
    return JobSummary(out_name, inputs_total, skipped, processed, errors, faces, len(files), actors,
                      float(gpus_per_actor), time.perf_counter() - start)
