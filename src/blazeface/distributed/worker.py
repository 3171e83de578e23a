"""The detector stage: a callable class that Ray Data runs as a pool of stateful actors.

Each actor loads the model once, then for every batch of input rows: drops the inputs already in the output,
reads and decodes the rest in background threads (a bad input becomes an error row, never a failed task),
detects, writes anonymized copies and crops when asked, and writes the batch's results as one Parquet part
file named by its inputs. It returns one summary row per batch, so results never travel through the driver.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..io import ImageLoadError, decode_image_bytes, read_image
from . import output
from .filesystem import fs_path, is_local, is_uri, join, read_bytes, resolve, write_bytes


@dataclass
class WorkerConfig:
    """Everything an actor needs; plain data, pickled once per actor."""

    output: str
    model: str = "short_range"
    weights: str | None = None
    min_score: float | None = None
    backend: str = "auto"
    device: str | None = None  # None: CUDA when the actor was given a GPU
    threads: int = 1  # ONNX Runtime / torch threads
    decode_threads: int = 1
    batch_size: int = 32
    blur: str | None = None
    blur_mode: str = "pixelate"
    crops: str | None = None
    crop_size: int = 112
    filesystem: Any = None  # for the inputs (None: from each path)
    output_filesystem: Any = None
    manifest_filesystem: Any = None  # a pyarrow filesystem holding the manifests
    path_column: str = "path"
    bytes_column: str | None = None
    rows_per_file: int = 256
    fault_marker: str | None = None  # tests: the first batch that claims this file kills its actor


class DetectWorker:
    """``map_batches`` callable class: one instance per actor."""

    def __init__(self, config: WorkerConfig | dict, done: list | None = None) -> None:
        import torch

        from ..detector import FaceDetector

        self.cfg = config if isinstance(config, WorkerConfig) else WorkerConfig(**config)
        torch.set_num_threads(max(1, self.cfg.threads))
        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.detector = FaceDetector(self.cfg.model, device=device, min_score=self.cfg.min_score,
                                     weights=self.cfg.weights, batch_size=self.cfg.batch_size,
                                     backend=self.cfg.backend if device == "cpu" else "torch",  # type: ignore[arg-type]
                                     threads=self.cfg.threads)
        self.out_fs, self.out_dir, _ = resolve(self.cfg.output, self.cfg.output_filesystem)
        self.blur_fs, self.blur_dir = self._out(self.cfg.blur)
        self.crop_fs, self.crop_dir = self._out(self.cfg.crops)
        self.in_fs = None
        if self.cfg.filesystem is not None:
            self.in_fs = resolve("", self.cfg.filesystem)[0]
        self._fs_cache: dict[str, Any] = {}
        if done:  # [ObjectRef] or [array]: the digests of the inputs already in the output
            import ray

            ref = done[0]
            self.done = ray.get(ref) if isinstance(ref, ray.ObjectRef) else np.asarray(ref)
        else:
            self.done = np.zeros(0, dtype="S16")

    def _out(self, uri: str | None):  # noqa: ANN202
        if not uri:
            return None, None
        fs, path, _ = resolve(uri, self.cfg.output_filesystem)
        return fs, path

    # --- reading -----------------------------------------------------------------------------
    def _fs_for(self, name: str):  # noqa: ANN202
        if self.in_fs is not None:
            return self.in_fs, fs_path(name)
        if not is_uri(name):
            return None, name
        scheme = name.split("://", 1)[0]
        if scheme not in self._fs_cache:
            self._fs_cache[scheme] = resolve(name)[0]
        return self._fs_cache[scheme], fs_path(name)

    def _load(self, name: str, blob: Any, error: str | None) -> np.ndarray:
        try:
            if error:
                raise ImageLoadError(error)
            if blob is not None:
                if isinstance(blob, str):  # JSONL manifests carry base64
                    blob = base64.b64decode(blob)
                return decode_image_bytes(bytes(blob), name)
            fs, path = self._fs_for(name)
            if fs is None or is_local(fs):
                return read_image(path)  # the single-process reader: identical pixels and messages
            try:
                data = read_bytes(fs, path)
            except FileNotFoundError as exc:
                raise ImageLoadError(f"{name}: no such file") from exc
            except OSError as exc:
                raise ImageLoadError(f"{name}: cannot read ({exc})") from exc
            return decode_image_bytes(data, name)
        except ImageLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - per-row error capture: one input never fails a batch
            raise ImageLoadError(f"{name}: {type(exc).__name__}: {exc}") from exc

    # --- the batch -------------------------------------------------------------------------------
    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        """A block of listed inputs (one part file), or manifest units (one part file per ``rows_per_file``)."""
        n = len(batch["path"])
        units = _column(batch, "unit_file", n)
        summaries = []
        listed = [i for i in range(n) if units[i] is None]
        if listed:
            pick = lambda key: [v for i, v in enumerate(_column(batch, key, n)) if units[i] is None]  # noqa: E731
            summaries.append(self._process([str(p) for p in pick("path")], [None] * len(listed), pick("error"),
                                           pick("rel")))
        kinds, groups = _column(batch, "unit_kind", n), _column(batch, "unit_group", n)
        for i in range(n):
            if units[i] is not None:
                for names, blobs in self._read_unit(str(units[i]), str(kinds[i]), int(groups[i])):
                    summaries.append(self._process(names, blobs, [None] * len(names), [None] * len(names)))
        return {k: [s[k] for s in summaries] for k in ("file", "rows", "errors", "faces", "skipped")}

    def _read_unit(self, path: str, kind: str, group: int):  # noqa: ANN202 - yields (names, blobs) chunks
        """The rows of one manifest unit, ``rows_per_file`` at a time (always the same chunks for a unit)."""
        fs, size = self.cfg.manifest_filesystem, self.cfg.rows_per_file
        pcol, bcol = self.cfg.path_column, self.cfg.bytes_column
        if kind == "parquet":
            import pyarrow.parquet as pq

            with fs.open_input_file(path) as f:
                cols = [pcol] + ([bcol] if bcol else [])
                table = pq.ParquetFile(f).read_row_group(group, columns=cols)
            for start in range(0, table.num_rows, size):
                chunk = table.slice(start, size)
                names = [str(p) for p in chunk.column(pcol).to_pylist()]
                yield names, chunk.column(bcol).to_pylist() if bcol else [None] * len(names)
            return
        import gzip
        import json

        with fs.open_input_stream(path) as raw:
            data = raw.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        names, blobs = [], []
        for line in data.decode("utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            names.append(str(rec[pcol]))
            blobs.append(rec.get(bcol or "bytes"))
            if len(names) == size:
                yield names, blobs
                names, blobs = [], []
        if names:
            yield names, blobs

    def _process(self, names: list[str], blobs: Sequence[Any], errors: Sequence[Any], rels: Sequence[Any]
                 ) -> dict[str, Any]:
        """Decode, detect and write one part file for these inputs (those not already in the output)."""
        from ..stream import prefetch_map

        n = len(names)
        todo = np.flatnonzero(~output.isin_sorted(output.digest(names), self.done)) if len(self.done) else np.arange(n)
        if not len(todo):
            return {"file": None, "rows": 0, "errors": 0, "faces": 0, "skipped": n}
        model, version = self.detector.model_name, __version__
        records: dict[int, dict[str, Any]] = {}
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            dets = self.detector.detect_tensors([img for _, img in pending], [names[i] for i, _ in pending])
            for (i, img), det in zip(pending, dets):
                records[i] = _record(names[i], model, version, det.width, det.height, _faces(det))
                self._extras(img, det, names[i], rels[i])
            pending.clear()

        items = (str(int(i)) for i in todo)
        for key, image in prefetch_map(lambda k: self._load(names[int(k)], blobs[int(k)], errors[int(k)]), items,
                                       workers=self.cfg.decode_threads):
            i = int(key)
            if isinstance(image, ImageLoadError):
                records[i] = _record(names[i], model, version, error=str(image))
            else:
                pending.append((i, image))
                if len(pending) >= self.detector.batch_size:
                    flush()
        if pending:
            flush()
        rows = [records[int(i)] for i in todo]
        name = output.write_part(self.out_fs, self.out_dir, rows)
        self._maybe_fail()
        return {"file": name, "rows": len(rows), "errors": sum(r["error"] is not None for r in rows),
                "faces": sum(len(r["faces"]) for r in rows), "skipped": n - len(rows)}

    def _extras(self, image: np.ndarray, det: Any, name: str, rel: str | None) -> None:
        if self.blur_fs is None and self.crop_fs is None:
            return
        from ..align import aligned_crops
        from .anonymize import anonymize, encode

        rel = rel or fs_path(name).lstrip("/")
        if self.blur_fs is not None:
            data, out_name = encode(anonymize(image, det, self.cfg.blur_mode), rel)  # type: ignore[arg-type]
            write_bytes(self.blur_fs, join(self.blur_dir, out_name), data)
        if self.crop_fs is not None:
            for k, crop in enumerate(aligned_crops(image, det, size=self.cfg.crop_size).images):
                data, out_name = encode(crop, f"{rel}.face{k}.jpg")
                write_bytes(self.crop_fs, join(self.crop_dir, out_name), data)

    def _maybe_fail(self) -> None:
        """Fault injection for tests: the first batch to claim the marker file kills its actor (after writing
        its part file, the worst moment: Ray restarts the actor and retries the batch)."""
        marker = self.cfg.fault_marker
        if marker:
            try:
                os.rename(marker, marker + ".fired")
            except OSError:
                return
            os._exit(1)


def _column(batch: dict[str, Any], key: str, n: int) -> Sequence[Any]:
    col = batch.get(key) if hasattr(batch, "get") else None
    if col is None:
        return [None] * n
    return [None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in col]


def _faces(det: Any) -> list[dict[str, Any]]:
    return [{"score": float(det.scores[i]), "box": det.boxes[i].tolist(), "keypoints": det.keypoints[i].tolist()}
            for i in range(len(det))]


def _record(path: str, model: str, version: str, width: int | None = None, height: int | None = None,
            faces: list[dict[str, Any]] | None = None, error: str | None = None) -> dict[str, Any]:
    return {"path": path, "width": width, "height": height, "faces": faces or [], "error": error,
            "model": model, "version": version}

