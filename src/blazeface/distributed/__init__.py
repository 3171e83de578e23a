"""Scale-out with Ray Data (extra ``[ray]``): detect, blur or crop faces in millions of images.

>>> from blazeface.distributed import detect_images, read_results
>>> summary = detect_images("s3://bucket/photos/", "s3://bucket/faces/", blur="s3://bucket/blurred/")
>>> table = read_results("s3://bucket/faces/")   # pyarrow.Table: path, width, height, faces, error, ...

Importing this package imports neither Ray nor pyarrow (so that ``blazeface detect`` works without the extra);
the names below load their modules on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .anonymize import anonymize  # numpy and Pillow only (and the function must shadow its module's name)

_EXPORTS = {"SCHEMA": "output", "read_results": "output",
            "DEFAULT_ROWS_PER_FILE": "pipeline", "JobSummary": "pipeline", "detect_images": "pipeline"}

__all__ = sorted([*_EXPORTS, "anonymize"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
