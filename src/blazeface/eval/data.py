"""Ground truth and detections for evaluation: readers for WIDER FACE (txt, .mat, the shared JSON), COCO json,
our ``blazeface detect --jsonl`` output and MediaPipe's reference JSON.

Boxes are ``(x, y, w, h)`` in pixels, as WIDER FACE writes them. Images are identified by a *key*, their file
name (``0_Parade_Parade_0_102.jpg``); detections name images by path and are matched by file name, so
``images/0--Parade/0_Parade_Parade_0_102.jpg`` and ``0_Parade_Parade_0_102.jpg`` are the same image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

WIDER_ATTRS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def image_key(path: str) -> str:
    """The key an image is known by: its file name (works for ``/``- and ``\\``-separated paths)."""
    return PurePosixPath(str(path).replace("\\", "/")).name


@dataclass
class GroundTruthImage:
    """The faces of one image.

    Attributes:
        boxes: ``float64[M, 4]`` ``x, y, w, h`` pixels.
        settings: setting name → ``bool[M]``, the faces that count in that setting (all others are ignored).
        invalid: ``bool[M]``, faces flagged invalid (ignored in every setting).
        path: the image file relative to the dataset's image folder (e.g. ``0--Parade/0_Parade_…jpg``).
        size: ``(width, height)`` when known.
        attrs: per-face WIDER attributes (``blur``, ``occlusion``, …) when the format has them.
    """

    boxes: np.ndarray
    settings: dict[str, np.ndarray]
    invalid: np.ndarray | None = None
    path: str | None = None
    size: tuple[int, int] | None = None
    attrs: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(self.boxes)
        self.invalid = np.zeros(n, dtype=bool) if self.invalid is None else np.asarray(self.invalid, dtype=bool)
        self.settings = {k: np.asarray(v, dtype=bool).reshape(n) for k, v in self.settings.items()}

    def keep(self, setting: str) -> np.ndarray:
        """``bool[M]``: the faces that count in ``setting`` (never the invalid ones)."""
        if setting not in self.settings:
            raise KeyError(f"unknown setting {setting!r}; this ground truth has {sorted(self.settings)}")
        assert self.invalid is not None
        return self.settings[setting] & ~self.invalid


@dataclass
class GroundTruth:
    """A dataset's faces: image key → :class:`GroundTruthImage`, and its settings (e.g. easy/medium/hard)."""

    images: dict[str, GroundTruthImage]
    settings: tuple[str, ...]
    image_root: Path | None = None
    name: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_faces(self) -> int:
        return sum(len(im.boxes) for im in self.images.values())

    def image_path(self, key: str) -> Path:
        """Where the image file is (``image_root / path``)."""
        if self.image_root is None:
            raise ValueError(f"ground truth {self.name!r} has no image folder; pass one")
        return self.image_root / (self.images[key].path or key)

    def resolve(self, detections: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Re-key ``detections`` (by path, relative path or file name) to this ground truth's keys.
        Detections for images not in the ground truth are dropped."""
        out: dict[str, np.ndarray] = {}
        for k, v in detections.items():
            key = k if k in self.images else image_key(k)
            if key in self.images:
                out[key] = v
        return out

    def subset(self, keys: list[str]) -> "GroundTruth":
        return GroundTruth({k: self.images[k] for k in keys}, self.settings, self.image_root, self.name, self.extras)


def _unique_key(images: dict[str, GroundTruthImage], key: str) -> str:
    if key in images:
        raise ValueError(f"two images share the file name {key!r}; keys must be unique")
    return key


# --- ground truth readers ---------------------------------------------------------------------------------
def read_annotations_json(path: str | Path, image_root: str | Path | None = None) -> GroundTruth:
    """The shared ``wider_val_dev/annotations.json``:
    ``{file: {event, wider_rel_path, size_wh, faces: [{xywh, attrs, in_easy, in_medium, in_hard}]}}``.
    The image folder defaults to ``images/`` beside the file."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    images: dict[str, GroundTruthImage] = {}
    for name, rec in data.items():
        faces = rec.get("faces", [])
        boxes = np.array([f["xywh"] for f in faces], dtype=np.float64).reshape(-1, 4)
        settings = {s: np.array([bool(f.get(f"in_{s}", False)) for f in faces], dtype=bool)
                    for s in ("easy", "medium", "hard")}
        invalid = np.array([bool(f.get("attrs", {}).get("invalid", 0)) for f in faces], dtype=bool)
        size = tuple(rec["size_wh"]) if "size_wh" in rec else None
        images[_unique_key(images, image_key(name))] = GroundTruthImage(boxes, settings, invalid, name, size)  # type: ignore[arg-type]
    root = Path(image_root) if image_root is not None else path.parent / "images"
    return GroundTruth(images, ("easy", "medium", "hard"), root, path.parent.name)


def read_wider_txt(path: str | Path, image_root: str | Path | None = None,
                   min_size: float = 0.0) -> GroundTruth:
    """The official ``wider_face_val_bbx_gt.txt``: per image its relative path, the face count, then one line
    per face ``x y w h blur expression illumination invalid occlusion pose`` (an image without faces has a
    count of 0 and one line of zeros).

    The txt carries no easy/medium/hard split (that is in the official ``wider_{easy,medium,hard}_val.mat``;
    use :func:`read_wider_mat`); faces get the single setting ``"all"`` (every valid face with
    ``min(w, h) >= min_size``). The image folder defaults to ``WIDER_val/images`` beside the file's folder.
    """
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    images: dict[str, GroundTruthImage] = {}
    i = 0
    while i < len(lines):
        rel = lines[i]
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path}: line {i + 2}: expected a face count after {rel!r}") from exc
        i += 2
        rows = []
        for ln in lines[i:i + max(count, 1)]:
            rows.append([float(v) for v in ln.split()[:10]])
        i += max(count, 1)
        rows = rows[:count]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 10) if rows else np.zeros((0, 10))
        boxes = arr[:, :4]
        invalid = arr[:, 7] > 0
        keep = np.minimum(boxes[:, 2], boxes[:, 3]) >= min_size
        attrs = {a: arr[:, 4 + j].astype(int) for j, a in enumerate(WIDER_ATTRS)}
        images[_unique_key(images, image_key(rel))] = GroundTruthImage(boxes, {"all": keep}, invalid, rel, None, attrs)
    root = Path(image_root) if image_root is not None else path.parent.parent / "WIDER_val" / "images"
    return GroundTruth(images, ("all",), root, path.stem)


def _mat_str(x: Any) -> str:
    """A MATLAB string from scipy's nested object arrays."""
    while isinstance(x, np.ndarray):
        x = x.flat[0] if x.size else ""
    return str(x)


def read_wider_mat(gt_dir: str | Path, image_root: str | Path | None = None) -> GroundTruth:
    """The official ``.mat`` ground truth (needs scipy): ``wider_face_val.mat`` (``event_list``, ``file_list``,
    ``face_bbx_list``, optionally ``invalid_label_list``) and the settings' ``wider_easy_val.mat``,
    ``wider_medium_val.mat``, ``wider_hard_val.mat`` (``gt_list``: 1-based indices of the faces that count),
    read exactly as the toolbox reads them. Settings whose file is absent are left out."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading .mat ground truth needs scipy: pip install 'blazeface[eval]'") from exc
    gt_dir = Path(gt_dir)
    mat = loadmat(str(gt_dir / "wider_face_val.mat"))
    events, files, bbx = mat["event_list"], mat["file_list"], mat["face_bbx_list"]
    invalid_list = mat.get("invalid_label_list")
    lists = {}
    for s in ("easy", "medium", "hard"):
        f = gt_dir / f"wider_{s}_val.mat"
        if f.exists():
            lists[s] = loadmat(str(f))["gt_list"]
    if not lists:
        raise FileNotFoundError(f"{gt_dir}: no wider_{{easy,medium,hard}}_val.mat")
    images: dict[str, GroundTruthImage] = {}
    for i in range(len(events)):
        event = _mat_str(events[i][0])
        img_list = files[i][0]
        box_list = bbx[i][0]
        for j in range(len(img_list)):
            name = _mat_str(img_list[j][0])
            boxes = np.asarray(box_list[j][0], dtype=np.float64).reshape(-1, 4)
            settings = {}
            for s, gl in lists.items():
                idx = np.asarray(gl[i][0][j][0], dtype=np.int64).reshape(-1)
                mask = np.zeros(len(boxes), dtype=bool)
                mask[idx[idx > 0] - 1] = True
                settings[s] = mask
            invalid = None
            if invalid_list is not None:
                invalid = np.asarray(invalid_list[i][0][j][0]).reshape(-1).astype(bool)
            key = name if name.lower().endswith((".jpg", ".jpeg", ".png")) else f"{name}.jpg"
            images[_unique_key(images, key)] = GroundTruthImage(boxes, settings, invalid, f"{event}/{key}")
    root = Path(image_root) if image_root is not None else gt_dir.parent / "WIDER_val" / "images"
    return GroundTruth(images, tuple(lists), root, "wider_face_val")


def read_coco(path: str | Path, image_root: str | Path | None = None, category: str | int | None = None) -> GroundTruth:
    """COCO-style json (``images``, ``annotations`` with ``bbox = [x, y, w, h]``): one setting ``"all"``;
    ``iscrowd`` or ``ignore`` annotations are ignored faces. ``category`` (a name or id) keeps one category
    (default: all annotations)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    cat_id = None
    if category is not None:
        cat_id = category if isinstance(category, int) else next(
            (c["id"] for c in data.get("categories", []) if c.get("name") == category), None)
        if cat_id is None:
            raise ValueError(f"{path}: no category {category!r}")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for a in data.get("annotations", []):
        if cat_id is None or a.get("category_id") == cat_id:
            by_image.setdefault(a["image_id"], []).append(a)
    images: dict[str, GroundTruthImage] = {}
    for im in data["images"]:
        anns = by_image.get(im["id"], [])
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        ignored = np.array([bool(a.get("iscrowd", 0) or a.get("ignore", 0)) for a in anns], dtype=bool)
        size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
        images[_unique_key(images, image_key(im["file_name"]))] = GroundTruthImage(
            boxes, {"all": np.ones(len(anns), dtype=bool)}, ignored, im["file_name"], size)
    root = Path(image_root) if image_root is not None else path.parent
    gt = GroundTruth(images, ("all",), root, path.stem)
    gt.extras["coco_ids"] = {im["id"]: image_key(im["file_name"]) for im in data["images"]}
    return gt


def read_ground_truth(path: str | Path, image_root: str | Path | None = None) -> GroundTruth:
    """Pick the reader from the file: a folder or ``.mat`` (official .mat), ``.txt`` (official txt),
    ``.json`` (COCO when it has ``images`` and ``annotations``, else the shared WIDER JSON)."""
    path = Path(path)
    if path.is_dir():
        if (path / "annotations.json").exists():
            return read_annotations_json(path / "annotations.json", image_root)
        return read_wider_mat(path, image_root)
    if path.suffix == ".mat":
        return read_wider_mat(path.parent, image_root)
    if path.suffix == ".txt":
        return read_wider_txt(path, image_root)
    if path.suffix == ".json":
        head = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(head, dict) and "images" in head and "annotations" in head:
            return read_coco(path, image_root)
        return read_annotations_json(path, image_root)
    raise ValueError(f"{path}: unknown ground-truth format (expected .json, .txt, .mat or a folder)")


# --- detection readers ------------------------------------------------------------------------------------
Dets = dict[str, np.ndarray]


def _xyxy_to_xywh(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return [x1, y1, x2 - x1, y2 - y1]


def read_jsonl(path: str | Path) -> Dets:
    """``blazeface detect --jsonl`` output: one ``{"path", "faces": [{"score", "box": [x1, y1, x2, y2]}]}`` per
    line → image key → ``[N, 5]`` ``x, y, w, h, score``. Lines with an ``error`` give no detections."""
    out: Dets = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        rows = [_xyxy_to_xywh(f["box"]) + [float(f["score"])] for f in rec.get("faces", [])]
        out[image_key(rec["path"])] = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return out


def read_mediapipe_json(path: str | Path, model: str) -> Dets:
    """MediaPipe's reference file (``mediapipe_0.10.14.json``): ``images[name][model]`` lists faces with
    ``xmin, ymin, width, height`` relative to ``size_wh``, and ``score``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out: Dets = {}
    for name, rec in data["images"].items():
        if model not in rec:
            raise KeyError(f"{path}: image {name!r} has no {model!r} entry (has {sorted(rec)})")
        w, h = rec["size_wh"]
        rows = [[f["xmin"] * w, f["ymin"] * h, f["width"] * w, f["height"] * h, float(f["score"])] for f in rec[model]]
        out[image_key(name)] = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return out


def read_wider_predictions(folder: str | Path) -> Dets:
    """The toolbox's prediction folder: ``event/<image>.txt`` holding the image name, a count, then
    ``x y w h score`` lines."""
    out: Dets = {}
    for f in sorted(Path(folder).rglob("*.txt")):
        lines = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()]
        count = int(lines[1]) if len(lines) > 1 and lines[1] else 0
        rows = [[float(v) for v in ln.split()[:5]] for ln in lines[2:2 + count] if ln]
        name = lines[0] if lines and lines[0] else f.stem
        key = image_key(name)
        if "." not in key:
            key += ".jpg"
        out[key] = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return out


def read_coco_results(path: str | Path, gt: GroundTruth) -> Dets:
    """COCO results json ``[{image_id, bbox: [x, y, w, h], score}]`` (image ids from the COCO ground truth)."""
    ids = gt.extras.get("coco_ids")
    if ids is None:
        raise ValueError("COCO results need COCO ground truth (image ids)")
    out: Dets = {k: np.zeros((0, 5)) for k in ids.values()}
    rows: dict[str, list[list[float]]] = {}
    for r in json.loads(Path(path).read_text(encoding="utf-8")):
        rows.setdefault(ids[r["image_id"]], []).append([*map(float, r["bbox"][:4]), float(r["score"])])
    out.update({k: np.array(v, dtype=np.float64) for k, v in rows.items()})
    return out


def read_detections(path: str | Path, model: str | None = None, gt: GroundTruth | None = None) -> Dets:
    """Pick the reader: ``.jsonl`` (ours), a folder (toolbox txt), MediaPipe's JSON (``images`` of
    ``size_wh`` records; ``model`` picks the model), or COCO results (a JSON list)."""
    path = Path(path)
    if path.is_dir():
        return read_wider_predictions(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        if gt is None:
            raise ValueError("COCO results need the COCO ground truth")
        return read_coco_results(path, gt)
    if isinstance(data, dict) and "images" in data:
        first = next(iter(data["images"].values()), {})
        models = [k for k, v in first.items() if isinstance(v, list)]
        if model is None or model not in models:
            if len(models) == 1:
                model = models[0]
            else:
                raise ValueError(f"{path}: pick the model with --model (one of {models})")
        return read_mediapipe_json(path, model)
    raise ValueError(f"{path}: unknown detections format")


def detections_from_results(results: Mapping[str, Any]) -> Dets:
    """:class:`~blazeface.results.Detections` per image key → ``[N, 5]`` ``x, y, w, h, score``."""
    out: Dets = {}
    for key, det in results.items():
        out[image_key(key)] = np.concatenate([det.xywh, det.scores[:, None]], axis=1).astype(np.float64)
    return out


# BlazeFace's boxes against WIDER FACE's annotation style: medians over the 557 medium faces of wider_val_dev
# matched (IoU >= 0.3, score >= 0.3) by tiled full range sparse: BlazeFace boxes are 1.10× as wide, 0.834× as
# tall, and their centre sits 0.031 box heights lower. The two halves of the set (alternate images) give the
# same AP gain, so this is a convention, not a fit to particular images.
WIDER_BOX_STYLE = (1 / 1.10, 1 / 0.834, -0.031)


def to_wider_style(dets: Dets, style: tuple[float, float, float] = WIDER_BOX_STYLE) -> Dets:
    """Reshape ``x, y, w, h, score`` boxes to WIDER FACE's annotation style (narrower, taller, centre raised):
    ``w *= sx``, ``h *= sy``, centre ``y += dy * h`` (new ``h``). Scores are unchanged."""
    sx, sy, dy = style
    out: Dets = {}
    for k, d in dets.items():
        d = np.array(d, dtype=np.float64).reshape(-1, 5)
        cx, cy = d[:, 0] + d[:, 2] / 2, d[:, 1] + d[:, 3] / 2
        w, h = d[:, 2] * sx, d[:, 3] * sy
        cy = cy + dy * h
        d[:, 0], d[:, 1], d[:, 2], d[:, 3] = cx - w / 2, cy - h / 2, w, h
        out[k] = d
    return out
