"""The few functions where numpy and torch differ, so that box ops run on either (CPU numpy, any-device torch)."""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def xp(x: Array) -> Any:
    """The array module of ``x``: ``numpy`` or ``torch``."""
    return np if isinstance(x, np.ndarray) else torch


def concat(parts: list[Array], axis: int = -1) -> Array:
    return np.concatenate(parts, axis=axis) if isinstance(parts[0], np.ndarray) else torch.cat(parts, dim=axis)


def clamp_min(x: Array, low: float) -> Array:
    """``max(x, low)`` elementwise (numpy's ``clip`` costs microseconds of Python per call; ``maximum`` does not)."""
    return np.maximum(x, low) if isinstance(x, np.ndarray) else x.clamp(min=low)


def clamp(x: Array, low: float, high: float) -> Array:
    """``x`` limited to ``[low, high]`` (numpy's ``clip`` wrapper costs microseconds of Python per call)."""
    return np.minimum(np.maximum(x, low), high) if isinstance(x, np.ndarray) else x.clamp(low, high)


def sigmoid(x: Array) -> Array:
    if isinstance(x, np.ndarray):
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)
    return torch.sigmoid(x)


def argsort_desc(x: Array) -> Array:
    """Indices sorting ``x`` descending; ties keep input order."""
    if isinstance(x, np.ndarray):
        return np.argsort(-x, kind="stable")
    return torch.argsort(x, descending=True, stable=True)


def first_true(mask: Array) -> int:
    """Index of the first ``True`` of a 1-D boolean array that has one."""
    if isinstance(mask, np.ndarray):
        return int(mask.argmax())
    return int(torch.argmax(mask.to(torch.uint8)))
