"""The output folder: Parquet part files named by a hash of the inputs they hold, written whole or not at all.

Layout of ``OUT_DIR``::

    part-<16 hex>.parquet   one per batch of inputs: path, width, height, faces, error, model, version
    _blazeface_job.json     the model and settings of the job (a rerun with other settings is refused)

A rerun lists the paths already present and skips them; a retried batch (an actor that died and restarted)
rewrites the same file under the same name. :func:`read_results` drops any duplicate rows all the same.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .filesystem import join, read_bytes, resolve, write_bytes

FACE_TYPE = pa.struct([
    ("score", pa.float32()),
    ("box", pa.list_(pa.float32())),  # x1, y1, x2, y2 pixels
    ("keypoints", pa.list_(pa.list_(pa.float32()))),  # 6 × (x, y) pixels, MediaPipe order
])
SCHEMA = pa.schema([
    ("path", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("faces", pa.list_(FACE_TYPE)),
    ("error", pa.string()),
    ("model", pa.string()),
    ("version", pa.string()),
])
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
JOB_FILE = "_blazeface_job.json"


def digest(paths: Iterable[str]) -> np.ndarray:
    """A 128-bit digest per path (``S16``), for set membership without holding the strings."""
    return np.array([hashlib.blake2b(p.encode("utf-8", "surrogatepass"), digest_size=16).digest() for p in paths],
                    dtype="S16")


def isin_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``keys[i] in sorted_keys`` for each key (``sorted_keys`` sorted, unique)."""
    if not len(sorted_keys) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    idx = np.searchsorted(sorted_keys, keys)
    idx[idx == len(sorted_keys)] = 0
    return sorted_keys[idx] == keys


def part_name(paths: Sequence[str]) -> str:
    """A stable file name for a batch: the same inputs always give the same name."""
    h = hashlib.blake2b(digest_size=8)
    for p in sorted(paths):
        h.update(p.encode("utf-8", "surrogatepass") + b"\0")
    return f"{PART_PREFIX}{h.hexdigest()}{PART_SUFFIX}"


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=SCHEMA)


def write_part(fs: pafs.FileSystem, out_dir: str, records: list[dict[str, Any]]) -> str:
    """Write ``records`` as one part file (atomically); returns its name."""
    name = part_name([r["path"] for r in records])
    buf = io.BytesIO()
    pq.write_table(to_table(records), buf, compression="zstd")
    write_bytes(fs, join(out_dir, name), buf.getvalue())
    return name


def list_parts(fs: pafs.FileSystem, out_dir: str) -> list[str]:
    info = fs.get_file_info(pafs.FileSelector(out_dir, recursive=False, allow_not_found=True))
    return sorted(f.path for f in info if f.type == pafs.FileType.File and f.base_name.startswith(PART_PREFIX)
                  and f.base_name.endswith(PART_SUFFIX))


def done_digests(fs: pafs.FileSystem, out_dir: str) -> np.ndarray:
    """Sorted unique digests of every path already in the output (unreadable part files are ignored: their
    inputs are simply done again)."""
    chunks = []
    for part in list_parts(fs, out_dir):
        try:
            with fs.open_input_file(part) as f:
                paths = pq.read_table(f, columns=["path"]).column("path").to_pylist()
        except (OSError, pa.ArrowException):
            continue
        chunks.append(digest(paths))
    if not chunks:
        return np.zeros(0, dtype="S16")
    return np.unique(np.concatenate(chunks))


def read_job(fs: pafs.FileSystem, out_dir: str) -> dict[str, Any] | None:
    try:
        return json.loads(read_bytes(fs, join(out_dir, JOB_FILE)))
    except (FileNotFoundError, OSError, ValueError):
        return None


def write_job(fs: pafs.FileSystem, out_dir: str, job: dict[str, Any]) -> None:
    write_bytes(fs, join(out_dir, JOB_FILE), json.dumps(job, indent=1, sort_keys=True).encode())


def read_results(out_dir: str, filesystem: object | None = None, columns: list[str] | None = None,
                 dedupe: bool = True) -> pa.Table:
    """Every result row of a job's output folder as one :class:`pyarrow.Table` (each path once)."""
    fs, path, _ = resolve(out_dir, filesystem)
    tables = []
    for part in list_parts(fs, path):
        with fs.open_input_file(part) as f:
            tables.append(pq.read_table(f, columns=columns))
    if not tables:
        return SCHEMA.empty_table() if columns is None else pa.schema([SCHEMA.field(c) for c in columns]).empty_table()
    table = pa.concat_tables(tables)
    if dedupe and table.num_rows:
        table = table.append_column("__row", pa.array(np.arange(table.num_rows)))
        first = table.group_by("path", use_threads=False).aggregate([("__row", "min")]).column("__row_min")
        table = table.take(np.sort(first.to_numpy())).drop_columns(["__row"])
    return table
