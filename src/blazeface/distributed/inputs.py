"""What a job reads: image files (a folder, a glob, single files) listed on the driver, or manifests
(Parquet / JSONL tables with a path column and, optionally, the encoded image bytes) read by Ray Data.

Every listed input is a row with ``path`` (the name recorded in the output), ``rel`` (where its blurred copy and
crops go, relative to the output folders) and ``error`` (set when listing already failed, e.g. a missing file).
A manifest becomes *units* (one Parquet row group, or one JSONL file) that the actors read themselves: no
read tasks compete with the actors for CPUs, and image bytes go from storage to the actor that decodes them.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from ..io import IMAGE_EXTENSIONS
from .filesystem import glob_to_regex, has_magic, is_uri, resolve

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")

ROW_SCHEMA = pa.schema([("path", pa.string()), ("rel", pa.string()), ("error", pa.string()),
                        ("unit_file", pa.string()), ("unit_kind", pa.string()), ("unit_group", pa.int32())])


class InputError(ValueError):
    """An input cannot be used at all (unknown scheme, manifest without a path column, ...)."""


@dataclass
class Manifest:
    """Parquet or JSONL files listing the inputs, read by Ray Data on the workers."""

    kind: str  # "parquet" | "jsonl"
    fs: pafs.FileSystem
    paths: list[str]


@dataclass
class InputPlan:
    fs: pafs.FileSystem | None = None
    rows: list[dict] = field(default_factory=list)  # listed image files (and listing errors)
    manifests: list[Manifest] = field(default_factory=list)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=ROW_SCHEMA)

    def units(self) -> pa.Table:
        """One row per manifest unit: a Parquet row group, or a whole JSONL file."""
        rows = []
        for m in self.manifests:
            for path in m.paths:
                if m.kind == "parquet":
                    import pyarrow.parquet as pq

                    with m.fs.open_input_file(path) as f:
                        groups = pq.ParquetFile(f).metadata.num_row_groups
                    rows += [{"unit_file": path, "unit_kind": "parquet", "unit_group": g} for g in range(groups)]
                else:
                    rows.append({"unit_file": path, "unit_kind": "jsonl", "unit_group": 0})
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _is_image(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _manifest_kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


def _name(record_base: str, fs_base: str, fs_file: str) -> str:
    """The recorded name of ``fs_file`` found under ``fs_base`` whose recorded name is ``record_base``."""
    if record_base == fs_base:
        return fs_file
    return record_base.rstrip("/") + "/" + fs_file[len(fs_base):].lstrip("/")


def plan_inputs(inputs: list[str], filesystem: object | None = None) -> InputPlan:
    """Resolve folders, globs, image files and manifests. Folders are searched recursively for image files
    (sorted); a folder with no image but Parquet files is a Parquet manifest. The filesystem of the first
    input is used for all of them."""
    plan = InputPlan()
    seen: set[str] = set()

    def add(path: str, rel: str, error: str | None = None) -> None:
        if path not in seen:  # every input once, even when named twice
            seen.add(path)
            plan.rows.append({"path": path, "rel": rel, "error": error})

    for raw in inputs:
        fs, base, record = resolve(raw, filesystem)
        if plan.fs is None:
            plan.fs = fs
        elif type(fs) is not type(plan.fs):
            raise InputError(f"{raw}: all inputs of one job must be on the same filesystem")
        prefix = record[: len(record) - len(base)] if is_uri(record) and record.endswith(base) else ""
        if has_magic(base):
            static = base
            while has_magic(static):
                static = posixpath.dirname(static)
            regex = glob_to_regex(base)
            try:
                found = fs.get_file_info(pafs.FileSelector(static or "/", recursive=True, allow_not_found=True))
            except OSError as exc:
                raise InputError(f"{raw}: cannot list ({exc})") from exc
            files = sorted(f.path for f in found if f.type == pafs.FileType.File and regex.match(f.path))
            manifests = [f for f in files if _manifest_kind(f)]
            if manifests and len(manifests) == len(files):
                kinds = {_manifest_kind(f) for f in manifests}
                for kind in sorted(kinds):
                    plan.manifests.append(Manifest(kind, fs, [f for f in manifests if _manifest_kind(f) == kind]))
                continue
            if not files:
                add(record, posixpath.basename(base), f"{record}: no file matches the pattern")
            for f in files:
                add(prefix + f, posixpath.relpath(f, static) if static else f.lstrip("/"))
            continue
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            files = sorted(f.path for f in found if f.type == pafs.FileType.File)
            images = [f for f in files if _is_image(f)]
            if images:
                for f in images:
                    add(_name(record, base, f), posixpath.relpath(f, base))
            elif any(f.lower().endswith(PARQUET_SUFFIXES) for f in files):
                plan.manifests.append(Manifest("parquet", fs, [f for f in files if f.lower().endswith(PARQUET_SUFFIXES)]))
            else:
                add(record, posixpath.basename(base.rstrip("/")) or "input",
                    f"{record}: directory contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif info.type == pafs.FileType.File and _manifest_kind(base):
            plan.manifests.append(Manifest(_manifest_kind(base) or "", fs, [base]))
        else:  # a single file; a missing one is recorded with its error by the worker
            add(record, posixpath.basename(base))
    return plan
