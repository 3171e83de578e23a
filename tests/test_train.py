"""Training (issue 7): formats, augmentations, matching and encoding, AP, the Trainer, the CLI, distillation.

The main test trains the paper's model from scratch on 8 images (the 4 public-domain examples labelled by
MediaPipe's own outputs, and 4 compositions of their faces pasted at known places on generated backgrounds,
labelled through the paste geometry) and requires AP ≥ 0.95 on them.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from blazeface import FaceDetector, create_model, get_config
from blazeface.cli import main
from blazeface.ops.anchors import generate_anchors
from blazeface.ops.boxes import decode_boxes
from blazeface.train import (
    AugmentConfig,
    DetectionLoss,
    LossConfig,
    Sample,
    TrainConfig,
    Trainer,
    detect_format,
    encode,
    evaluate_detections,
    load_annotations,
    make_example,
    match_anchors,
    pseudo_label,
    split_by_event,
    write_jsonl,
)
from blazeface.results import FLIP_KEYPOINTS
from blazeface.train.loss import anchor_cells
from blazeface.train.synthetic import Paste, background, compose, samples_from_mediapipe_json

from .conftest import EXAMPLES, one_image_dataset, shared


@pytest.fixture(autouse=True)
def _one_thread():
    """Training steps on a shared 2-core machine run far faster on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _eight_images(tmp_path):
    """4 examples labelled by MediaPipe's reference outputs + 4 compositions of their faces."""
    ref = json.loads(shared("fixtures", "mediapipe_0.10.14.json").read_text())
    src = samples_from_mediapipe_json(ref, str(EXAMPLES), "short_range")
    assert [len(s) for s in src] == [1, 1, 1, 1]
    sources = [(np.asarray(Image.open(s.path).convert("RGB")), s) for s in src]
    plans = [
        (160, 128, [Paste(0, 0, 40, 45, 60), Paste(2, 0, 28, 120, 70)]),
        (128, 160, [Paste(1, 0, 60, 64, 80)]),
        (144, 144, [Paste(3, 0, 24, 30, 30), Paste(0, 0, 26, 100, 40), Paste(2, 0, 50, 72, 105)]),
        (176, 128, [Paste(2, 0, 70, 60, 64), Paste(1, 0, 30, 145, 50)]),
    ]
    samples = list(src)
    for i, (w, h, pastes) in enumerate(plans):
        img, s = compose(background(w, h, i), sources, pastes, str(tmp_path / f"synthetic_{i}.png"))
        Image.fromarray(img).save(s.path)
        samples.append(s)
    return samples


# --- encoding and matching --------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["paper", "full_range"])
def test_encode_is_the_inverse_of_decode(model):
    cfg = get_config(model)
    anchors = generate_anchors(cfg.anchors)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(anchors), (50,), generator=g)
    xy = torch.rand(50, 2, generator=g)
    wh = torch.rand(50, 2, generator=g) * 0.5 + 0.02
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    kps = torch.rand(50, 6, 2, generator=g)
    raw = encode(boxes, kps, anchors[idx], cfg.box_scale)
    dec_boxes, dec_kps = decode_boxes(raw, anchors[idx], cfg.box_scale)
    assert torch.allclose(dec_boxes, boxes, atol=1e-6)
    assert torch.allclose(dec_kps, kps, atol=1e-6)


def test_matching_gives_every_face_an_anchor_and_respects_ignored_faces():
    cfg = get_config("paper")
    anchors = generate_anchors(cfg.anchors)
    cells = anchor_cells(cfg.anchors)
    assert len(cells) == 896 and float(cells[0]) == 1 / 16 and float(cells[-1]) == 1 / 8
    boxes = np.array([[0.1, 0.1, 0.2, 0.2],      # small: the 16×16 grid
                      [0.4, 0.3, 0.95, 0.85],     # large: the 8×8 grid
                      [0.6, 0.05, 0.63, 0.08]],   # ignored
                     np.float32)
    target = {"boxes": boxes, "ignore": np.array([False, False, True])}
    m = match_anchors(target, anchors, cells)
    for face, grid in ((0, 1 / 16), (1, 1 / 8)):
        pos = (m.labels == 1) & (m.face == face)
        assert pos.any() and bool((cells[pos] == grid).all())
    assert not ((m.labels == 1) & (m.face == 2)).any()
    near_ignored = ((anchors[:, :2] - torch.tensor([0.615, 0.065])).abs() < 0.07).all(1)
    assert bool((m.labels[near_ignored] == -1).all())  # neither face nor background
    assert int((m.labels == 0).sum()) > 700


def test_loss_decreases_on_one_batch_and_focal_runs():
    cfg = get_config("paper")
    torch.manual_seed(0)
    net = create_model("paper", pretrained=False).train()
    target = {"boxes": np.array([[0.3, 0.3, 0.6, 0.6]], np.float32), "keypoints": np.full((1, 6, 2), 0.45, np.float32),
              "keypoint_mask": np.array([[True] * 4 + [False] * 2]), "ignore": np.array([False])}
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    for kind in ("ohem", "focal"):
        crit = DetectionLoss(cfg.anchors, cfg.box_scale, LossConfig(classification=kind))
        loss, parts = crit(*net(x), [target])
        assert math.isfinite(float(loss.detach())) and parts["positives"] >= 1
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        loss, _ = crit(*net(x), [target])
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first


# --- augmentations ----------------------------------------------------------------------------------
def test_augmentations_move_keypoints_with_the_pixels():
    """Six coloured dots at the keypoints: after crop, flip, rotation, each target keypoint lands on its dot
    (a flipped image's keypoint 0, the subject's right eye, is the dot that was keypoint 1)."""
    colors = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0], [255, 255, 0], [255, 0, 255], [0, 255, 255]])
    img = np.full((300, 400, 3), 128, np.uint8)
    kps = np.array([[150, 120], [230, 118], [190, 160], [190, 200], [120, 150], [260, 152]], np.float32)
    for (x, y), c in zip(kps.astype(int), colors):
        img[y - 4:y + 5, x - 4:x + 5] = c
    sample = Sample("x.png", np.array([[110, 80, 270, 240]], np.float32), kps[None])
    cfg = AugmentConfig(zoom_prob=1.0, flip_prob=0.5, rotate_prob=1.0, max_rotation=45, color_prob=0.0, scale_jitter=0.3)
    flips = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        tensor, target, region = make_example(img, sample, 128, cfg, rng, face_range=(0.3, 0.7))
        pixels = np.rint((tensor + 1) * 127.5).transpose(1, 2, 0)
        flipped = bool(np.linalg.norm(pixels[tuple(np.rint(target.keypoints[0, 0, ::-1] * 128).astype(int))]
                                      - colors[1]) < 60)
        flips += flipped
        for k in range(6):
            x, y = target.keypoints[0, k] * 128
            if not (2 <= x < 126 and 2 <= y < 126):
                continue
            source = FLIP_KEYPOINTS[k] if flipped else k
            got = pixels[int(round(y)), int(round(x))]
            assert np.linalg.norm(got - colors[source]) < 60, (seed, k, got)
        w, h = target.boxes[0, 2:] - target.boxes[0, :2]
        assert 0.28 * 0.9 < math.sqrt(w * h) < 0.72 * 1.3  # the zoom aims at face_range
    assert 0 < flips < 12


def test_whole_image_letterbox_without_augmentation_is_the_detectors_input():
    img = np.asarray(Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB"))
    s = Sample("g.jpg", np.array([[170, 150, 360, 340]], np.float32))
    tensor, target, region = make_example(img, s, 128, AugmentConfig.off(), np.random.default_rng(0))
    det = FaceDetector("short_range", backend="torch")
    batch, boxes = det.preprocess([img])
    assert np.array_equal(tensor, batch[0].numpy())
    back = region.to_image(target.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
    assert np.allclose(back, s.boxes, atol=1e-3)


# --- formats ----------------------------------------------------------------------------------------
def test_annotation_formats_are_detected_and_read(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    wider = tmp_path / "wider.txt"
    wider.write_text("0--Parade/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n5 5 8 8 0 0 0 1 0 0\n1--Handshaking/b.jpg\n0\n"
                     "0 0 0 0 0 0 0 0 0 0\n")
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40],
                         "keypoints": [15, 25, 2, 30, 25, 2, 22, 35, 2, 22, 45, 1, 0, 0, 0, 0, 0, 0]},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 5, 10, 10], "iscrowd": 1}],
        "categories": [{"id": 1, "name": "face"}]}))
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(json.dumps({"path": "a.jpg", "width": 100, "height": 80, "model": "full_range", "faces": [
        {"score": 0.9, "box": [10, 20, 40, 60], "keypoints": [[15, 25]] * 6},
        {"score": 0.4, "box": [50, 5, 60, 15], "keypoints": [[55, 10]] * 6}], "error": None}) + "\n"
        + json.dumps({"path": "bad.jpg", "faces": [], "error": "cannot read"}) + "\n")
    assert [detect_format(p) for p in (wider, coco, jsonl)] == ["wider_txt", "coco", "jsonl"]

    w = load_annotations(wider, tmp_path / "imgs")
    assert [s.event for s in w] == ["0--Parade", "1--Handshaking"] and [len(s) for s in w] == [2, 0]
    assert w[0].boxes[0].tolist() == [10, 20, 40, 60] and w[0].ignore.tolist() == [False, True]
    assert w[0].path == str(tmp_path / "imgs" / "0--Parade" / "a.jpg")

    c = load_annotations(coco)
    assert c[0].ignore.tolist() == [False, True] and c[0].size == (100, 80)
    assert c[0].keypoint_mask[0].tolist() == [True, True, True, True, False, False]
    assert not c[0].keypoint_mask[1].any()

    j = load_annotations(jsonl)
    assert len(j) == 1 and j[0].ignore.tolist() == [False, True]  # below full_range's 0.6: ignored, kept
    assert j[0].keypoint_mask.all()
    out = write_jsonl(j, tmp_path / "round.jsonl")
    again = load_annotations(out)
    assert np.allclose(again[0].boxes, j[0].boxes) and again[0].ignore.tolist() == [False, True]


def test_wider_val_dev_annotations_and_event_split():
    samples = load_annotations(shared("wider_val_dev", "annotations.json"))
    assert detect_format(shared("wider_val_dev", "annotations.json")) == "wider_dev_json"
    assert len(samples) == 135 and sum(len(s) for s in samples) == 3733
    assert sum(int(s.valid("easy").sum()) for s in samples) <= 398
    train, held = split_by_event(samples)
    assert {s.event for s in held} == {"2--Demonstration", "6--Funeral"}
    assert not {s.event for s in train} & {s.event for s in held} and len(train) + len(held) == 135


# --- AP ---------------------------------------------------------------------------------------------
def test_average_precision_by_hand():
    """Training's AP is blazeface.eval's WIDER protocol (the same numbers as `blazeface eval`)."""
    s = Sample("a", np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
               np.zeros((3, 6, 2)), ignore=np.array([False, False, True]))
    kp = np.zeros((3, 6, 2))
    ap = lambda det: evaluate_detections([det], [s]).ap  # noqa: E731
    perfect = (s.boxes[:2], np.array([0.9, 0.8]), kp[:2])
    assert ap(perfect) == 1.0
    fp_first = (np.array([[100, 100, 110, 110], [0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0.95, 0.9, 0.8]), kp)
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the envelope makes it 2/3 at both recalls
    assert abs(ap(fp_first) - 2 / 3) < 1e-9
    on_ignored = (s.boxes[[2, 0]], np.array([0.99, 0.5]), kp[:2])  # the ignored face neither helps nor hurts
    assert ap(on_ignored) == 0.5
    duplicate = (s.boxes[[0, 0, 1]], np.array([0.9, 0.85, 0.8]), kp)  # a second hit on a found face is false
    assert abs(ap(duplicate) - (0.5 + 0.5 * 2 / 3)) < 1e-9
    report = evaluate_detections([perfect], [s])
    assert report.ap == 1.0 and report.faces == 2 and report.keypoint_error == 0.0


# --- the trainer ------------------------------------------------------------------------------------
def test_paper_model_from_scratch_reaches_ap_095_on_8_images(tmp_path):
    samples = _eight_images(tmp_path)
    assert len(samples) == 8 and sum(len(s) for s in samples) == 12
    config = TrainConfig(model="paper", init="scratch", epochs=24, batch_size=4, repeats=4, lr=5e-3, warmup_steps=10,
                         seed=0, device="cpu", threads=1, cache_images=True, progress=False, val_every=24,
                         augment=AugmentConfig(zoom_prob=0.0, scale_jitter=0.0, rotate_prob=0.0, color_prob=0.0))
    out = tmp_path / "run"
    trainer = Trainer(config, samples, samples, out, log=io.StringIO())
    history = trainer.fit()
    assert len(history) == 24 and history[-1]["loss"] < history[0]["loss"] / 3
    final = history[-1]["val_ap"]
    assert final >= 0.95, final
    # the checkpoint is an ordinary weights file: FaceDetector and `blazeface detect --weights` load it
    det = FaceDetector("paper", weights=out / "best.safetensors", backend="torch", min_score=0.05)
    from blazeface.train import evaluate

    assert evaluate(det, samples).ap >= 0.95
    buf = io.StringIO()
    assert main(["detect", samples[2].path, "--model", "paper", "--weights", str(out / "last.safetensors"),
                 "--quiet"], stdout=buf) == 0
    faces = json.loads(buf.getvalue())["faces"]
    assert len(faces) >= 1 and len(faces[0]["keypoints"]) == 6
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 24 and float(rows[-1]["val_ap"]) >= 0.95
    for png in ("losses.png", "val_ap.png"):
        assert Image.open(out / png).size == (720, 440)


def test_resume_continues_the_run_and_the_cli_trains(tmp_path):
    img, labels = one_image_dataset(tmp_path, "pillow_hopper.png", [39, 32, 87, 80])
    args = ["train", "--model", "paper", "--init", "scratch", "--data", str(labels), "--images", str(img),
            "--batch-size", "2", "--repeats", "2", "--threads", "1", "--quiet", "--out", str(tmp_path / "run"),
            "--val-data", str(labels), "--val-images", str(img)]
    buf = io.StringIO()
    assert main(args + ["--epochs", "1"], stdout=buf) == 0
    assert json.loads(buf.getvalue())["epochs"] == 1
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
    assert ckpt["step"] == 1 and len(ckpt["history"]) == 1
    buf = io.StringIO()
    assert main(args + ["--epochs", "2", "--resume"], stdout=buf) == 0
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 and [h["epoch"] for h in ckpt["history"]] == [1, 2]
    assert len(list(csv.DictReader(open(tmp_path / "run" / "log.csv")))) == 2
    assert "val_ap" in ckpt["history"][-1]
    assert main(["train", "--model", "paper", "--init", "pretrained", "--data", str(labels), "--epochs", "1",
                 "--quiet", "--out", str(tmp_path / "bad")], stdout=io.StringIO()) == 1  # paper ships no weights


def test_fine_tuning_a_mediapipe_model_starts_from_its_weights(tmp_path):
    s = Sample(str(EXAMPLES / "astronaut.png"), np.array([[178, 83, 273, 178]], np.float32))
    config = TrainConfig(model="full_range", init="pretrained", epochs=1, batch_size=2, repeats=2, lr=1e-5,
                         device="cpu", threads=1, progress=False)
    trainer = Trainer(config, [s], None, tmp_path, log=io.StringIO())
    shipped = create_model("full_range")
    assert all(torch.equal(a, b) for a, b in zip(trainer.net.state_dict().values(), shipped.state_dict().values()))
    trainer.fit()
    det = FaceDetector("full_range", weights=tmp_path / "last.safetensors", backend="torch")
    assert len(det(str(EXAMPLES / "astronaut.png"))) == 1


def test_pseudo_labels_from_a_teacher(tmp_path):
    paths = [EXAMPLES / "astronaut.png", EXAMPLES / "grace_hopper.jpg"]
    labels = pseudo_label(paths, "full_range", tiles=2)
    teacher = FaceDetector("full_range", backend="torch")
    for path, s in zip(paths, labels):
        ref = teacher(str(path))
        kept = s.boxes[~s.ignore]
        assert len(kept) == len(ref) == 1 and s.keypoint_mask.all()
        assert np.abs(kept - ref.xyxy).max() < 0.1 * (ref.xyxy[0, 2] - ref.xyxy[0, 0])
    back = load_annotations(write_jsonl(labels, tmp_path / "pl.jsonl"))
    assert [len(s) for s in back] == [len(s) for s in labels] and back[0].scores is not None


# --- fine-tuning tools ------------------------------------------------------------------------------
def test_param_groups_give_the_backbone_its_fraction_of_the_learning_rate(tmp_path):
    from blazeface.train.finetune import backbone_parameters, head_parameters

    s = Sample(str(EXAMPLES / "astronaut.png"), np.array([[178, 83, 273, 178]], np.float32))
    config = TrainConfig.fine_tune("full_range", backbone_lr=0.1, lr=1e-4, epochs=1, device="cpu", progress=False)
    trainer = Trainer(config, [s], None, tmp_path, log=io.StringIO())
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["backbone"]["initial_lr"] == pytest.approx(1e-5) and groups["heads"]["initial_lr"] == pytest.approx(1e-4)
    heads = {id(p) for p in head_parameters(trainer.net)}
    assert heads == {id(p) for p in groups["heads"]["params"]} and len(heads) == 4  # two 1×1 convs, weight + bias
    assert {id(p) for p in backbone_parameters(trainer.net)} == {id(p) for p in groups["backbone"]["params"]}
    assert len(heads) + len(groups["backbone"]["params"]) == len(list(trainer.net.parameters()))


def test_l2sp_penalty_is_zero_at_the_start_and_grows_with_the_distance():
    from blazeface.train.finetune import l2sp_penalty, start_weights

    net = torch.nn.Linear(3, 2)
    start = start_weights(net)
    assert float(l2sp_penalty(net, start)) == 0.0
    with torch.no_grad():
        net.weight[0, 0] += 0.5
        net.bias[1] -= 2.0
    assert float(l2sp_penalty(net, start)) == pytest.approx(0.25 + 4.0)
    net.bias.requires_grad_(False)  # frozen weights are not penalized
    assert float(l2sp_penalty(net, start)) == pytest.approx(0.25)
    net.bias.requires_grad_(True)
    penalty = l2sp_penalty(net, start)
    penalty.backward()  # its gradient pulls back toward the start: 2 (w − w₀)
    assert float(net.weight.grad[0, 0]) == pytest.approx(1.0) and float(net.bias.grad[1]) == pytest.approx(-4.0)


def test_weight_ema_by_hand():
    from blazeface.train.finetune import WeightEMA

    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(0.0)
    ema = WeightEMA(net, 0.9)
    for w in (3.0, 5.0):
        with torch.no_grad():
            net.weight.fill_(w)
        ema.update(net)
    # 0.9 · (0.9 · 1 + 0.1 · 3) + 0.1 · 5 = 1.58; the bias stays at 0
    assert float(ema.state_dict()["weight"]) == pytest.approx(1.58) and float(ema.state_dict()["bias"]) == 0.0
    assert float(net.weight) == 5.0  # the network itself is untouched
    with pytest.raises(ValueError):
        WeightEMA(net, 1.0)


def test_ignored_score_drift_is_the_bernoulli_kl_and_only_counts_masked_anchors():
    from blazeface.train.loss import ignored_score_drift

    start = torch.tensor([[0.0, 2.0, -1.0]])
    logits = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    kl = ignored_score_drift(logits, start, mask)
    p, q = 0.5, 1 / (1 + math.exp(-1.0))  # anchor 0: start 0.5, now σ(1); anchor 1 unchanged; anchor 2 not masked
    assert float(kl) == pytest.approx(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)), rel=1e-5)
    kl.backward()
    assert torch.allclose(logits.grad, torch.tensor([[q - p, 0.0, 0.0]]), atol=1e-6)  # σ(logit) − σ(start)
    assert float(ignored_score_drift(start, start, torch.ones_like(mask))) == pytest.approx(0.0, abs=1e-6)


def test_keep_weight_compares_with_the_starting_network_even_after_the_heads_moved(tmp_path):
    s = Sample(str(EXAMPLES / "astronaut.png"), np.array([[178, 83, 273, 178]], np.float32))
    config = TrainConfig.fine_tune("full_range", epochs=1, repeats=4, batch_size=2, device="cpu", threads=1,
                                   progress=False)
    assert config.loss.keep_weight > 0  # part of the recipe
    trainer = Trainer(config, [s], None, tmp_path, log=io.StringIO())
    history = trainer.fit()
    assert history[-1]["keep"] > 0  # the heads moved, so the ignored anchors' scores drifted a little
    x = torch.rand(1, 3, 192, 192) * 2 - 1
    shipped = create_model("full_range").eval()
    with torch.no_grad():
        want = shipped(x)[1]
        feats = trainer.net.features(x)
        assert not torch.allclose(trainer.net.heads(feats)[1], want, atol=1e-4)  # trained heads differ
        assert torch.allclose(trainer.start_logits(x, feats, frozen=True), want, atol=1e-5)  # frozen-backbone path
        assert torch.allclose(trainer.start_logits(x, feats, frozen=False), want, atol=1e-5)


def test_fine_tune_recipe_saves_ema_weights_freezes_the_backbone_and_resumes(tmp_path):
    s = Sample(str(EXAMPLES / "astronaut.png"), np.array([[178, 83, 273, 178]], np.float32))
    recipe = TrainConfig.fine_tune("full_range")
    assert recipe.backbone_lr == 0 and recipe.l2sp > 0 and recipe.ema_decay > 0 and recipe.match.neg_iou < 0.25
    kw = dict(batch_size=2, repeats=4, backbone_lr=0.1, freeze_backbone_epochs=1, device="cpu", threads=1,
              progress=False)
    trainer = Trainer(TrainConfig.fine_tune("full_range", epochs=1, **kw), [s], None, tmp_path, log=io.StringIO())
    shipped = create_model("full_range").state_dict()
    history = trainer.fit()
    raw = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    assert torch.equal(raw["stem.1.weight"], shipped["stem.1.weight"])  # frozen in the first epoch
    head = "classifiers.0.conv.weight"
    assert not torch.equal(raw[head], shipped[head]) and history[-1]["l2sp"] > 0
    from blazeface.registry import load_weights

    saved = load_weights(create_model("full_range", pretrained=False), tmp_path / "last.safetensors").state_dict()
    assert torch.allclose(saved[head], trainer.ema.state_dict()[head].float())  # the EMA's, not the raw weights
    assert not torch.allclose(saved[head], raw[head]) and not torch.equal(saved[head], shipped[head])
    again = Trainer(TrainConfig.fine_tune("full_range", epochs=2, **kw), [s], None, tmp_path, log=io.StringIO()).resume()
    assert all(torch.equal(again.net.state_dict()[k], v) for k, v in raw.items())
    assert all(torch.equal(again.ema.state_dict()[k], v) for k, v in trainer.ema.state_dict().items())
    again.fit()
    assert not torch.equal(again.net.state_dict()["stem.1.weight"], shipped["stem.1.weight"])  # learning from epoch 2


def test_cli_fine_tuning_uses_the_recipe_and_its_overrides(tmp_path):
    img, labels = one_image_dataset(tmp_path, "astronaut.png", [178, 83, 273, 178])
    out = tmp_path / "run"
    assert main(["train", "--model", "full_range", "--init", "pretrained", "--data", str(labels), "--images", str(img),
                 "--epochs", "1", "--repeats", "2", "--batch-size", "2", "--ema-decay", "0.9", "--threads", "1",
                 "--device", "cpu", "--quiet", "--out", str(out)], stdout=io.StringIO()) == 0
    config = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    recipe = TrainConfig.fine_tune("full_range")
    assert config.ema_decay == 0.9 and config.epochs == 1 and config.repeats == 2  # given on the command line
    assert (config.lr, config.backbone_lr, config.l2sp, config.weight_decay, config.min_face, config.match,
            config.loss.keep_weight) == (recipe.lr, recipe.backbone_lr, recipe.l2sp, recipe.weight_decay,
                                         recipe.min_face, recipe.match, recipe.loss.keep_weight)
    assert TrainConfig(model="full_range").backbone_lr == 1.0  # scratch training is unchanged
    assert TrainConfig(model="full_range").loss.keep_weight == 0
