"""Multi-scale tiled inference: small faces in large images.

BlazeFace sees a face well only within a band of sizes relative to its input square: short range from about
15% to 80% of the input side, full range and back from about 6–7% to 60% (measured on the faces of WIDER
FACE val, see ``MODEL_FACE_RANGE``). A 30-pixel face in a 1024-pixel photo is 3% of the letterbox: too small
for every model. Tiling looks at the image through an image pyramid of overlapping square tiles:

* **Level 0** is the whole image, letterboxed exactly as without tiling (faces of at least ``lo × longer side``).
* Each further level uses tiles ``level_ratio`` times smaller (so the face-size bands of consecutive levels
  overlap), down to the tile side at which ``min_face`` fills the model's smallest size ``lo``.
* Neighbouring tiles of a level overlap by the largest face that level is responsible for (the smallest face of
  the level above, ``lo × T_above``), so every face of the level lies whole in at least one tile.
* A detection that touches an *interior* tile border (one that is not the image's edge) is a face cut by the
  tile: it is dropped, because the neighbouring tile (or the coarser level) sees the whole face. Faces cut by
  the image's own edge are kept.
* All tiles of all levels run as batches through the network (each tile is a :class:`~blazeface.preprocess.Letterbox`
  region, resampled as MediaPipe resamples); each tile is suppressed with *hard* NMS (``TileConfig.tile_nms``:
  at evaluation thresholds a tile's clusters hold many weak, shifted candidates that drag a blended box off the
  face), then the survivors of every tile and level are merged by one weighted NMS (MediaPipe's blending, the
  detector's own mode) in image pixels.
* A face smaller than ``small_face_pixels`` network-input pixels in its tile is localized poorly (most such
  detections miss IoU 0.5 with their face): the part of its score above ``min_score`` is scaled by
  ``sqrt(size / small_face_pixels)`` before the merge, so that it ranks below well-sized faces of the same
  confidence (and is still returned).

* **Flip** (test-time augmentation): a tile may also run mirrored left-right in the same batch; the two views are
  fused anchor by anchor before decoding (:func:`fuse_mirrored`), so the faces and their scores are averaged over
  both views.

Cost grows with the network-input pixels run (tiles × ``S²``, twice for flipped tiles). The plan holds a budget
(``max_input_pixels``, the same for every model): ``min_face`` grows until the tiles fit it, and with
``flip="auto"`` the tiles are flipped only if the flipped plan fits at the requested ``min_face`` (small faces
first, then the flip). :func:`plan_tiles` tells the tiles without running anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Literal, Union

import numpy as np
import torch

from .config import AnchorOptions
from .ops.anchors import generate_anchors
from .ops.boxes import NUM_KEYPOINTS
from .ops.nms import NMSMode, non_max_suppression
from .preprocess import Letterbox
from .results import FLIP_KEYPOINTS, Detections

if TYPE_CHECKING:  # pragma: no cover
    from .detector import FaceDetector

# (lo, hi): face size (longer side of the WIDER box) as a fraction of the tile side that each model detects well.
# Measured: for 120 random medium faces of wider_val_dev, a tile centred on the face at 12 relative sizes
# (0.04 … 0.8); the band is where the hit rate (IoU ≥ 0.5, score ≥ 0.3) is within ~80% of the model's best.
MODEL_FACE_RANGE: dict[str, tuple[float, float]] = {
    "short_range": (0.16, 0.8),
    "front_2019": (0.16, 0.8),
    "paper": (0.16, 0.8),
    "back": (0.06, 0.6),
    "full_range": (0.07, 0.6),
    "full_range_sparse": (0.07, 0.6),
}


@dataclass(frozen=True)
class TileConfig:
    """How to tile (all fields optional; the defaults adapt to the image and the model).

    Attributes:
        min_face: smallest face (pixels, longer side) to look for; ``None``: ``min_face_fraction`` of the image's
            longer side, but at least ``min_face_pixels``.
        min_face_fraction: see ``min_face`` (0.025: 25 px in a 1000-px image).
        min_face_pixels: see ``min_face``.
        face_range: ``(lo, hi)`` face sizes the model sees, as fractions of the tile side; ``None``: the model's
            (:data:`MODEL_FACE_RANGE`).
        level_ratio: tile side ratio between consecutive levels; ``None``: ``hi / lo / 2`` (bands overlap ×2),
            at least 1.5.
        max_tiles: at most this many tiles per image (``min_face`` grows until the plan fits); ``None``: no cap
            other than ``max_input_pixels``.
        max_input_pixels: the cost budget: network-input pixels per image, summed over tiles and views
            (``Σ S² × (2 if the tile is flipped else 1)``); ``min_face`` grows until the plan fits. Time grows
            about linearly with it whatever the model (the default, 2**20, is 64 tiles of 128², 28 of 192² or 16
            of 256², or half as many flipped tiles); ``None``: no budget.
        border_margin: a detection within this fraction of its own size of an interior tile border counts as cut.
        whole_image: include level 0, the plain letterboxed image.
        max_candidates: per tile, only the best-scoring candidates above the threshold enter NMS (bounds the
            cost at low evaluation thresholds such as 0.05; irrelevant at serving thresholds).
        flip: horizontal-flip test-time augmentation: also run every tile mirrored left-right (in the same batch)
            and fuse both views anchor by anchor (:func:`fuse_mirrored`), twice the network work per tile.
            ``"auto"``: flip when the flipped plan still fits the budget at the requested ``min_face`` (smaller
            faces come first, the flip is spent from what is left); ``True`` / ``False``: always / never (with
            ``True`` the budget holds half as many tiles).
        tile_nms: suppression within each tile (``"hard"``: the best candidate of a cluster as it is;
            ``"weighted"``: MediaPipe's blend); the merge across tiles is the detector's own NMS.
        small_face_pixels: a detection whose longer side is below this many network-input pixels in its tile
            has the part of its score above the detector's ``min_score`` multiplied by
            ``sqrt(size / small_face_pixels)``: it ranks lower, and is still returned (every score stays at least
            ``min_score``, so no face is lost to the rescoring); ``None``: scores as detected.
    """

    min_face: float | None = None
    min_face_fraction: float = 0.025
    min_face_pixels: float = 16.0
    face_range: tuple[float, float] | None = None
    level_ratio: float | None = None
    max_tiles: int | None = None
    max_input_pixels: int | None = 2 ** 20
    border_margin: float = 0.05
    whole_image: bool = True
    max_candidates: int = 100
    flip: bool | Literal["auto"] = "auto"
    tile_nms: NMSMode = "hard"
    small_face_pixels: float | None = 28.0

    def __post_init__(self) -> None:
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ValueError("max_tiles must be at least 1")
        if self.max_input_pixels is not None and self.max_input_pixels < 1:
            raise ValueError("max_input_pixels must be positive")
        if self.face_range is not None and not 0 < self.face_range[0] < self.face_range[1] <= 1.5:
            raise ValueError(f"face_range must be (lo, hi) with 0 < lo < hi, got {self.face_range}")
        if self.flip not in (True, False, "auto"):
            raise ValueError(f"flip must be True, False or 'auto', got {self.flip!r}")
        if self.level_ratio is not None and self.level_ratio <= 1:
            raise ValueError("level_ratio must be above 1")
        if self.tile_nms not in ("weighted", "hard"):
            raise ValueError(f"tile_nms must be 'weighted' or 'hard', got {self.tile_nms!r}")
        if self.small_face_pixels is not None and self.small_face_pixels <= 0:
            raise ValueError("small_face_pixels must be positive")

    def tile_limit(self, size: int, flip: bool) -> float:
        """The most tiles a plan may have for a model of input ``size``, all flipped or none (``max_tiles`` and
        ``max_input_pixels``; at least 1)."""
        limit = math.inf if self.max_tiles is None else float(self.max_tiles)
        if self.max_input_pixels is not None:
            limit = min(limit, self.max_input_pixels // (size * size * (2 if flip else 1)))
        return max(limit, 1.0)


TilingArg = Union[Literal["auto", "off"], TileConfig, None]


def resolve_tiling(tiling: TilingArg) -> TileConfig | None:
    """``"auto"`` → default :class:`TileConfig`; ``"off"`` / ``None`` → no tiling."""
    if tiling is None or tiling == "off" or tiling is False:
        return None
    if tiling == "auto" or tiling is True:
        return TileConfig()
    if isinstance(tiling, TileConfig):
        return tiling
    raise ValueError(f"tiling must be 'auto', 'off' or a TileConfig, got {tiling!r}")


@dataclass(frozen=True)
class Tile:
    """One tile: its square ``region``, which of its four sides are interior borders (left, top, right, bottom),
    and whether it also runs mirrored (``flip``, see :attr:`TileConfig.flip`)."""

    region: Letterbox
    level: int
    interior: tuple[bool, bool, bool, bool]
    flip: bool = False


def _positions(length: int, side: float, overlap: float) -> list[float]:
    """Start offsets of tiles of ``side`` covering ``[0, length]`` with at least ``overlap`` between neighbours."""
    if side >= length:
        return [(length - side) / 2.0]
    stride = max(side - overlap, 1.0)
    n = math.ceil((length - side) / stride) + 1
    if n == 1:
        return [0.0]
    step = (length - side) / (n - 1)  # spread evenly: the overlap only grows
    return [i * step for i in range(n)]


def plan_tiles(width: int, height: int, size: int, model: str, config: TileConfig | None = None) -> list[Tile]:
    """The tiles :func:`detect_tiled` runs for a ``width × height`` image and a model of input ``size``."""
    config = config or TileConfig()
    lo, hi = config.face_range or MODEL_FACE_RANGE.get(model, (0.1, 0.6))
    ratio = max(config.level_ratio or hi / lo / 2.0, 1.5)
    longer = max(width, height)
    min_face = config.min_face if config.min_face is not None else max(config.min_face_fraction * longer,
                                                                       config.min_face_pixels)
    if config.flip == "auto":  # flip if that fits at the requested min_face, else spend everything on tiles
        tiles = _plan(width, height, size, lo, ratio, min_face, config.whole_image)
        flip = len(tiles) <= config.tile_limit(size, True)
    else:
        flip = bool(config.flip)
    limit = config.tile_limit(size, flip)
    while True:
        tiles = _plan(width, height, size, lo, ratio, min_face, config.whole_image)
        if len(tiles) <= limit:
            return [replace(t, flip=flip) for t in tiles] if flip else tiles
        min_face *= 1.1


def _plan(width: int, height: int, size: int, lo: float, ratio: float, min_face: float, whole: bool) -> list[Tile]:
    tiles: list[Tile] = []
    if whole:
        tiles.append(Tile(Letterbox.centered(width, height, size), 0, (False,) * 4))
    side_above = float(max(width, height))
    level = 1
    while lo * side_above > min_face * 1.0001:
        side = max(side_above / ratio, min_face / lo)
        overlap = min(lo * side_above * 1.1, side * 0.5)
        xs = _positions(width, side, overlap)
        ys = _positions(height, side, overlap)
        for y0 in ys:
            for x0 in xs:
                interior = (x0 > 0.5, y0 > 0.5, x0 + side < width - 0.5, y0 + side < height - 0.5)
                tiles.append(Tile(Letterbox(width, height, size, x0, y0, side), level, interior))
        side_above = side
        level += 1
    if not tiles:  # whole_image=False and nothing to tile: the letterbox anyway
        tiles.append(Tile(Letterbox.centered(width, height, size), 0, (False,) * 4))
    return tiles


def _cut_by_border(boxes: np.ndarray, tile: Tile, margin: float) -> np.ndarray:
    """``bool[K]``: detections (normalized to the tile) that touch one of its interior borders."""
    cut = np.zeros(len(boxes), dtype=bool)
    if not any(tile.interior):
        return cut
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clip(min=0)
    m = margin * size + 1.0 / tile.region.size  # at least one input pixel
    left, top, right, bottom = tile.interior
    if left:
        cut |= boxes[:, 0] < m
    if top:
        cut |= boxes[:, 1] < m
    if right:
        cut |= boxes[:, 2] > 1 - m
    if bottom:
        cut |= boxes[:, 3] > 1 - m
    return cut


@lru_cache(maxsize=16)
def mirror_anchor_index(options: AnchorOptions) -> np.ndarray:
    """``intp[A]``: for every anchor, the index of the anchor at the mirrored position (``x → 1 - x``, same ``y``,
    size and slot in its cell), so that output ``index[a]`` of the mirrored input is anchor ``a``'s mirror image.
    An involution; anchors are symmetric about ``x = 0.5`` (offset 0.5 on a regular grid)."""
    anchors = generate_anchors(options).numpy().astype(np.float64)
    slot = np.zeros(len(anchors), dtype=np.int64)  # position of the anchor among its cell's anchors
    for i in range(1, len(anchors)):
        slot[i] = slot[i - 1] + 1 if np.array_equal(anchors[i, :2], anchors[i - 1, :2]) else 0

    def key(x: float, a: int) -> tuple:
        return (round(x * 2 ** 20), round(anchors[a, 1] * 2 ** 20), int(slot[a]), *anchors[a, 2:].tolist())

    by_key: dict[tuple, list[int]] = {}
    for a in range(len(anchors)):
        by_key.setdefault(key(anchors[a, 0], a), []).append(a)
    seen: dict[tuple, int] = {}
    index = np.empty(len(anchors), dtype=np.intp)
    for a in range(len(anchors)):  # the k-th anchor of a key pairs with the k-th of the mirrored key
        k, m = key(anchors[a, 0], a), key(1.0 - anchors[a, 0], a)
        index[a] = by_key[m][seen.get(k, 0)]
        seen[k] = seen.get(k, 0) + 1
    if not np.array_equal(index[index], np.arange(len(anchors))):
        raise ValueError("anchors are not symmetric under a horizontal mirror")
    index.flags.writeable = False  # cached and shared
    return index


def fuse_mirrored(detector: "FaceDetector", regressors: torch.Tensor, logits: torch.Tensor,
                  mirrored_regressors: torch.Tensor, mirrored_logits: torch.Tensor, rows: list[int]) -> None:
    """Fuse, in place, the raw outputs ``regressors [B, A, 16]`` / ``logits [B, A, 1]`` of inputs ``rows`` with those
    of the same inputs mirrored left-right (``flip(-1)``), ``mirrored_* [len(rows), A, ·]``; decoded and suppressed
    as usual afterwards.

    The mirrored outputs are brought back anchor by anchor (:func:`mirror_anchor_index`): x offsets of the box
    centre and keypoints change sign (tensor pixel ``j`` mirrors to ``S - 1 - j``, one input pixel off the
    anchors' axis ``x = 0.5``), the eye and ear keypoints swap (:data:`~blazeface.results.FLIP_KEYPOINTS`).
    Score: the mean of the two views' probabilities; regressors: their score-weighted mean. Only anchors that pass
    the detector's logit pre-filter (:attr:`~blazeface.FaceDetector.logit_floor`) in either view can reach
    ``min_score`` on that mean, so only they are fused; the others keep their own logit, below the pre-filter."""
    cfg = detector.config
    device = regressors.device
    index = torch.tensor(mirror_anchor_index(cfg.anchors), device=device)  # a copy: the cache is read-only
    target_rows = torch.tensor(rows, device=device)
    mirrored_logits = mirrored_logits[:, index]
    floor = detector.logit_floor
    view, anchor = torch.nonzero((logits[target_rows, :, 0] >= floor) | (mirrored_logits[..., 0] >= floor),
                                 as_tuple=True)
    row = target_rows[view]
    back = mirrored_regressors[view, index[anchor]]  # [K, 16]
    shift = cfg.box_scale / (detector.input_size * detector.anchors[:, 2].to(device)[anchor])  # [K]: one input pixel
    back[:, 0] = -back[:, 0] - shift
    kps = back[:, 4:].reshape(len(back), NUM_KEYPOINTS, 2)[:, list(FLIP_KEYPOINTS), :]
    kps[..., 0] = -kps[..., 0] - shift[:, None]
    back[:, 4:] = kps.reshape(len(back), 2 * NUM_KEYPOINTS)
    clip = cfg.score_clip
    p = torch.sigmoid(logits[row, anchor].clamp(-clip, clip))
    q = torch.sigmoid(mirrored_logits[view, anchor].clamp(-clip, clip))
    w = p / (p + q).clamp(min=1e-30)
    regressors[row, anchor] = w * regressors[row, anchor] + (1 - w) * back
    mean = (p + q) / 2
    logits[row, anchor] = torch.log(mean) - torch.log1p(-mean)


Forward = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def tile_batch(detector: "FaceDetector", image: "np.ndarray | torch.Tensor", tiles: list[Tile]
               ) -> tuple[torch.Tensor, list[int]]:
    """The network input of ``tiles``: ``[n + F, 3, S, S]``, the ``n`` tiles resampled, then the mirror images of the
    ``F`` flipped ones (their indices, returned too)."""
    regions = [t.region for t in tiles]
    flip = [i for i, t in enumerate(tiles) if t.flip]
    n = len(tiles)
    if detector.letterboxes_in_numpy([image]):
        batch, _ = detector._letterbox_numpy([image] * n, regions, spare=len(flip))
        for j, i in enumerate(flip):  # one copy per mirror, straight into its slot
            batch[n + j] = batch[i, :, :, ::-1]
        return torch.from_numpy(batch), flip
    batch, _ = detector.preprocess([image] * n, regions)
    return (torch.cat([batch, batch[flip].flip(-1)]) if flip else batch), flip


def _forward(detector: "FaceDetector", batch: torch.Tensor, flip: list[int], forward: Forward
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The network (``forward``) on a :func:`tile_batch` (``n`` inputs, then the mirrors of inputs ``flip``), the two
    views of those fused (:func:`fuse_mirrored`). Returns ``(regressors [n, A, 16], logits [n, A, 1])``."""
    regressors, logits = forward(batch)
    if not flip:
        return regressors, logits
    if regressors.is_inference():  # (PyTorch's inference-mode outputs cannot be written in place)
        regressors, logits = regressors.clone(), logits.clone()
    n = len(batch) - len(flip)
    fuse_mirrored(detector, regressors, logits, regressors[n:], logits[n:], flip)
    return regressors[:n], logits[:n]


def detect_tiled(detector: "FaceDetector", image: "np.ndarray | torch.Tensor", path: str | None = None,
                 config: TileConfig | None = None) -> Detections:
    """Detect faces in one RGB ``[H, W, 3]`` image (a ``uint8`` array, or a tensor on the detector's device)
    with multi-scale tiles. Each tile is resampled, run and suppressed by the detector's own pipeline
    (``preprocess`` / ``forward`` / ``postprocess`` with the tile as region, ``config.tile_nms``); detections cut
    by an interior tile border are dropped, small ones rescored (``config.small_face_pixels``); what is left of
    every tile and scale merges in one more NMS (the detector's mode, weighted by default)."""
    config = config or TileConfig()
    height, width = int(image.shape[0]), int(image.shape[1])
    tiles = plan_tiles(width, height, detector.input_size, detector.model_name, config)
    if len(tiles) == 1 and not tiles[0].flip:  # nothing to tile: exactly the plain pipeline on that one region
        return detector.detect_tensors([image], [path], [tiles[0].region])[0]
    views = 2 if any(t.flip for t in tiles) else 1  # network inputs per tile
    pool = detector.worker_pool() if isinstance(image, np.ndarray) else None
    if pool is not None:  # CPU: small chunks through the whole pipeline on single-threaded workers, cores kept busy
        step, forward = max(detector.chunk_size // views, 1), detector.forward_single_threaded  # ~chunk_size inputs
    else:
        step, forward = max(detector.batch_size // views, 1), detector.forward

    def run(start: int) -> list[Detections]:
        return _detect_tiles(detector, image, tiles[start:start + step], config, forward)

    starts = range(0, len(tiles), step)
    found = [d for part in (pool.map(run, starts) if pool is not None else map(run, starts)) for d in part if len(d)]
    if not found:
        return Detections.empty((width, height), detector.model_name, path)
    merged = non_max_suppression(np.concatenate([d.boxes for d in found]), np.concatenate([d.scores for d in found]),
                                 np.concatenate([d.keypoints for d in found]), detector.min_suppression,
                                 detector.nms, detector.max_faces)
    return Detections(merged.boxes, merged.scores, merged.keypoints, (width, height), detector.model_name, path)


def _detect_tiles(detector: "FaceDetector", image: "np.ndarray | torch.Tensor", tiles: list[Tile], config: TileConfig,
                  forward: Forward) -> list[Detections]:
    """Detections of each of ``tiles`` (in image pixels), less those cut by an interior tile border."""
    regions = [t.region for t in tiles]
    batch, flip = tile_batch(detector, image, tiles)
    per_tile = detector.postprocess(*_forward(detector, batch, flip, forward), regions,
                                    max_candidates=config.max_candidates, nms=config.tile_nms)
    kept = []
    for tile, det in zip(tiles, per_tile):
        r = tile.region
        offset = np.array([r.x0, r.y0, r.x0, r.y0], dtype=np.float32)
        boxes = (det.boxes - offset) / r.side
        keep = np.flatnonzero(~_cut_by_border(boxes, tile, config.border_margin))
        det = det[keep]
        if config.small_face_pixels is not None and len(det):
            floor = np.float32(detector.min_score)
            det.scores = floor + (det.scores - floor) * small_face_factor(boxes[keep], r.size, config.small_face_pixels)
        kept.append(det)
    return kept


def small_face_factor(boxes: np.ndarray, size: int, pixels: float) -> np.ndarray:
    """``float32[K]``: ``sqrt(min(1, s / pixels))`` for boxes ``[K, 4]`` normalized to a tile of ``size`` input
    pixels, ``s`` the longer side in input pixels (0 for empty boxes)."""
    side = np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 0.0) * size
    return np.sqrt(np.minimum(side / pixels, 1.0)).astype(np.float32)


def tiles_per_megapixel(width: int, height: int, size: int, model: str, config: TileConfig | None = None) -> float:
    """How many tiles :func:`plan_tiles` uses per megapixel of a ``width × height`` image."""
    return len(plan_tiles(width, height, size, model, config)) / (width * height / 1e6)
