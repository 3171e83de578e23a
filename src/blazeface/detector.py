"""The user-facing detector: images of any size in, :class:`~blazeface.results.Detections` out."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import ModelConfig
from .io import ImageInput, ImageLoadError, describe, load_image
from .nn.blazenet import BlazeNet
from .ops.anchors import generate_anchors
from .ops.boxes import decode_boxes, scores_from_logits
from .ops._array import argsort_desc
from .ops.nms import NMSMode, non_max_suppression
from .inference import Backend, BackendName, is_model_file, load_backend, make_backend
from .preprocess import Letterbox, letterbox_batch, letterbox_numpy
from .registry import create_model, get_config
from .results import Detections
from .tiling import TileConfig, TilingArg, detect_tiled, resolve_tiling


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only arrays from PIL: we never write to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def tensor_to_hwc(image: torch.Tensor, name: str) -> torch.Tensor:
    """A ``[3, H, W]`` / ``[1, H, W]`` tensor (``uint8``, or float in ``[0, 1]``) as ``[H, W, 3]`` in ``[0, 255]``."""
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ImageLoadError(f"{name}: expected a CHW tensor with 1, 3 or 4 channels")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ImageLoadError(f"{name}: image has no pixels")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 4:
        image = image[:3]
    if image.dtype == torch.uint8:
        return image.permute(1, 2, 0)
    if not image.is_floating_point():
        raise ImageLoadError(f"{name}: tensors must be uint8 or float in [0, 1], got {image.dtype}")
    if not bool(torch.isfinite(image).all()) or float(image.min()) < 0 or float(image.max()) > 1:
        raise ImageLoadError(f"{name}: float tensors must hold finite values in [0, 1]")
    return (image.float() * 255.0).permute(1, 2, 0)


class FaceDetector:
    """Detect faces with any registered BlazeFace model, on images of any size, in batches.

    Args:
        model: a registered name (``"short_range"``, ``"back"``, ``"full_range"``, ``"full_range_sparse"``,
            ``"front_2019"`` with ``weights=``, ``"paper"``), see :func:`blazeface.list_models`; or an exported
            file (``.onnx``, ``.tflite``, TorchScript ``.pt``), run by its runtime (see :mod:`blazeface.inference.files`).
        device: ``"cpu"``, ``"cuda"``, … ; ``None`` uses CUDA when available.
        min_score: score threshold; ``None`` uses the model's own (MediaPipe's graph value).
        min_suppression: IoU above which detections merge in NMS; ``None``: the model's (0.3).
        weights: a ``.safetensors`` file to load instead of the shipped weights.
        nms: ``"weighted"`` (MediaPipe's blending) or ``"hard"``.
        max_faces: keep at most this many faces per image.
        batch_size: images per forward pass when called on a list (tiles per forward pass when tiling).
        backend: ``"torch"``, ``"onnxruntime"`` (CPU) or ``"auto"`` (ONNX Runtime on the CPU when installed).
        half: fp16 network on CUDA (scores within 5e-3 of fp32, see the README).
        threads: CPU threads for ONNX Runtime (default: ``torch.get_num_threads()``).
        tiling: ``"off"`` (default: one letterbox per image, as MediaPipe), ``"auto"`` or a
            :class:`~blazeface.tiling.TileConfig`: multi-scale overlapping tiles for small faces in large images.

    Call it on one image (path, PIL image, ``[H, W, C]`` array, ``[C, H, W]`` tensor) to get one
    :class:`Detections`, or on a list / ``[B, C, H, W]`` tensor / ``[B, H, W, C]`` array to get a list.
    """

    def __init__(
        self,
        model: str | Path = "short_range",
        device: str | torch.device | None = None,
        min_score: float | None = None,
        min_suppression: float | None = None,
        weights: str | Path | None = None,
        nms: NMSMode = "weighted",
        max_faces: int | None = None,
        batch_size: int = 64,
        backend: BackendName = "auto",
        half: bool = False,
        threads: int | None = None,
        tiling: TilingArg = "off",
    ) -> None:
        file_backend = None
        if is_model_file(model):  # an exported file: its runtime replaces the network in forward()
            file_backend = load_backend(model, threads)
            model = file_backend.model_name
        self.config: ModelConfig = get_config(str(model))
        self.device = resolve_device(device)
        self.net: BlazeNet | None = None
        if file_backend is None:
            self.net = create_model(self.config.name, pretrained=weights is None, weights=weights).to(self.device)
            if self.config.weights is None and weights is None:
                raise ValueError(f"model {self.config.name!r} ships no weights; pass weights=PATH")
        self.min_score = self.config.min_score if min_score is None else float(min_score)
        self.min_suppression = self.config.min_suppression if min_suppression is None else float(min_suppression)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 <= self.min_suppression <= 1.0:
            raise ValueError(f"min_suppression must be in [0, 1], got {self.min_suppression}")
        self.nms: NMSMode = nms
        self.max_faces = max_faces
        self.batch_size = int(batch_size)
        self.anchors = generate_anchors(self.config.anchors).to(self.device)
        self._anchors_np = generate_anchors(self.config.anchors).numpy()
        self.backend: Backend = file_backend or make_backend(backend, self.net, self.device, half=half, threads=threads)
        p = min(max(self.min_score, 1e-7), 1 - 1e-7)
        #: Raw logits below this cannot reach ``min_score`` (a cheap pre-filter; the exact test is on scores).
        self.logit_floor = math.log(p / (1 - p)) - 0.01
        self.tiling: TileConfig | None = resolve_tiling(tiling)
        self.chunk_size = 2  # images per worker task when a CPU batch runs in parallel (see _detect_parallel)
        self._pool: Any = None

    @property
    def model_name(self) -> str:
        return self.config.name

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def __repr__(self) -> str:
        return (f"FaceDetector(model={self.model_name!r}, device={str(self.device)!r}, backend={self.backend.name!r}, "
                f"min_score={self.min_score}, min_suppression={self.min_suppression}, nms={self.nms!r})")

    # --- input handling -----------------------------------------------------------------------
    def _load(self, image: Any, bgr: bool) -> tuple[np.ndarray | torch.Tensor, str | None]:
        """One input as an RGB ``[H, W, 3]`` array (files, PIL, arrays) or tensor, and its path if any."""
        if isinstance(image, torch.Tensor):
            return tensor_to_hwc(image, describe(image)), None
        path = str(image) if isinstance(image, (str, Path)) else None
        return load_image(image, bgr=bgr), path

    @staticmethod
    def _is_batch(images: Any) -> bool:
        if isinstance(images, (list, tuple)):
            return True
        if isinstance(images, torch.Tensor):
            return images.ndim == 4
        if isinstance(images, np.ndarray):
            return images.ndim == 4
        return False

    # --- the pipeline -------------------------------------------------------------------------
    def __call__(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor, *, bgr: bool = False
                 ) -> Detections | list[Detections]:
        """Detect faces; one image gives one :class:`Detections`, a batch gives a list."""
        if not self._is_batch(images):
            return self.detect_batch([images], bgr=bgr)[0]
        return self.detect_batch(list(images), bgr=bgr)

    detect = __call__

    def track(self, source: Any, **kwargs: Any) -> Any:
        """Faces with stable track ids, smoothed, per frame of a video: see :class:`blazeface.video.VideoDetector`."""
        from .video import VideoDetector

        return VideoDetector(self, **kwargs)(source)

    def detect_batch(self, images: Sequence[Any], *, bgr: bool = False) -> list[Detections]:
        """Detect faces in a list of images of any sizes (run ``batch_size`` at a time)."""
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [self._load(img, bgr) for img in images[start:start + self.batch_size]]
            results.extend(self.detect_tensors([c[0] for c in chunk], [c[1] for c in chunk]))
        return results

    def stream(self, paths: Iterable[str | Path], workers: int | None = None, prefetch: int | None = None
               ) -> Iterator[tuple[str, Detections | ImageLoadError]]:
        """Detect faces in image files, decoding ahead in background threads while the network runs.

        Yields ``(path, Detections)`` or ``(path, ImageLoadError)`` for every input, in input order;
        memory stays bounded by ``prefetch`` decoded images plus one batch.
        """
        from .stream import iter_images

        pending: list[tuple[str, np.ndarray | ImageLoadError]] = []
        decoded = 0
        for path, image in iter_images((str(p) for p in paths), workers, prefetch):
            pending.append((path, image))
            decoded += not isinstance(image, ImageLoadError)
            if decoded >= self.batch_size:
                yield from self._flush(pending)
                pending, decoded = [], 0
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, np.ndarray | ImageLoadError]]
               ) -> Iterator[tuple[str, Detections | ImageLoadError]]:
        good = [(p, img) for p, img in pending if not isinstance(img, ImageLoadError)]
        results = iter(self.detect_tensors([img for _, img in good], [p for p, _ in good]))
        for path, image in pending:
            yield path, image if isinstance(image, ImageLoadError) else next(results)

    def detect_tensors(self, images: Sequence[np.ndarray | torch.Tensor], paths: Sequence[str | None] | None = None,
                       regions: Sequence[Letterbox] | None = None) -> list[Detections]:
        """Detect faces in decoded RGB ``[H, W, 3]`` images: ``uint8`` arrays, or tensors (``uint8`` or float in
        ``[0, 255]``) on any device. ``regions`` (one :class:`Letterbox` per image) sample other squares
        than the centred letterbox (e.g. tiles)."""
        if not len(images):
            return []
        images = self._cpu_arrays(images)
        if regions is None and self.tiling is not None:
            return [detect_tiled(self, img, paths[i] if paths else None, self.tiling) for i, img in enumerate(images)]
        if self._runs_in_parallel(images):
            return self._detect_parallel(images, paths, regions)
        batch, boxes = self.preprocess(images, regions)
        regressors, logits = self.forward(batch)
        return self.postprocess(regressors, logits, boxes, paths)

    def _cpu_arrays(self, images: Sequence[np.ndarray | torch.Tensor]) -> Sequence[np.ndarray | torch.Tensor]:
        """On the CPU, ``uint8`` CPU tensors as numpy views, so that they take the numpy/OpenCV letterbox."""
        if self.device.type != "cpu" or not any(isinstance(i, torch.Tensor) for i in images):
            return images
        return [i.numpy() if isinstance(i, torch.Tensor) and i.device.type == "cpu" and i.dtype == torch.uint8 else i
                for i in images]

    def worker_pool(self) -> Any:
        """The thread pool that runs CPU work in chunks on single-threaded network workers (ONNX Runtime, LiteRT
        files, ``threads > 1``), or ``None`` where the backend has none."""
        if (getattr(self.backend, "workers", 1) < 2 or self.device.type != "cpu"
                or not hasattr(self.backend, "run_single_threaded")):
            return None
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.backend.workers, thread_name_prefix="blazeface-detect")  # type: ignore[attr-defined]
        return self._pool

    def forward_single_threaded(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on one core (for a :meth:`worker_pool` worker; safe to call from several at once)."""
        reg, logits = self.backend.run_single_threaded(batch.numpy())  # type: ignore[attr-defined]
        return torch.from_numpy(reg), torch.from_numpy(logits)

    def letterboxes_in_numpy(self, images: Sequence[np.ndarray | torch.Tensor]) -> bool:
        """Whether :meth:`preprocess` takes the numpy/OpenCV letterbox: ``uint8`` arrays on a CPU detector."""
        return self.device.type == "cpu" and all(isinstance(i, np.ndarray) and i.dtype == np.uint8 for i in images)

    def _runs_in_parallel(self, images: Sequence[np.ndarray | torch.Tensor]) -> bool:
        """A CPU batch of ``uint8`` arrays, larger than a chunk, on a backend with single-threaded workers."""
        return len(images) > self.chunk_size and self.letterboxes_in_numpy(images) and self.worker_pool() is not None

    def _detect_parallel(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None,
                         regions: Sequence[Letterbox] | None) -> list[Detections]:
        """The whole pipeline (letterbox, network, decoding, NMS) on chunks of ``chunk_size`` images, one chunk
        per worker at a time: the workers' numpy and network calls release the GIL, so the cores stay busy."""
        def chunk(start: int) -> list[Detections]:
            end = start + self.chunk_size
            batch, boxes = self._letterbox_numpy(images[start:end], regions[start:end] if regions else None)
            return self.postprocess(*self.forward_single_threaded(torch.from_numpy(batch)), boxes,
                                    paths[start:end] if paths else None)

        return [d for part in self.worker_pool().map(chunk, range(0, len(images), self.chunk_size)) for d in part]

    def _letterbox_numpy(self, images: Sequence[np.ndarray], regions: Sequence[Letterbox] | None, spare: int = 0
                         ) -> tuple[np.ndarray, list[Letterbox]]:
        """``float32[len(images) + spare, 3, S, S]``: the letterboxed images, then ``spare`` rows left to the caller."""
        s = self.input_size
        batch = np.empty((len(images) + spare, 3, s, s), dtype=np.float32)
        boxes = [letterbox_numpy(img, s, regions[i] if regions else None, out=batch[i])[1]
                 for i, img in enumerate(images)]
        return batch, boxes

    def preprocess(self, images: Sequence[np.ndarray | torch.Tensor], regions: Sequence[Letterbox] | None = None
                   ) -> tuple[torch.Tensor, list[Letterbox]]:
        """Letterbox images into ``Tensor[B, 3, S, S]`` on the device: with numpy on the CPU, with torch ops on the
        device otherwise (both bit-identical to MediaPipe's arithmetic)."""
        images = self._cpu_arrays(images)
        if self.letterboxes_in_numpy(images):
            batch, boxes = self._letterbox_numpy(images, regions)
            return torch.from_numpy(batch), boxes
        on_device = [(_from_numpy(i) if isinstance(i, np.ndarray) else i).to(self.device) for i in images]
        return letterbox_batch(on_device, self.input_size, list(regions) if regions else None)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw network (on the chosen backend) on ``Tensor[B, 3, S, S]`` in ``[-1, 1]`` →
        ``(regressors [B, A, 16], logits [B, A, 1])``."""
        return self.backend(batch)

    def postprocess(self, regressors: torch.Tensor | np.ndarray, logits: torch.Tensor | np.ndarray,
                    letterboxes: Sequence[Letterbox], paths: Sequence[str | None] | None = None,
                    max_candidates: int | None = None, nms: NMSMode | None = None) -> list[Detections]:
        """Decode raw outputs ``[B, A, 16]`` / ``[B, A, 1]`` (tensors, or numpy arrays), threshold, suppress, and map
        to image pixels.

        ``max_candidates`` keeps only that many best-scoring candidates per image before NMS (bounds the
        work at low thresholds); ``nms`` overrides the detector's NMS mode (tiles use their own).

        Only anchors whose logit passes a slightly lower bound are decoded (batched, one ``nonzero``);
        the exact MediaPipe test ``sigmoid(clip(logit)) >= min_score`` is then applied to those.
        """
        if isinstance(regressors, np.ndarray) or regressors.device.type == "cpu":  # numpy: less per-op overhead
            reg, lg, anchors = _to_numpy(regressors), _to_numpy(logits), self._anchors_np
            image_idx, anchor_idx = np.nonzero(lg[..., 0] >= self.logit_floor)
        else:
            reg, lg, anchors = regressors, logits, self.anchors.to(regressors.device)
            image_idx, anchor_idx = torch.nonzero(lg[..., 0] >= self.logit_floor, as_tuple=True)
        scores = scores_from_logits(lg[image_idx, anchor_idx], self.config.score_clip)
        boxes, keypoints = decode_boxes(reg[image_idx, anchor_idx], anchors[anchor_idx], self.config.box_scale)
        size = boxes[:, 2:] - boxes[:, :2]
        keep = (scores >= self.min_score) & (size >= 0).all(-1) & _isfinite(boxes).all(-1)
        out = []
        for b, box in enumerate(letterboxes):
            k = keep & (image_idx == b) if len(letterboxes) > 1 else keep
            if max_candidates is not None and int(k.sum()) > max_candidates:
                idx = _flatnonzero(k)
                k = idx[argsort_desc(scores[idx])[:max_candidates]]
            sup = non_max_suppression(boxes[k], scores[k], keypoints[k], self.min_suppression, nms or self.nms,
                                      self.max_faces)
            xyxy = box.to_image(sup.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
            out.append(Detections(_to_numpy(xyxy), _to_numpy(sup.scores), _to_numpy(box.to_image(sup.keypoints)),
                                  (box.width, box.height), self.model_name, paths[b] if paths else None))
        return out


def _flatnonzero(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return np.flatnonzero(x) if isinstance(x, np.ndarray) else torch.nonzero(x).squeeze(1)


def _isfinite(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return np.isfinite(x) if isinstance(x, np.ndarray) else torch.isfinite(x)


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def open_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB PIL image (EXIF orientation applied), with :func:`blazeface.io.read_image`'s errors."""
    return Image.fromarray(load_image(path))
