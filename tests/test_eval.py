"""The WIDER FACE evaluator on small cases with hand-computed answers, the readers, and MediaPipe's reference
file scored to the shared data README's numbers."""

import json

import numpy as np
import pytest

from blazeface.cli import main
from blazeface.eval import (GroundTruth, GroundTruthImage, box_iou_xywh, evaluate, read_annotations_json,
                            read_coco, read_detections, read_jsonl, read_mediapipe_json,
                            read_wider_mat, read_wider_txt, voc_ap)
from blazeface.eval.fddb import Ellipse, ellipse_rect_iou, evaluate_fddb, read_fddb_detections, read_fddb_ellipses

from .conftest import shared


def _gt(boxes, keep=None, invalid=None, key="a.jpg"):
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    keep = np.ones(len(boxes), bool) if keep is None else np.asarray(keep, bool)
    img = GroundTruthImage(boxes, {"all": keep}, invalid)
    return GroundTruth({key: img}, ("all",))


def _dets(rows, key="a.jpg"):
    return {key: np.asarray(rows, dtype=float).reshape(-1, 5)}


FACES = [[0, 0, 20, 20], [100, 0, 20, 20], [200, 0, 20, 20], [300, 0, 20, 20]]


@pytest.mark.parametrize("thresholds", [1000, None])
def test_perfect_detections_give_ap_one(thresholds):
    gt = _gt(FACES)
    r = evaluate(gt, _dets([b + [0.9 - 0.1 * i] for i, b in enumerate(FACES)]), thresholds=thresholds)
    assert r["all"].ap == pytest.approx(1.0)
    assert r["all"].num_found == 4


@pytest.mark.parametrize("thresholds", [1000, None])
def test_known_pr_curve_gives_its_interpolated_ap(thresholds):
    # TP 0.9, FP 0.8, TP 0.7, FP 0.6 on 4 faces: PR points (0.25, 1), (0.25, 1/2), (0.5, 2/3), (0.5, 1/2).
    # Interpolated: 0.25 * 1 + 0.25 * 2/3 = 5/12.
    gt = _gt(FACES)
    rows = [FACES[0] + [0.9], [500, 500, 20, 20, 0.8], FACES[1] + [0.7], [600, 600, 20, 20, 0.6]]
    r = evaluate(gt, _dets(rows), thresholds=thresholds)["all"]
    assert r.ap == pytest.approx(5 / 12, abs=1e-9)
    finite = np.isfinite(r.precision)
    points = sorted({(round(float(a), 4), round(float(b), 4)) for a, b in zip(r.recall[finite], r.precision[finite])})
    assert points == [(0.25, 0.5), (0.25, 1.0), (0.5, 0.5), (0.5, 0.6667)]
    assert voc_ap(np.array([0.25, 0.25, 0.5, 0.5]), np.array([1, 0.5, 2 / 3, 0.5])) == pytest.approx(5 / 12)


def test_ignored_faces_neither_help_nor_hurt():
    rows = [FACES[0] + [0.9], [500, 500, 20, 20, 0.8], FACES[1] + [0.7]]
    base = evaluate(_gt(FACES), _dets(rows))["all"].ap
    assert base == pytest.approx(0.25 + 0.25 * 2 / 3)
    # an ignored face (outside the setting) found at the top score, and another one missed
    extra = FACES + [[700, 0, 20, 20], [800, 0, 20, 20]]
    keep = [True] * 4 + [False, False]
    r = evaluate(_gt(extra, keep), _dets([extra[4] + [0.95]] + rows))["all"]
    assert r.ap == pytest.approx(base)
    assert r.num_faces == 4 and r.num_detections == 3  # the detection of the ignored face is not counted
    # invalid faces are ignored in every setting, the same way
    invalid = [False] * 4 + [True, True]
    assert evaluate(_gt(extra, None, invalid), _dets([extra[4] + [0.95]] + rows))["all"].ap == pytest.approx(base)
    # without the flag, that detection is a true positive and both faces count
    assert evaluate(_gt(extra), _dets([extra[4] + [0.95]] + rows))["all"].num_faces == 6


def test_duplicates_count_as_false_positives():
    gt = _gt(FACES[:2])
    clean = evaluate(gt, _dets([FACES[0] + [0.9], FACES[1] + [0.7]]))["all"].ap
    dup = evaluate(gt, _dets([FACES[0] + [0.9], [1, 1, 20, 20, 0.8], FACES[1] + [0.7]]))["all"]
    assert clean == pytest.approx(1.0)
    # (0.5, 1), (0.5, 1/2), (1, 2/3): 0.5 * 1 + 0.5 * 2/3
    assert dup.ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert dup.num_found == 2 and dup.num_detections == 3


def test_iou_threshold_and_pixel_convention():
    # [0,0,10,10] vs [0,0,10,20]: IoU 100/200 = 0.5 exactly (continuous); toolbox +1: 121/231
    assert box_iou_xywh(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 20]]))[0, 0] == pytest.approx(0.5)
    assert box_iou_xywh(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 20]]), 1.0)[0, 0] == pytest.approx(121 / 231)
    gt = _gt([[0, 0, 10, 20]])
    assert evaluate(gt, _dets([[0, 0, 10, 10, 0.9]]))["all"].ap == pytest.approx(1.0)  # IoU >= 0.5 matches
    assert evaluate(gt, _dets([[0, 0, 10, 9.9, 0.9]]))["all"].ap == 0.0


def test_scores_are_normalized_over_the_set_and_images_combine():
    # two images; the same ranking in raw and normalized scores gives the same AP
    gt = GroundTruth({"a.jpg": GroundTruthImage(np.array([FACES[0]]), {"all": [True]}),
                      "b.jpg": GroundTruthImage(np.array([FACES[1]]), {"all": [True]})}, ("all",))
    dets = {"a.jpg": np.array([FACES[0] + [0.7]]), "b.jpg": np.array([[0, 90, 20, 20, 0.8], FACES[1] + [0.6]])}
    # ranking: FP 0.8, TP 0.7, TP 0.6 -> (0, 0), (0.5, 1/2), (1, 2/3): AP = 0.5 * 2/3 + 0.5 * 2/3
    for norm in (True, False):
        assert evaluate(gt, dets, normalize=norm)["all"].ap == pytest.approx(2 / 3)
    # detections are found by file name, whatever folder they name
    assert evaluate(gt, {"x/y/a.jpg": dets["a.jpg"], "b.jpg": dets["b.jpg"]})["all"].ap == pytest.approx(2 / 3)


def test_mediapipe_reference_scores_match_the_readme():
    gt = read_annotations_json(shared("wider_val_dev", "annotations.json"))
    ref = shared("wider_val_dev", "mediapipe_0.10.14.json")
    expected = {"short_range": (0.090, 0.040, 0.012), "full_range_sparse": (0.285, 0.133, 0.042)}
    found = {"short_range": 57, "full_range_sparse": 161}
    for model, aps in expected.items():
        dets = read_mediapipe_json(ref, model)
        assert sum(len(v) for v in dets.values()) == found[model]
        r = evaluate(gt, dets)
        assert [round(r[s].ap, 3) for s in ("easy", "medium", "hard")] == list(aps)
        assert (r["easy"].num_faces, r["medium"].num_faces, r["hard"].num_faces) == (398, 900, 2858)
    # the official toolbox's +1-pixel IoU moves full range sparse slightly (documented in protocol.py)
    r = evaluate(gt, read_mediapipe_json(ref, "full_range_sparse"), pixel_offset=1.0)
    assert [round(r[s].ap, 3) for s in ("easy", "medium", "hard")] == [0.287, 0.134, 0.042]


def test_wider_txt_reader(tmp_path):
    txt = tmp_path / "wider_face_val_bbx_gt.txt"
    txt.write_text("0--Parade/0_Parade_a.jpg\n2\n10 20 30 40 0 0 0 0 0 0 \n50 60 5 6 2 0 0 1 0 0 \n"
                   "1--Handshaking/1_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n9--Press/9_c.jpg\n1\n1 2 3 4 0 0 0 0 1 0\n")
    gt = read_wider_txt(txt)
    assert list(gt.images) == ["0_Parade_a.jpg", "1_b.jpg", "9_c.jpg"]
    a = gt.images["0_Parade_a.jpg"]
    assert a.boxes.tolist() == [[10, 20, 30, 40], [50, 60, 5, 6]]
    assert a.keep("all").tolist() == [True, False]  # the second face is invalid
    assert a.attrs["blur"].tolist() == [0, 2]
    assert len(gt.images["1_b.jpg"].boxes) == 0
    assert gt.image_path("9_c.jpg") == tmp_path.parent / "WIDER_val" / "images" / "9--Press" / "9_c.jpg"


def test_wider_mat_reader(tmp_path):
    from scipy.io import savemat

    def cell(items):
        out = np.empty((len(items), 1), dtype=object)
        for i, it in enumerate(items):
            out[i, 0] = it
        return out

    events = cell([np.array(["0--Parade"]), np.array(["1--Handshaking"])])
    files = cell([cell([np.array(["0_a"]), np.array(["0_b"])]), cell([np.array(["1_c"])])])
    boxes = cell([cell([np.array([[1, 2, 30, 40], [5, 6, 7, 8]]), np.array([[9, 9, 50, 50]])]),
                  cell([np.array([[0, 0, 10, 10], [20, 20, 10, 10], [40, 40, 10, 10]])])])
    savemat(tmp_path / "wider_face_val.mat", {"event_list": events, "file_list": files, "face_bbx_list": boxes})
    easy = cell([cell([np.array([[1]]), np.zeros((0, 1))]), cell([np.array([[3]])])])
    hard = cell([cell([np.array([[1], [2]]), np.array([[1]])]), cell([np.array([[1], [2], [3]])])])
    savemat(tmp_path / "wider_easy_val.mat", {"gt_list": easy})
    savemat(tmp_path / "wider_hard_val.mat", {"gt_list": hard})
    gt = read_wider_mat(tmp_path)
    assert gt.settings == ("easy", "hard")
    assert sorted(gt.images) == ["0_a.jpg", "0_b.jpg", "1_c.jpg"]
    assert gt.images["0_a.jpg"].keep("easy").tolist() == [True, False]
    assert gt.images["0_b.jpg"].keep("easy").tolist() == [False]
    assert gt.images["1_c.jpg"].keep("easy").tolist() == [False, False, True]
    assert gt.images["1_c.jpg"].keep("hard").tolist() == [True, True, True]
    assert gt.images["1_c.jpg"].path == "1--Handshaking/1_c.jpg"
    r = evaluate(gt, {"1_c.jpg": np.array([[40, 40, 10, 10, 0.9]]), "0_a.jpg": np.array([[1, 2, 30, 40, 0.5]])})
    assert r["easy"].ap == pytest.approx(1.0) and r["easy"].num_faces == 2
    assert r["hard"].num_found == 2 and r["hard"].num_faces == 6


def test_coco_reader_and_results(tmp_path):
    coco = {"images": [{"id": 7, "file_name": "x/p.jpg", "width": 100, "height": 80},
                       {"id": 8, "file_name": "q.jpg", "width": 50, "height": 50}],
            "annotations": [{"id": 1, "image_id": 7, "bbox": [10, 10, 20, 20], "category_id": 1},
                            {"id": 2, "image_id": 7, "bbox": [50, 10, 20, 20], "category_id": 1, "iscrowd": 1},
                            {"id": 3, "image_id": 8, "bbox": [0, 0, 10, 10], "category_id": 1}],
            "categories": [{"id": 1, "name": "face"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    gt = read_coco(tmp_path / "gt.json")
    assert gt.images["p.jpg"].keep("all").tolist() == [True, False]
    (tmp_path / "res.json").write_text(json.dumps([
        {"image_id": 7, "bbox": [10, 10, 20, 20], "score": 0.9, "category_id": 1},
        {"image_id": 7, "bbox": [50, 10, 20, 20], "score": 0.95, "category_id": 1},  # the crowd: ignored
        {"image_id": 8, "bbox": [30, 30, 10, 10], "score": 0.8, "category_id": 1}]))
    r = evaluate(gt, read_detections(tmp_path / "res.json", gt=gt))["all"]
    # TP 0.9, FP 0.8 on 2 faces: (0.5, 1), (0.5, 0.5) -> AP 0.5
    assert r.ap == pytest.approx(0.5) and r.num_detections == 2


def test_jsonl_and_cli_score_a_detections_file(tmp_path, capsys):
    gt = {"p.jpg": {"size_wh": [200, 100], "faces": [
        {"xywh": [10, 10, 40, 40], "attrs": {"invalid": 0}, "in_easy": True, "in_medium": True, "in_hard": True},
        {"xywh": [100, 10, 20, 20], "attrs": {"invalid": 0}, "in_easy": False, "in_medium": True, "in_hard": True}]}}
    (tmp_path / "annotations.json").write_text(json.dumps(gt))
    lines = [{"path": "some/where/p.jpg", "width": 200, "height": 100, "model": "m", "error": None,
              "faces": [{"score": 0.9, "box": [10, 10, 50, 50], "keypoints": []},
                        {"score": 0.8, "box": [100, 10, 120, 30], "keypoints": []}]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert read_jsonl(tmp_path / "d.jsonl")["p.jpg"].tolist() == [[10, 10, 40, 40, 0.9], [100, 10, 20, 20, 0.8]]
    out = tmp_path / "r.json"
    assert main(["eval", str(tmp_path / "annotations.json"), "--detections", str(tmp_path / "d.jsonl"),
                 "--json", str(out), "--plot", str(tmp_path / "pr.png")]) == 0
    printed = capsys.readouterr().out
    assert "| d.jsonl | 1.000 | 1.000 | 1.000 |" in printed
    res = json.loads(out.read_text())["d.jsonl"]["settings"]
    # easy: the second detection matches a face outside easy -> ignored, not a false positive
    assert res["easy"]["faces"] == 1 and res["easy"]["detections"] == 1 and res["hard"]["found"] == 2
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fddb_ellipses_and_discrete_roc(tmp_path):
    circle = Ellipse(10, 10, 0.0, 50, 50)
    # a circle against its bounding square: pi r^2 / (2r)^2
    assert ellipse_rect_iou(circle, np.array([40, 40, 20, 20]), samples=400) == pytest.approx(np.pi / 4, abs=0.01)
    (tmp_path / "ell.txt").write_text("2002/08/11/big/img_1\n2\n10 10 0 50 50 1\n20 10 1.5707963 150 50 1\n"
                                      "2002/08/12/big/img_2\n0\n")
    (tmp_path / "det.txt").write_text("2002/08/11/big/img_1\n3\n41 41 18 18 0.9\n300 300 10 10 0.8\n"
                                      "140 31 20 38 0.7\n2002/08/12/big/img_2\n1\n0 0 5 5 0.6\n")
    ell = read_fddb_ellipses(tmp_path / "ell.txt")
    assert len(ell["2002/08/11/big/img_1"]) == 2 and ell["2002/08/12/big/img_2"] == []
    r = evaluate_fddb(ell, read_fddb_detections(tmp_path / "det.txt"))
    # cut-offs 0.9, 0.8, 0.7, 0.6: TP 1, 1, 2, 2 of 2 faces; FP 0, 1, 1, 2
    assert r.tpr.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert r.false_positives.tolist() == [0, 1, 1, 2]
    assert r.tpr_at(0) == 0.5 and r.tpr_at(1) == 1.0
