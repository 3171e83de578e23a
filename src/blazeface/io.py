"""Reading images from files, PIL images, numpy arrays and torch tensors, with errors that name the input.

Everything becomes an RGB ``uint8`` array ``[H, W, 3]`` (or, for float torch input, a float tensor
in ``[0, 255]``), which :mod:`blazeface.preprocess` letterboxes.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})

#: Largest image accepted, in pixels (PIL's decompression-bomb guard uses the same idea).
MAX_IMAGE_PIXELS = 20_000 * 20_000

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Any]


class ImageLoadError(ValueError):
    """An input could not be read as an image; the message names the input and the reason."""


def describe(source: object) -> str:
    """A short name for an input, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"numpy array of shape {source.shape} and dtype {source.dtype}"
    if isinstance(source, Image.Image):
        return f"PIL image ({source.mode}, {source.width}×{source.height})"
    shape = getattr(source, "shape", None)
    return f"{type(source).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{name}: contains NaN or infinite values")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ImageLoadError(f"{name}: float images must hold values in [0, 1]")
        return np.rint(arr * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ImageLoadError(f"{name}: integer images must hold values in [0, 255] (or be uint16)")
        return arr.astype(np.uint8)
    raise ImageLoadError(f"{name}: unsupported dtype {arr.dtype}")


def array_to_rgb(arr: np.ndarray, bgr: bool = False, name: str | None = None) -> np.ndarray:
    """An ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` array as contiguous RGB ``uint8``.

    ``bgr=True`` reads 3/4-channel arrays as OpenCV's BGR(A). Alpha is dropped; grey is replicated;
    ``uint16`` is scaled to 8 bits; floats must lie in ``[0, 1]``.
    """
    if (not bgr and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] and arr.shape[1]
            and arr.flags.c_contiguous):
        return arr  # already what the detector takes
    name = name or describe(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageLoadError(f"{name}: expected an image array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageLoadError(f"{name}: image has no pixels")
    arr = _to_uint8(arr, name)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if bgr:
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def pil_to_rgb(img: Image.Image, name: str | None = None) -> np.ndarray:
    """A PIL image of any mode as RGB ``uint8`` (16-bit scaled, alpha dropped, palette expanded)."""
    name = name or describe(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return array_to_rgb(np.asarray(img).astype(np.uint16), name=name)
    if img.mode == "I":
        arr = np.asarray(img)
        return array_to_rgb(arr.astype(np.uint16) if arr.max(initial=0) > 255 else arr.astype(np.uint8), name=name)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return array_to_rgb(arr / 255.0 if arr.max(initial=0) > 1 else arr, name=name)
    if img.mode != "RGB":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return array_to_rgb(np.array(img), name=name)  # a writable copy, owned by the caller


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB ``uint8`` ``[H, W, 3]``, applying its EXIF orientation.

    Raises :class:`ImageLoadError` naming the file for a missing, empty, truncated, non-image or
    oversized (decompression bomb) file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageLoadError(f"{p}: is a directory, not an image")
    if p.stat().st_size == 0:
        raise ImageLoadError(f"{p}: empty file (0 bytes)")
    return _decode(p, str(p))


def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes exactly as :func:`read_image` decodes a file, with the same errors naming ``name``."""
    if not data:
        raise ImageLoadError(f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), name)


def _decode(source: Path | io.BytesIO, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(
                        f"{name}: {img.width}×{img.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} "
                        "(possible decompression bomb)")
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return pil_to_rgb(img, name)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageLoadError(f"{name}: not a recognized image file") from exc
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot decode image ({exc})") from exc
    except (ValueError, SyntaxError, MemoryError) as exc:
        raise ImageLoadError(f"{name}: corrupt image ({type(exc).__name__}: {exc})") from exc


def load_image(source: ImageInput, bgr: bool = False) -> np.ndarray:
    """Any supported single input (path, PIL image, numpy array) as RGB ``uint8`` ``[H, W, 3]``."""
    if isinstance(source, (str, os.PathLike)):
        return read_image(source)
    if isinstance(source, Image.Image):
        return pil_to_rgb(source)
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, bgr=bgr)
    raise ImageLoadError(f"{describe(source)}: unsupported input type; expected a path, PIL image, numpy array or tensor")


def iter_image_files(paths: Iterable[str | os.PathLike], recursive: bool = True) -> Iterator[Path]:
    """Files named directly (whatever their extension) and image files found in folders, sorted per folder.

    Raises :class:`ImageLoadError` for a folder that holds no image; a missing path is yielded as is
    so that the caller records the error for it.
    """
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            pattern = p.rglob("*") if recursive else p.glob("*")
            found = sorted(f for f in pattern if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ImageLoadError(f"{p}: directory contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            yield from found
        else:
            yield p
