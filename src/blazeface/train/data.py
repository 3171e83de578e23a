"""Face annotations for training and evaluation, read from the usual formats into one :class:`Sample` list.

Formats (detected from the file, see :func:`load_annotations`):

- **WIDER FACE txt** (``wider_face_train_bbx_gt.txt``): a path line, a count line, then one
  ``x y w h blur expression illumination invalid occlusion pose`` line per face.
- **COCO json**: ``images`` / ``annotations`` (``bbox`` ``[x, y, w, h]``, optional ``keypoints`` as 6
  ``(x, y, v)`` triples in MediaPipe's order, ``iscrowd`` / ``ignore`` faces are ignored).
- **JSONL**: one JSON object per image, as ``blazeface detect --jsonl`` writes it
  (``{"path", "faces": [{"box": [x1, y1, x2, y2], "keypoints": [[x, y] ×6], "score"}]}``): pseudo-labels.
- **wider_val_dev json**: ``{file: {"event", "size_wh", "faces": [{"xywh", "attrs", "in_easy", ...}]}}``.

Coordinates are pixels of the original image. Keypoints are MediaPipe's six, in MediaPipe's order (the
subject's right eye first); a face without them has ``keypoint_mask`` False.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


NUM_KEYPOINTS = 6
#: WIDER FACE's evaluation settings.
SETTINGS = ("easy", "medium", "hard")


@dataclass
class Sample:
    """The labelled faces of one image.

    Attributes:
        path: the image file.
        boxes: ``float32[N, 4]`` as ``(x1, y1, x2, y2)`` pixels.
        keypoints: ``float32[N, 6, 2]`` pixels (any value where the mask is False).
        keypoint_mask: ``bool[N, 6]``: which keypoints are labelled.
        ignore: ``bool[N]``: faces that are neither positives nor negatives (WIDER's invalid faces,
            crowds, low-confidence pseudo-labels). Evaluation ignores them too.
        settings: optional ``{"easy": bool[N], ...}``: faces inside each WIDER evaluation setting.
        event: the WIDER event (for splits), if known.
        size: ``(width, height)`` if known.
        scores: ``float32[N]`` teacher scores of pseudo-labels, if any.
    """

    path: str
    boxes: np.ndarray
    keypoints: np.ndarray | None = None
    keypoint_mask: np.ndarray | None = None
    ignore: np.ndarray | None = None
    settings: dict[str, np.ndarray] = field(default_factory=dict)
    event: str | None = None
    size: tuple[int, int] | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        if self.keypoints is None:
            self.keypoints = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
            if self.keypoint_mask is None:
                self.keypoint_mask = np.zeros((n, NUM_KEYPOINTS), bool)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(n, NUM_KEYPOINTS, 2)
        if self.keypoint_mask is None:
            self.keypoint_mask = np.ones((n, NUM_KEYPOINTS), bool)
        self.keypoint_mask = np.asarray(self.keypoint_mask, dtype=bool).reshape(n, NUM_KEYPOINTS)
        self.ignore = np.zeros(n, bool) if self.ignore is None else np.asarray(self.ignore, dtype=bool).reshape(n)
        self.settings = {k: np.asarray(v, dtype=bool).reshape(n) for k, v in self.settings.items()}
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)

    def __len__(self) -> int:
        return len(self.boxes)

    def valid(self, setting: str | None = None) -> np.ndarray:
        """``bool[N]``: faces that count (not ignored, and inside ``setting`` when given)."""
        keep = ~self.ignore
        if setting is not None:
            if setting not in self.settings:
                raise KeyError(f"{self.path}: no WIDER setting {setting!r} in these annotations")
            keep = keep & self.settings[setting]
        return keep

    def to_record(self) -> dict[str, Any]:
        """This sample as one JSONL record (the format :func:`load_jsonl` reads)."""
        faces = []
        for i in range(len(self)):
            face: dict[str, Any] = {"box": [round(float(v), 2) for v in self.boxes[i]]}
            if self.keypoint_mask[i].any():
                face["keypoints"] = [[round(float(x), 2), round(float(y), 2)] if m else None
                                     for (x, y), m in zip(self.keypoints[i], self.keypoint_mask[i])]
            if self.scores is not None:
                face["score"] = round(float(self.scores[i]), 4)
            if self.ignore[i]:
                face["ignore"] = True
            faces.append(face)
        record: dict[str, Any] = {"path": self.path, "faces": faces}
        if self.size is not None:
            record["width"], record["height"] = self.size
        if self.event is not None:
            record["event"] = self.event
        return record


class AnnotationError(ValueError):
    """An annotation file could not be read; the message names the file and the line or entry."""


def _resolve(path: str, images: str | Path | None, base: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        if p.exists() or images is None:
            return str(p)
        return str(Path(images) / p.name)
    root = Path(images) if images is not None else base
    return str(root / p)


def _empty(path: str, **kw: Any) -> Sample:
    return Sample(path, np.zeros((0, 4), np.float32), **kw)


# --- the formats ------------------------------------------------------------------------------------
def load_wider_txt(path: str | Path, images: str | Path | None = None) -> list[Sample]:
    """WIDER FACE's ``wider_face_*_bbx_gt.txt``; faces flagged ``invalid`` or of zero size are ignored."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    samples: list[Sample] = []
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        name = lines[i]
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError) as exc:
            raise AnnotationError(f"{path}:{i + 2}: expected a face count after {name!r}") from exc
        rows = lines[i + 2:i + 2 + max(count, 1)]  # a count of 0 is followed by one line of zeros
        i += 2 + max(count, 1)
        boxes, ignore = [], []
        for j, row in enumerate(rows[:count]):
            v = row.split()
            if len(v) < 4:
                raise AnnotationError(f"{path}: bad face line {row!r} for {name}")
            x, y, w, h = (float(t) for t in v[:4])
            invalid = len(v) > 7 and v[7] == "1"
            boxes.append([x, y, x + w, y + h])
            ignore.append(invalid or w <= 0 or h <= 0)
        event = name.split("/")[0] if "/" in name else None
        samples.append(Sample(_resolve(name, images, path.parent), np.array(boxes, np.float32).reshape(-1, 4),
                              ignore=np.array(ignore, bool), event=event))
    return samples


def load_coco(path: str | Path, images: str | Path | None = None, data: dict | None = None) -> list[Sample]:
    """COCO json (one category or the first ``face``-named one); ``keypoints`` with visibility 0 are unlabelled."""
    path = Path(path)
    data = data if data is not None else json.loads(path.read_text(encoding="utf-8"))
    cats = data.get("categories") or []
    face_ids = {c["id"] for c in cats if "face" in str(c.get("name", "")).lower()} or {c["id"] for c in cats}
    by_image: dict[Any, list[dict]] = {}
    for ann in data.get("annotations", []):
        if face_ids and ann.get("category_id") not in face_ids:
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for img in data["images"]:
        anns = by_image.get(img["id"], [])
        n = len(anns)
        boxes = np.zeros((n, 4), np.float32)
        kps = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
        mask = np.zeros((n, NUM_KEYPOINTS), bool)
        ignore = np.zeros(n, bool)
        for j, a in enumerate(anns):
            x, y, w, h = (float(v) for v in a["bbox"])
            boxes[j] = (x, y, x + w, y + h)
            ignore[j] = bool(a.get("iscrowd", 0) or a.get("ignore", 0)) or w <= 0 or h <= 0
            k = a.get("keypoints")
            if k:
                if len(k) != NUM_KEYPOINTS * 3:
                    raise AnnotationError(f"{path}: annotation {a.get('id')} has {len(k)} keypoint values, "
                                          f"expected {NUM_KEYPOINTS * 3} (6 × x, y, v in MediaPipe's order)")
                k = np.asarray(k, np.float32).reshape(NUM_KEYPOINTS, 3)
                kps[j] = k[:, :2]
                mask[j] = k[:, 2] > 0
        size = (int(img["width"]), int(img["height"])) if "width" in img and "height" in img else None
        samples.append(Sample(_resolve(img["file_name"], images, path.parent), boxes, kps, mask, ignore, size=size))
    return samples


def _face_from_record(face: dict, where: str) -> tuple[list[float], np.ndarray, np.ndarray, bool, float | None]:
    if "box" in face:
        box = [float(v) for v in face["box"]]
    elif "xywh" in face:
        x, y, w, h = (float(v) for v in face["xywh"])
        box = [x, y, x + w, y + h]
    else:
        raise AnnotationError(f"{where}: a face needs 'box' [x1, y1, x2, y2] or 'xywh'")
    kps = np.zeros((NUM_KEYPOINTS, 2), np.float32)
    mask = np.zeros(NUM_KEYPOINTS, bool)
    for k, pt in enumerate((face.get("keypoints") or [])[:NUM_KEYPOINTS]):
        if pt is not None:
            kps[k] = pt[:2]
            mask[k] = True
    return box, kps, mask, bool(face.get("ignore", False)), face.get("score")


def load_jsonl(path: str | Path, images: str | Path | None = None, min_score: float | None = None) -> list[Sample]:
    """JSON lines (``blazeface detect --jsonl`` output or :meth:`Sample.to_record`); lines with an ``error``
    are skipped. Faces with a ``score`` below ``min_score`` (default: the recording model's threshold) are
    ignored rather than dropped, so uncertain pseudo-labels are neither faces nor background."""
    from ..registry import get_config

    path = Path(path)
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}:{n}: not JSON: {exc}") from exc
        if rec.get("error"):
            continue
        threshold = min_score
        if threshold is None and rec.get("model"):
            try:
                threshold = get_config(rec["model"]).min_score
            except ValueError:
                threshold = None
        boxes, kps, masks, ignore, scores = [], [], [], [], []
        for face in rec.get("faces", []):
            box, kp, mask, ign, score = _face_from_record(face, f"{path}:{n}")
            if threshold is not None and score is not None and score < threshold:
                ign = True
            scores.append(np.nan if score is None else float(score))
            boxes.append(box)
            kps.append(kp)
            masks.append(mask)
            ignore.append(ign)
        k = len(boxes)
        size = (int(rec["width"]), int(rec["height"])) if rec.get("width") and rec.get("height") else None
        samples.append(Sample(_resolve(rec["path"], images, path.parent), np.array(boxes, np.float32).reshape(k, 4),
                              np.array(kps, np.float32).reshape(k, NUM_KEYPOINTS, 2),
                              np.array(masks, bool).reshape(k, NUM_KEYPOINTS), np.array(ignore, bool),
                              event=rec.get("event"), size=size,
                              scores=np.array(scores, np.float32) if not np.isnan(scores).any() else None))
    return samples


def load_wider_dev_json(path: str | Path, images: str | Path | None = None, data: dict | None = None
                        ) -> list[Sample]:
    """The ``{file: {event, size_wh, faces: [{xywh, attrs, in_easy, in_medium, in_hard}]}}`` file of
    ``wider_val_dev``; faces flagged invalid are ignored, the three settings are kept for evaluation."""
    path = Path(path)
    data = data if data is not None else json.loads(path.read_text(encoding="utf-8"))
    root = images if images is not None else path.parent / "images"
    samples = []
    for name in sorted(data):
        entry = data[name]
        faces = entry.get("faces", [])
        boxes = np.array([[f["xywh"][0], f["xywh"][1], f["xywh"][0] + f["xywh"][2], f["xywh"][1] + f["xywh"][3]]
                          for f in faces], np.float32).reshape(-1, 4)
        ignore = np.array([bool(f.get("attrs", {}).get("invalid", 0)) for f in faces], bool)
        settings = {s: np.array([bool(f.get(f"in_{s}", False)) for f in faces], bool) for s in SETTINGS}
        size = tuple(entry["size_wh"]) if "size_wh" in entry else None
        samples.append(Sample(_resolve(name, root, path.parent), boxes, ignore=ignore, settings=settings,
                              event=entry.get("event"), size=size))
    return samples


def detect_format(path: str | Path) -> str:
    """``"wider_txt"``, ``"coco"``, ``"jsonl"`` or ``"wider_dev_json"``, from the file's contents."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    stripped = head.lstrip()
    if stripped.startswith("{"):
        first = stripped.splitlines()[0].strip()
        try:
            rec = json.loads(first)
            if isinstance(rec, dict) and "path" in rec:
                return "jsonl"
        except json.JSONDecodeError:
            pass
        data = json.loads(path.read_text(encoding="utf-8"))
        if "images" in data and "annotations" in data:
            return "coco"
        if data and all(isinstance(v, dict) and "faces" in v for v in data.values()):
            return "wider_dev_json"
        raise AnnotationError(f"{path}: JSON that is neither COCO (images, annotations) nor wider_val_dev style")
    lines = [ln.strip() for ln in stripped.splitlines() if ln.strip()]
    if len(lines) >= 2 and lines[1].isdigit():
        return "wider_txt"
    raise AnnotationError(f"{path}: unknown annotation format (expected WIDER txt, COCO json, JSONL or "
                          "wider_val_dev json)")


def load_annotations(path: str | Path, images: str | Path | None = None, fmt: str | None = None,
                     min_score: float | None = None) -> list[Sample]:
    """Read an annotation file in any supported format (detected from the contents unless ``fmt``).

    ``images`` is the folder image paths are relative to (default: the annotation file's folder;
    ``images/`` beside it for the wider_val_dev json). ``min_score`` applies to JSONL pseudo-labels.
    """
    fmt = fmt or detect_format(path)
    if fmt == "wider_txt":
        return load_wider_txt(path, images)
    if fmt == "coco":
        return load_coco(path, images)
    if fmt == "jsonl":
        return load_jsonl(path, images, min_score)
    if fmt == "wider_dev_json":
        return load_wider_dev_json(path, images)
    raise ValueError(f"unknown annotation format {fmt!r}")


def write_jsonl(samples: Iterable[Sample], path: str | Path) -> Path:
    """Write samples as JSON lines (readable by :func:`load_jsonl`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_record()) + "\n")
    return path


# --- splits -----------------------------------------------------------------------------------------
def _event_key(event: str) -> tuple[int, str]:
    head = event.split("--")[0]
    return (int(head), event) if head.isdigit() else (1 << 30, event)


def split_by_event(samples: Sequence[Sample], every: int = 2, offset: int = 1) -> tuple[list[Sample], list[Sample]]:
    """Split by WIDER event: events sorted by number; the ``offset``-th of every ``every`` is held back.

    With the defaults the 2nd, 4th, … events (in numeric order) are held back: for ``wider_val_dev``
    (events 0, 2, 4, 6, 8) that is ``2--Demonstration`` and ``6--Funeral``. No image of a held-back event
    is trained on. Samples without an event count as one event named ``""``. Returns ``(train, held_back)``.
    """
    events = sorted({s.event or "" for s in samples}, key=_event_key)
    held = {e for i, e in enumerate(events) if i % every == offset}
    if not held and len(events) > 1:
        held = {events[-1]}
    train = [s for s in samples if (s.event or "") not in held]
    val = [s for s in samples if (s.event or "") in held]
    return train, val


# --- pseudo-labels (distillation) ------------------------------------------------------------------
def _tile_regions(width: int, height: int, size: int, tiles: int, overlap: float = 0.25):
    from ..preprocess import Letterbox

    regions = [Letterbox.centered(width, height, size)]
    if tiles <= 1:
        return regions
    side = max(width, height) / (tiles - (tiles - 1) * overlap)
    for ty in range(tiles):
        for tx in range(tiles):
            step = side * (1 - overlap)
            x0 = -(max(width, height) - width) / 2 + tx * step
            y0 = -(max(width, height) - height) / 2 + ty * step
            regions.append(Letterbox(width, height, size, x0, y0, side))
    return regions


def pseudo_label(images: Sequence[str | Path], teacher: str = "full_range", min_score: float | None = None,
                 ignore_score: float | None = None, tiles: int = 1, device: str | None = None,
                 weights: str | Path | None = None, progress: bool = False) -> list[Sample]:
    """Label images with a teacher detector: boxes and all 6 keypoints, for distillation.

    Faces scoring at least ``min_score`` (default: the teacher's own threshold) are labels; faces between
    ``ignore_score`` (default ``min_score - 0.25``) and ``min_score`` are kept as *ignored*, so that the
    student is neither taught them nor taught that they are background. ``tiles=N`` also runs the teacher on
    an ``N×N`` grid of overlapping squares (besides the whole image) and merges everything with the teacher's
    weighted NMS, which finds smaller faces than one letterbox does.
    """
    import torch
    from tqdm import tqdm

    from ..detector import FaceDetector
    from ..io import load_image
    from ..ops.nms import non_max_suppression

    probe = FaceDetector(teacher, device=device, weights=weights, backend="torch")
    min_score = probe.config.min_score if min_score is None else float(min_score)
    ignore_score = max(0.05, min_score - 0.25) if ignore_score is None else float(ignore_score)
    det = FaceDetector(teacher, device=device, weights=weights, backend="torch", min_score=ignore_score)
    samples = []
    for path in tqdm(list(images), desc=f"pseudo-labels ({det.model_name})", unit="img", disable=not progress):
        img = load_image(path)
        h, w = img.shape[:2]
        regions = _tile_regions(w, h, det.input_size, tiles)
        results = det.detect_tensors([img] * len(regions), regions=regions)
        boxes = np.concatenate([r.xyxy for r in results])
        scores = np.concatenate([r.scores for r in results])
        kps = np.concatenate([r.keypoints for r in results])
        if len(regions) > 1 and len(scores):
            sup = non_max_suppression(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(kps),
                                      det.min_suppression, "weighted")
            boxes, scores, kps = sup.boxes.numpy(), sup.scores.numpy(), sup.keypoints.numpy()
        samples.append(Sample(str(path), boxes, kps, np.ones((len(boxes), NUM_KEYPOINTS), bool),
                              ignore=scores < min_score, size=(w, h), scores=scores))
    return samples
