"""Frame sources: video files (PyAV or OpenCV), webcams and streams (OpenCV), image sequences and folders,
arrays; and :class:`Prefetcher`, which decodes ahead of the network on a background thread.

Every source yields :class:`Frame` objects (index, timestamp in seconds, RGB ``uint8`` ``[H, W, 3]``).
A file that cannot be decoded to its end raises :class:`VideoDecodeError` *after* yielding every frame
before the damage, naming the source, the number of frames read and the reason.
"""

from __future__ import annotations

import glob as _glob
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io import IMAGE_EXTENSIONS, ImageLoadError, array_to_rgb, read_image

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv",
                              ".wmv", ".3gp", ".ogv", ".gif", ".h264", ".264", ".hevc", ".y4m"})
Backend = Literal["auto", "pyav", "opencv"]


class VideoDecodeError(RuntimeError):
    """A source failed part-way (or could not be opened). ``frames_read`` frames were delivered before it."""

    def __init__(self, source: str, frames_read: int, reason: str) -> None:
        self.source, self.frames_read, self.reason = source, frames_read, reason
        super().__init__(f"{source}: {reason} (after {frames_read} frame{'s' if frames_read != 1 else ''})")


@dataclass
class Frame:
    """One decoded frame: its index in the source, its timestamp (seconds) and the RGB image."""

    index: int
    time: float
    image: np.ndarray


class VideoSource:
    """Base class: iterate to get :class:`Frame` objects; ``fps``, ``size`` and ``frame_count`` when known."""

    name: str = "source"
    fps: float | None = None
    size: tuple[int, int] | None = None  # (width, height)
    frame_count: int | None = None
    live: bool = False  # a webcam or stream: process each frame as it comes (no batching)

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps}, size={self.size}, frames={self.frame_count})"


def _frame_time(index: int, fps: float | None) -> float:
    return index / fps if fps else float(index)


class PyAVSource(VideoSource):
    """A video file decoded with PyAV (FFmpeg); exact timestamps; threaded decoding."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import av
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError("reading video files needs PyAV or OpenCV: pip install blazeface[video]") from exc
        self._av = av
        self.name = str(path)
        if not Path(path).exists():
            raise VideoDecodeError(self.name, 0, "no such file")
        try:
            self._container = av.open(self.name)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoDecodeError(self.name, 0, f"cannot open ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(self.name, 0, "no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.size = (int(self._stream.codec_context.width), int(self._stream.codec_context.height))
        self._duration: float | None = None
        if self._stream.duration and self._stream.time_base:
            self._duration = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration and len(self._container.streams) == 1:
            self._duration = self._container.duration / 1e6
        self._declared = int(self._stream.frames or 0)
        if self._declared:
            self.frame_count = self._declared
        elif self._duration and self.fps:
            self.frame_count = int(round(self._duration * self.fps))

    def __iter__(self) -> Iterator[Frame]:
        av = self._av
        n = 0
        last_time = None
        try:
            for frame in self._container.decode(self._stream):
                t = float(frame.time) if frame.time is not None else _frame_time(n, self.fps)
                last_time = t
                yield Frame(n, t, frame.to_ndarray(format="rgb24"))
                n += 1
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoDecodeError(self.name, n, f"decoding failed: {exc}") from exc
        finally:
            self.close()
        if self._declared and n < self._declared:
            raise VideoDecodeError(self.name, n, f"stream ended early: {n} of {self._declared} frames (truncated?)")
        if not self._declared and self._duration and self.fps and last_time is not None:
            if last_time + 3.0 / self.fps < self._duration:
                raise VideoDecodeError(self.name, n, f"stream ended early at {last_time:.2f} s of "
                                                     f"{self._duration:.2f} s (truncated?)")
        if n == 0:
            raise VideoDecodeError(self.name, 0, "no frame could be decoded")

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # pragma: no cover - closing twice
            pass


class OpenCVSource(VideoSource):
    """A file, a webcam (an int index) or a stream URL read with ``cv2.VideoCapture``."""

    def __init__(self, source: str | int | os.PathLike) -> None:
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError("webcams and streams need OpenCV: pip install opencv-python-headless") from exc
        self._cv2 = cv2
        self.live = isinstance(source, int) or "://" in str(source)
        self.name = f"camera {source}" if isinstance(source, int) else str(source)
        if not self.live and not Path(str(source)).exists():
            raise VideoDecodeError(self.name, 0, "no such file")
        self._cap = cv2.VideoCapture(source if isinstance(source, int) else str(source))
        if not self._cap.isOpened():
            raise VideoDecodeError(self.name, 0, "cannot open")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else None
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if not self.live and count and count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        cv2 = self._cv2
        n = 0
        start = None
        try:
            while True:
                ok, img = self._cap.read()
                if not ok or img is None:
                    break
                if self.live:
                    import time

                    now = time.monotonic()
                    start = now if start is None else start
                    t = now - start
                else:
                    msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
                    t = msec / 1000.0 if msec and msec > 0 else _frame_time(n, self.fps)
                    if n == 0 and not msec:
                        t = 0.0
                yield Frame(n, t, np.ascontiguousarray(img[:, :, ::-1]))
                n += 1
        finally:
            self.close()
        if self.frame_count and n < self.frame_count - 1:
            raise VideoDecodeError(self.name, n, f"stream ended early: {n} of {self.frame_count} frames (truncated?)")
        if n == 0 and not self.live:
            raise VideoDecodeError(self.name, 0, "no frame could be decoded")

    def close(self) -> None:
        self._cap.release()


class ImageSequenceSource(VideoSource):
    """Image files as frames, in the given order (``fps`` sets the timestamps; default 30)."""

    def __init__(self, paths: Iterable[str | os.PathLike], fps: float | None = None, name: str | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise VideoDecodeError(name or "image sequence", 0, "no images")
        self.fps = float(fps) if fps else 30.0
        self.frame_count = len(self.paths)
        self.name = name or f"{self.paths[0].parent}/ ({len(self.paths)} images)"

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self.paths):
            try:
                img = read_image(p)
            except ImageLoadError as exc:
                raise VideoDecodeError(self.name, i, str(exc)) from exc
            if self.size is None:
                self.size = (img.shape[1], img.shape[0])
            yield Frame(i, _frame_time(i, self.fps), img)


class ArraySource(VideoSource):
    """Frames from memory: an iterable of ``[H, W, 3]`` RGB arrays (or a ``[T, H, W, 3]`` array)."""

    def __init__(self, frames: Iterable[np.ndarray] | np.ndarray, fps: float | None = 30.0, bgr: bool = False,
                 name: str = "frames") -> None:
        self._frames = frames
        self.fps = float(fps) if fps else None
        self.bgr = bgr
        self.name = name
        if hasattr(frames, "__len__"):
            self.frame_count = len(frames)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Frame]:
        for i, img in enumerate(self._frames):
            arr = array_to_rgb(np.asarray(img), bgr=self.bgr, name=f"{self.name}[{i}]")
            yield Frame(i, _frame_time(i, self.fps), arr)


def open_source(source: Any, backend: Backend = "auto", fps: float | None = None) -> VideoSource:
    """A :class:`VideoSource` for anything that can be read as video.

    - an ``int`` or a digit string (``0``, ``"1"``): a webcam, with OpenCV;
    - a URL (``rtsp://``, ``http://`` …): a stream, with OpenCV;
    - a folder of images, a glob pattern (``"frames/*.png"``), or a list of image paths: an image sequence;
    - a video file: PyAV when installed (``backend="auto"`` or ``"pyav"``), else OpenCV;
    - a ``[T, H, W, 3]`` array or a list of arrays: frames in memory;
    - a :class:`VideoSource`: itself.
    """
    if isinstance(source, VideoSource):
        return source
    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.isdigit()):
        return OpenCVSource(int(source))
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and source
                                          and isinstance(source[0], np.ndarray)):
        return ArraySource(source, fps=fps or 30.0)
    if isinstance(source, (list, tuple)):
        return ImageSequenceSource(source, fps)
    text = str(source)
    if "://" in text:
        return OpenCVSource(text)
    path = Path(text)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise VideoDecodeError(text, 0, "folder holds no images")
        return ImageSequenceSource(files, fps, name=text)
    if any(ch in text for ch in "*?[") and not path.exists():
        files = sorted(Path(p) for p in _glob.glob(text))
        if not files:
            raise VideoDecodeError(text, 0, "pattern matches no file")
        return ImageSequenceSource(files, fps, name=text)
    if path.suffix.lower() in IMAGE_EXTENSIONS and path.suffix.lower() != ".gif":
        return ImageSequenceSource([path], fps, name=text)
    if backend in ("auto", "pyav"):
        try:
            import av  # noqa: F401
        except ImportError:
            if backend == "pyav":
                raise
        else:
            return PyAVSource(path)
    return OpenCVSource(path)


_END = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher:
    """Iterate ``iterable`` on a background thread, ``maxsize`` items ahead (a bounded queue).

    Exceptions raised by the iterable are re-raised in the consumer after the items before them.
    :meth:`close` (or leaving a ``with`` block) stops the thread.
    """

    def __init__(self, iterable: Iterable[Any], maxsize: int = 8) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(maxsize)))
        self._stop = threading.Event()
        self._iterable = iterable
        self._thread = threading.Thread(target=self._run, name="blazeface-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._iterable:
                if not self._put(item):
                    return
        except BaseException as exc:  # forwarded to the consumer
            self._put(_Raised(exc))
            return
        finally:
            close = getattr(self._iterable, "close", None)
            if self._stop.is_set() and callable(close):
                close()
        self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock the producer
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
