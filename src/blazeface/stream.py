"""Decode images in background threads while the network runs: bounded memory, input order kept."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from .io import ImageLoadError, read_image

T = TypeVar("T")


def prefetch_map(fn: Callable[[str], T], items: Iterable[str], workers: int | None = None,
                 prefetch: int | None = None) -> Iterator[tuple[str, T | ImageLoadError]]:
    """``(item, fn(item))`` in input order, computed by ``workers`` threads at most ``prefetch`` items ahead.

    An :class:`ImageLoadError` raised by ``fn`` is yielded in place of the result, so one bad input never
    stops the stream. At most ``prefetch`` results are held in memory at any time.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    prefetch = max(prefetch or 4 * workers, 1)
    pending: deque[tuple[str, Future[T]]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blazeface-decode") as pool:
        exhausted = False
        while True:
            while not exhausted and len(pending) < prefetch:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, pool.submit(fn, item)))
            if not pending:
                return
            item, future = pending.popleft()
            try:
                yield item, future.result()
            except ImageLoadError as exc:
                yield item, exc


def iter_images(paths: Iterable[str], workers: int | None = None, prefetch: int | None = None
                ) -> Iterator[tuple[str, np.ndarray | ImageLoadError]]:
    """Decoded RGB ``uint8`` images (or the error) for ``paths``, read ahead in background threads."""
    return prefetch_map(read_image, paths, workers, prefetch)
