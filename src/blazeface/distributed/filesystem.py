"""Paths and URIs on any pyarrow or fsspec filesystem: local folders, ``s3://``, ``gs://``, ``hdfs://``, ...

Inputs are recorded under the name the user gave (an absolute path, or the full URI) and opened through a
:class:`pyarrow.fs.FileSystem`, which pickles to every Ray worker.
"""

from __future__ import annotations

import os
import re
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs

_PATH_ONLY_SCHEMES = {"file", "local", "hdfs", "viewfs"}


def is_uri(path: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def as_pyarrow(filesystem: object) -> pafs.FileSystem:
    """A pyarrow filesystem as is; an fsspec filesystem wrapped in :class:`pyarrow.fs.PyFileSystem`."""
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    if hasattr(filesystem, "open") and hasattr(filesystem, "ls"):  # fsspec.AbstractFileSystem
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    raise TypeError(f"filesystem must be a pyarrow.fs.FileSystem or an fsspec filesystem, got {type(filesystem).__name__}")


def fs_path(name: str) -> str:
    """The path a filesystem object opens for a recorded name: a URI without its scheme (``s3://b/k`` → ``b/k``)."""
    if not is_uri(name):
        return name
    u = urlparse(name)
    if u.scheme in _PATH_ONLY_SCHEMES:
        return u.path
    return (u.netloc + u.path) if u.netloc else u.path.lstrip("/")


def resolve(uri: str, filesystem: object | None = None) -> tuple[pafs.FileSystem, str, str]:
    """``(filesystem, path on it, name to record)`` for a path or URI.

    With ``filesystem`` given, ``uri`` is a path on it (a scheme, if any, is dropped). Otherwise the
    scheme picks the filesystem (pyarrow's own, else fsspec's); plain paths are local and made absolute.
    """
    if filesystem is not None:
        return as_pyarrow(filesystem), fs_path(uri), uri
    if not is_uri(uri):
        path = os.path.abspath(os.path.expanduser(uri))
        return pafs.LocalFileSystem(), path, path
    if urlparse(uri).scheme in ("file", "local"):
        path = urlparse(uri).path
        return pafs.LocalFileSystem(), path, path
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception:  # noqa: BLE001 - not a pyarrow scheme: let fsspec try
        import fsspec

        ffs, path = fsspec.core.url_to_fs(uri)
        fs = as_pyarrow(ffs)
    return fs, path, uri.rstrip("/")


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a whole file so that readers never see it half-written (temporary name + rename when local;
    object stores publish an object only once its upload completes)."""
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.create_dir(parent, recursive=True)
    if is_local(fs):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` within one path segment, ``**`` across segments, ``[...]`` character classes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")
