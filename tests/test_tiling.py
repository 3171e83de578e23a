"""Multi-scale tiling: the plan covers every face whole, tiles resample exactly like the letterbox, a face cut by
a tile border is found once, and tiling="off" (the default) changes nothing."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from blazeface import FaceDetector
from blazeface.ops import box_iou
from blazeface.preprocess import Letterbox, letterbox_batch
from blazeface.tiling import MODEL_FACE_RANGE, TileConfig, plan_tiles, resolve_tiling, small_face_factor

from .conftest import EXAMPLES


def test_resolve_tiling_and_config_validation():
    assert resolve_tiling("off") is None and resolve_tiling(None) is None
    assert resolve_tiling("auto") == TileConfig()
    cfg = TileConfig(min_face=20, max_tiles=8)
    assert resolve_tiling(cfg) is cfg
    with pytest.raises(ValueError):
        resolve_tiling("sometimes")
    with pytest.raises(ValueError):
        TileConfig(face_range=(0.5, 0.1))
    with pytest.raises(ValueError):
        TileConfig(max_tiles=0)
    with pytest.raises(ValueError):
        TileConfig(tile_nms="soft")
    with pytest.raises(ValueError):
        TileConfig(small_face_pixels=0)
    with pytest.raises(Exception):
        cfg.max_tiles = 3  # frozen


@pytest.mark.parametrize("model,size", [("short_range", 128), ("full_range_sparse", 192), ("back", 256)])
@pytest.mark.parametrize("wh", [(1024, 768), (768, 1024), (1024, 576), (4000, 3000)])
def test_plan_covers_every_face_size_whole(model, size, wh):
    """Every square face from min_face up to the image's size lies whole in some tile where its size is within
    the model's band (lo..hi of the tile side): the plan leaves no face size or position uncovered."""
    w, h = wh
    cfg = TileConfig()
    tiles = plan_tiles(w, h, size, model, cfg)
    assert len(tiles) <= cfg.tile_limit(size, tiles[0].flip)
    assert tiles[0].region == Letterbox.centered(w, h, size)
    lo, hi = MODEL_FACE_RANGE[model]
    # the smallest face: min_face, unless max_tiles raised it (short range at 1024 px)
    min_face = max(cfg.min_face_fraction * max(w, h), cfg.min_face_pixels)
    smallest = lo * min(t.region.side for t in tiles)
    assert min_face * 0.999 <= smallest <= (min_face if model != "short_range" else 3 * min_face)
    rng = np.random.default_rng(0)
    for f in np.geomspace(smallest, min(w, h, hi * max(w, h)), 25):
        for _ in range(30):
            x, y = rng.uniform(0, w - f), rng.uniform(0, h - f)
            ok = any(t.region.x0 - 1e-6 <= x and x + f <= t.region.x0 + t.region.side + 1e-6
                     and t.region.y0 - 1e-6 <= y and y + f <= t.region.y0 + t.region.side + 1e-6
                     and lo * 0.999 <= f / t.region.side <= hi for t in tiles)
            assert ok, f"face {f:.0f}px at ({x:.0f}, {y:.0f}) in no tile of {model} {wh}"


def test_small_image_needs_no_tiles():
    assert len(plan_tiles(192, 192, 192, "full_range_sparse")) == 1
    assert len(plan_tiles(640, 480, 192, "full_range_sparse", TileConfig(min_face=50))) == 1


def test_tiles_resample_exactly_like_the_letterbox():
    img = torch.from_numpy(np.asarray(Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")).copy())
    regions = [t.region for t in plan_tiles(512, 600, 128, "short_range", TileConfig(min_face=20, max_tiles=12))]
    regions.append(Letterbox(512, 600, 128, -40.3, 555.5, 97.25))  # partly outside the image
    assert len(regions) > 5
    detector = FaceDetector("short_range", device="cpu")
    fast, _ = detector.preprocess([img.numpy()] * len(regions), regions)  # the numpy path tiles take on the CPU
    ref, _ = letterbox_batch([img] * len(regions), 128, regions)  # the torch path, one region at a time
    assert torch.equal(fast, ref)


def test_tiling_off_is_the_default_and_unchanged():
    img = EXAMPLES / "grace_hopper.jpg"
    a = FaceDetector("short_range", device="cpu")(img)
    b = FaceDetector("short_range", device="cpu", tiling="off")(img)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    # MediaPipe's own detection of this photo (shared README: short range finds the face at about 0.85)
    assert len(a) == 1 and a.scores[0] > 0.8
    # a small image gets a one-tile plan: without the flip, tiling gives exactly the untiled result
    c = FaceDetector("full_range_sparse", device="cpu", tiling=TileConfig(flip=False))(EXAMPLES / "pillow_hopper.png")
    d = FaceDetector("full_range_sparse", device="cpu")(EXAMPLES / "pillow_hopper.png")
    assert np.array_equal(c.boxes, d.boxes) and np.array_equal(c.scores, d.scores)
    # "auto" flips that one tile (it fits the budget): the same face, the two views' mean score
    e = FaceDetector("full_range_sparse", device="cpu", tiling="auto")(EXAMPLES / "pillow_hopper.png")
    assert [t.flip for t in plan_tiles(*d.image_size, 192, "full_range_sparse")] == [True]
    assert len(e) == 1 and _ious(e.boxes, d.boxes[0])[0] > 0.9 and abs(e.scores[0] - d.scores[0]) < 0.1


def _canvas_with_face():
    """A 1024×768 grey canvas with Grace Hopper shrunk so that her face (~50 px) straddles the right border of a
    level-1 tile of the full-range plan. Returns the image and the face box (from the 512-px photo, scaled)."""
    photo = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")
    face = FaceDetector("full_range_sparse", device="cpu")(photo).boxes[0]
    small = photo.resize((128, 150), Image.BILINEAR)
    canvas = np.full((768, 1024, 3), 128, np.uint8)
    ox, oy = 298, 300
    canvas[oy:oy + 150, ox:ox + 128] = np.asarray(small)
    return torch.from_numpy(canvas), face * 0.25 + np.array([ox, oy, ox, oy])


def _ious(boxes, face):
    return box_iou(torch.tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4),
                   torch.tensor(face[None], dtype=torch.float32))[:, 0].numpy()


def test_face_cut_by_a_tile_border_is_found_once():
    img, face = _canvas_with_face()
    tiles = plan_tiles(1024, 768, 192, "full_range_sparse")
    inside = lambda t, b: (t.region.x0 <= b[0] and b[2] <= t.region.x0 + t.region.side  # noqa: E731
                           and t.region.y0 <= b[1] and b[3] <= t.region.y0 + t.region.side)
    level1 = [t for t in tiles if t.level == 1]
    cut = [t for t in level1 if t.region.x0 < face[0] < t.region.x0 + t.region.side < face[2]
           and t.region.y0 < face[1] and face[3] < t.region.y0 + t.region.side]
    assert cut and any(inside(t, face) for t in level1), "the scene must have the face cut in one tile, whole in another"
    # the tile that cuts the face does see a half face at its border
    plain = FaceDetector("full_range_sparse", device="cpu", min_score=0.05)
    half = plain.detect_tensors([img], None, [cut[0].region])[0]
    border = cut[0].region.x0 + cut[0].region.side
    assert any(iou > 0.2 and b[2] > border - 3 for b, iou in zip(half.boxes, _ious(half.boxes, face)))
    # tiled: exactly one detection on the face, the whole face
    tiled = FaceDetector("full_range_sparse", device="cpu", min_score=0.3, tiling="auto")
    ious = _ious(tiled.detect_tensors([img])[0].boxes, face)
    assert (ious > 0.2).sum() == 1 and ious.max() > 0.85
    # without the border rule, the half face is blended into the face by the merge and drags its box off
    # (IoU with the face 0.84 instead of 0.88)
    no_rule = FaceDetector("full_range_sparse", device="cpu", min_score=0.3, tiling=TileConfig(border_margin=-10))
    bad = _ious(no_rule.detect_tensors([img])[0].boxes, face)
    assert (bad > 0.2).sum() == 1 and bad.max() < ious.max() - 0.03


def test_tiling_finds_small_faces_the_letterbox_misses():
    """Nine ~40-px faces in a 1024×768 image: the plain letterbox (faces 7.5 px in the network input) finds none,
    tiling finds each once."""
    photo = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")
    face = FaceDetector("full_range_sparse", device="cpu")(photo).boxes[0] * 0.2
    small = np.asarray(photo.resize((102, 120), Image.BILINEAR))
    canvas = np.full((768, 1024, 3), 128, np.uint8)
    truth = []
    for i, (x, y) in enumerate([(60, 60), (450, 40), (860, 80), (120, 330), (480, 320), (820, 300),
                                (40, 600), (430, 620), (880, 610)]):
        canvas[y:y + 120, x:x + 102] = small
        truth.append(face + np.array([x, y, x, y]))
    img = torch.from_numpy(canvas)
    plain = FaceDetector("full_range_sparse", device="cpu")
    assert len(plain.detect_tensors([img])[0]) == 0
    tiled = FaceDetector("full_range_sparse", device="cpu", tiling="auto")  # serving threshold 0.6
    res = tiled.detect_tensors([img])[0]
    for t in truth:
        assert (_ious(res.boxes, t) >= 0.5).sum() == 1
    assert len(res) == len(truth)
    # the faces are ~21 input pixels in the level-1 tiles that find them (366-px tiles at 192 px): below
    # small_face_pixels (28), so the parts of their scores above min_score are the unscaled ones times sqrt(size / 28)
    side = max(t.region.side for t in plan_tiles(1024, 768, 192, "full_range_sparse") if t.level == 1)
    raw = FaceDetector("full_range_sparse", device="cpu", min_score=0.3,
                       tiling=TileConfig(small_face_pixels=None)).detect_tensors([img])[0]
    low = FaceDetector("full_range_sparse", device="cpu", min_score=0.3, tiling="auto").detect_tensors([img])[0]
    assert len(raw) == len(low) == len(truth)
    for t in truth:
        a, b = np.argmax(_ious(raw.boxes, t)), np.argmax(_ious(low.boxes, t))
        px = (raw.boxes[a, 2:] - raw.boxes[a, :2]).max() / side * 192
        assert 18 < px < 25
        # the part above min_score is scaled (merged vs leader box: a few % apart)
        assert low.scores[b] - 0.3 == pytest.approx((raw.scores[a] - 0.3) * np.sqrt(px / 28), rel=0.05)
        assert low.scores[b] >= 0.3


def test_small_face_factor_by_hand():
    boxes = np.array([[0.1, 0.1, 0.1 + 14 / 192, 0.12], [0.0, 0.0, 0.5, 0.2], [0.3, 0.3, 0.2, 0.2],
                      [0.0, 0.0, 0.05, 7 / 192]], np.float32)  # 14 px wide, 96 px, empty, 7 px tall
    np.testing.assert_allclose(small_face_factor(boxes, 192, 28.0), [np.sqrt(0.5), 1.0, 0.0, np.sqrt(9.6 / 28)],
                               rtol=1e-5)


def test_cli_detect_tile_and_eval_model(tmp_path, capsys):
    from blazeface.cli import main

    from .conftest import shared

    assert main(["detect", str(EXAMPLES / "pillow_hopper.png"), "--model", "full_range_sparse", "--tile",
                 "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert len(rec["faces"]) == 1 and rec["error"] is None
    ann = shared("wider_val_dev", "annotations.json")
    out = tmp_path / "r.json"
    assert main(["eval", str(ann), "--model", "full_range_sparse", "--limit", "2", "--quiet", "--json", str(out),
                 "--save-detections", str(tmp_path / "d.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "full_range_sparse (min score 0.05)" in printed
    res = json.loads(out.read_text())
    settings = next(iter(res.values()))["settings"]
    assert set(settings) == {"easy", "medium", "hard"}
    # the saved detections score the same when read back
    assert main(["eval", str(ann), "--detections", str(tmp_path / "d.jsonl"), "--limit", "2", "--json",
                 str(tmp_path / "r2.json")]) == 0
    again = next(iter(json.loads((tmp_path / "r2.json").read_text()).values()))["settings"]
    for s in settings:  # no easy face in these two images: AP is undefined (null) in both
        a, b = again[s]["ap"], settings[s]["ap"]
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-4)
    assert settings["easy"]["ap"] is None and settings["hard"]["ap"] is not None


@pytest.mark.parametrize("model", ["short_range", "full_range", "back"])
def test_mirror_anchor_index_maps_every_anchor_to_its_mirror(model):
    from blazeface.ops.anchors import generate_anchors
    from blazeface.registry import get_config
    from blazeface.tiling import mirror_anchor_index

    anchors = generate_anchors(get_config(model).anchors).numpy()
    index = mirror_anchor_index(get_config(model).anchors)
    assert sorted(index.tolist()) == list(range(len(anchors)))  # a permutation …
    assert np.array_equal(index[index], np.arange(len(anchors)))  # … and an involution
    np.testing.assert_allclose(anchors[index, 0], 1 - anchors[:, 0], atol=1e-6)
    np.testing.assert_array_equal(anchors[index, 1:], anchors[:, 1:])
    # each anchor of a cell pairs with the same slot (output channel) of the mirrored cell
    if model == "short_range":  # 16×16 cells of 2 anchors, then 8×8 cells of 6: cell (y=0, x=0) ↔ (y=0, x=15)
        assert index[:2].tolist() == [30, 31] and index[512 + 3] == 512 + 7 * 6 + 3


def _mirror(det, width):
    """Detections of an image mirrored left-right, in the mirrored image's pixels (pixel x ↔ width - 1 - x:
    the letterbox samples pixel centres at integer coordinates), keypoints swapped left/right."""
    from blazeface.results import FLIP_KEYPOINTS

    boxes = det.boxes.copy()
    boxes[:, [0, 2]] = width - 1 - det.boxes[:, [2, 0]]
    kps = det.keypoints[:, list(FLIP_KEYPOINTS)].copy()
    kps[..., 0] = width - 1 - kps[..., 0]
    return boxes, kps


def test_flip_tta_on_a_mirrored_image_gives_the_mirrored_detections():
    """Where the tile is the image at the network's resolution (no resampling), the mirrored input is exactly the
    mirrored image, so flip TTA is exactly mirror-equivariant: this checks the anchor pairing, the sign and the
    one-pixel shift of the x offsets and the keypoint swap, to float precision."""
    photo = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB").crop((0, 40, 512, 552)).resize((128, 128))
    img = np.asarray(photo).copy()
    cfg = TileConfig(flip=True, max_tiles=1)
    det = FaceDetector("short_range", device="cpu", min_score=0.3, tiling=cfg)
    assert len(plan_tiles(128, 128, 128, "short_range", cfg)) == 1
    a = det.detect_tensors([img])[0]
    b = det.detect_tensors([np.ascontiguousarray(img[:, ::-1])])[0]
    assert len(a) == len(b) >= 1 and a.scores[0] > 0.8
    boxes, kps = _mirror(b, 128)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    np.testing.assert_allclose(a.boxes, boxes, atol=1e-3)
    np.testing.assert_allclose(a.keypoints, kps, atol=1e-3)
    # the fused face agrees with the single view it came from (same face, a slightly different box)
    plain = FaceDetector("short_range", device="cpu", min_score=0.3, tiling=TileConfig(max_tiles=1))
    single = plain.detect_tensors([img])[0]
    assert _ious(single.boxes[:1], a.boxes[0]).item() > 0.9
    assert np.abs(single.keypoints[0] - a.keypoints[0]).max() < 0.05 * (a.boxes[0, 2] - a.boxes[0, 0])


def test_flip_tta_on_a_tiled_image_is_mirror_equivariant():
    """On a tiled 1024×768 scene the plan of the mirrored image is the mirrored plan; resampling differs by a
    fraction of an input pixel, so the faces agree to IoU > 0.8 (a 24-px false face), not to the bit."""
    img, face = _canvas_with_face()
    cfg = TileConfig(flip=True)
    det = FaceDetector("full_range_sparse", device="cpu", min_score=0.3, tiling=cfg)
    tiles = plan_tiles(1024, 768, 192, "full_range_sparse", cfg)
    mirrored = sorted(round(1024 - t.region.x0 - t.region.side, 3) for t in tiles)
    assert mirrored == sorted(round(t.region.x0, 3) for t in tiles)
    a = det.detect_tensors([img])[0]
    b = det.detect_tensors([torch.from_numpy(np.ascontiguousarray(img.numpy()[:, ::-1]))])[0]
    assert _ious(a.boxes, face).max() > 0.85
    boxes, _ = _mirror(b, 1024)
    assert len(a) == len(b)
    assert all(_ious(boxes, box).max() > 0.8 for box in a.boxes)
    np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=0.05)


def test_tile_budget_in_network_input_pixels():
    cfg = TileConfig()  # 2**20 input pixels per image
    assert [cfg.tile_limit(s, False) for s in (128, 192, 256)] == [64, 28, 16]
    assert [cfg.tile_limit(s, True) for s in (128, 192, 256)] == [32, 14, 8]  # flipped tiles cost twice
    assert TileConfig(max_tiles=10).tile_limit(128, False) == 10
    assert TileConfig(max_input_pixels=None).tile_limit(256, True) == float("inf")
    assert TileConfig(max_input_pixels=1).tile_limit(128, False) == 1  # never below one tile
    with pytest.raises(ValueError):
        TileConfig(flip="sometimes")
    with pytest.raises(ValueError):
        TileConfig(max_input_pixels=0)


def test_plan_rules_give_the_hand_checked_tiles():
    # full range, 1024×768: min face 25.6 px (2.5%); level 1 side max(1024 / (0.6 / 0.07 / 2), 25.6 / 0.07) =
    # 365.7, overlap 0.07 × 1024 × 1.1 = 78.8, stride 286.9 → 4 × 3 tiles; with level 0: 13 tiles, and
    # 13 × 2 × 192² = 958,464 ≤ 2**20: all flipped
    tiles = plan_tiles(1024, 768, 192, "full_range")
    assert len(tiles) == 13 and all(t.flip for t in tiles)
    assert [t.level for t in tiles].count(1) == 12
    assert tiles[1].region.side == pytest.approx(25.6 / 0.07)
    # back, 1024×768: side 25.6 / 0.06 = 426.7, stride 426.7 - 67.6 → 3 × 2 + 1 = 7 tiles,
    # 7 × 2 × 256² ≤ 2**20: flipped
    tiles = plan_tiles(1024, 768, 256, "back")
    assert len(tiles) == 7 and all(t.flip for t in tiles)
    # back, 1024×1024: 3 × 3 + 1 = 10 tiles; flipped they would cost 10 × 2 × 256² > 2**20: the tiles stay,
    # the flip goes
    tiles = plan_tiles(1024, 1024, 256, "back")
    assert len(tiles) == 10 and not any(t.flip for t in tiles)
    assert len(plan_tiles(1024, 1024, 256, "back", TileConfig(flip=True))) <= 8  # forced flip: fewer, larger tiles
    # short range, 1024×768: the tiles for 25.6-px faces exceed even the unflipped budget (64), so no flip, and
    # min_face grows (by 10% steps) until the plan fits
    cfg = TileConfig()
    tiles = plan_tiles(1024, 768, 128, "short_range", cfg)
    assert not any(t.flip for t in tiles) and 56 < len(tiles) <= 64
    smallest = MODEL_FACE_RANGE["short_range"][0] * min(t.region.side for t in tiles)
    assert 25.6 < smallest < 25.6 * 1.1 ** 3
    unbounded = TileConfig(min_face=smallest / 1.1, max_input_pixels=None, flip=False)
    assert len(plan_tiles(1024, 768, 128, "short_range", unbounded)) > 64
    # flip=False / True never change the tiles when the budget is not binding
    free = TileConfig(max_input_pixels=None)
    assert len(plan_tiles(1024, 768, 128, "short_range", replace(free, flip=True))) == \
        len(plan_tiles(1024, 768, 128, "short_range", replace(free, flip=False)))
