"""Validation through tiled inference (``TrainConfig.val_tiling``), as the distillation benchmark evaluates."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image

from blazeface.cli import main
from blazeface.train import TrainConfig, Trainer
from blazeface.train.synthetic import Paste, background, compose, samples_from_mediapipe_json

from .conftest import EXAMPLES, one_image_dataset, shared


def test_validation_with_tiling_finds_small_faces_the_letterbox_misses(tmp_path):
    ref = json.loads(shared("fixtures", "mediapipe_0.10.14.json").read_text())
    src = samples_from_mediapipe_json(ref, str(EXAMPLES), "short_range")
    sources = [(np.asarray(Image.open(s.path).convert("RGB")), s) for s in src]
    # 34-pixel faces on a 1024×768 canvas: 3% of the letterbox, below full range's smallest (~7%)
    pastes = [Paste(0, 0, 34, 300, 250), Paste(2, 0, 34, 700, 500)]
    img, sample = compose(background(1024, 768, 0), sources, pastes, str(tmp_path / "small_faces.png"))
    Image.fromarray(img).save(sample.path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aps = {}
        for tiling in ("off", "auto"):
            config = TrainConfig(model="full_range", init="pretrained", epochs=0, device="cpu", progress=False,
                                 val_tiling=tiling)
            trainer = Trainer(config, [sample], [sample], tmp_path / tiling, log=io.StringIO())
            aps[tiling] = trainer.validate().ap
    finally:
        torch.set_num_threads(threads)
    assert aps["off"] < 0.5 and aps["auto"] > 0.9, aps
    assert TrainConfig.from_dict(config.to_dict()).val_tiling == "auto"


def test_cli_passes_zoom_prob_and_val_tiling(tmp_path):
    img, labels = one_image_dataset(tmp_path, "pillow_hopper.png", [39, 32, 87, 80])
    args = ["train", "--model", "paper", "--data", str(labels), "--images", str(img), "--val-data", str(labels),
            "--val-images", str(img), "--epochs", "1", "--batch-size", "2", "--repeats", "2", "--threads", "1",
            "--quiet", "--zoom-prob", "0.9", "--val-tiling", "auto", "--out", str(tmp_path / "run")]
    assert main(args, stdout=io.StringIO()) == 0
    config = TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert config.augment.zoom_prob == 0.9 and config.val_tiling == "auto"
